"""Poolingformer's two-level attention: a sliding window, then pooled keys.

Zhang et al., "Poolingformer: Long Document Modeling with Pooling Attention",
ICML 2021 (arXiv 2105.04371). No official code was found and the method
section was not available, so this is a reconstruction from the abstract
(two levels: a small sliding window, then a larger window whose keys and
values are pooled) and secondary summaries of the paper:

  Y = MHA over keys j with |i - j| <= window1 // 2          (level 1)
  keys/values of level 2 = Y W_k2, Y W_v2, pooled over non-overlapping
    windows of `pool_size` tokens (kernel = stride), padding excluded
  Z_i = MHA of Y_i W_q2 over the pooled windows p whose centre
        p * pool_size + pool_size // 2 is within window2 // 2 of i   (level 2)
  out = Y + Z W_o2

Reconstructed (UNCONFIRMED), and why:
  * level 2 reads level 1's output, with a residual between the levels (the
    secondary sources; their "Mix" ablation, level 2 on the input, is worse);
  * pooling on a fixed grid, kernel = stride, so that every query shares the
    same pooled keys and the cost stays linear (per-query pooling windows
    would not share them);
  * `pooling='mean'` (mask-aware mean) by default; `'ldconv'` is the paper's
    reported best, "lightweight dynamic convolution" pooling
    sum_i delta_i v_i; which token predicts delta is not known, here
    delta = softmax over the window's real tokens of Linear(D, H * pool_size)
    applied to the window's masked mean of Y (a padding token would let its
    content in);
  * projections Linear(D, D) with bias, the suite's default initialisation,
    no normalisation between the levels.

Both levels are banded: the queries are cut into blocks, each attending only
to its own and the two neighbouring key blocks under a static pattern, so
memory is O(L * (window1 + window2 / pool_size)), never L x L. Any length
works: blocks are padded internally and masked. Padding keys are excluded at
both levels and pooled windows with no real token are masked, so
`masks_padding` holds.

Hyperparameters (`config.model.poolingformer`):
  window1: 128, window2: 512 (the paper's windows, from secondary sources).
  pool_size: 4 (kernel = stride; UNCONFIRMED, the specification's proposal
    for LRA lengths).
  pooling: 'mean' or 'ldconv' (see above).
Heads and attention dropout are the model's `num_heads`, `attention_dropout`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra_ponet.errors import UserError

POOLINGS = ('mean', 'ldconv')


class Poolingformer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, linear in L."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               window1: int = 128, window2: int = 512, pool_size: int = 4,
               pooling: str = 'mean', attention_dropout: float = 0.1,
               dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
    if pooling not in POOLINGS:
      raise UserError(f'unknown poolingformer.pooling {pooling!r}; use one '
                      f'of {", ".join(POOLINGS)}')
    if pool_size < 1 or window1 < 2 or window2 // 2 < pool_size:
      raise UserError(
          f'poolingformer needs pool_size >= 1, window1 >= 2 and window2 >= '
          f'2 * pool_size (got {pool_size}, {window1}, {window2}), so that '
          'every token sees a real key; fix --config.model.poolingformer')
    self.num_heads = num_heads
    self.half1 = window1 // 2
    self.half2 = window2 // 2
    self.pool_size = pool_size
    self.pooling = pooling

    def linear(out=dim):
      return nnx.Linear(dim, out, dtype=dtype, rngs=rngs)

    self.query1, self.key1, self.value1, self.out1 = (linear() for _ in '1234')
    self.query2, self.key2, self.value2, self.out2 = (linear() for _ in '1234')
    if pooling == 'ldconv':
      self.pool_weights = linear(num_heads * pool_size)
    self.attention_dropout = nnx.Dropout(attention_dropout, rngs=rngs)

  @classmethod
  def default_config(cls, config):
    del config  # The same windows at every length.
    return dict(window1=128, window2=512, pool_size=4, pooling='mean')

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    settings = model_config.poolingformer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               window1=settings.window1, window2=settings.window2,
               pool_size=settings.pool_size, pooling=settings.pooling,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    level1_BxLxD = self._level1(x_BxLxD, mask_BxL)
    return level1_BxLxD + self.out2(self._level2(level1_BxLxD, mask_BxL))

  def _heads(self, x_BxLxD):
    batch, length, dim = x_BxLxD.shape
    return x_BxLxD.reshape(batch, length, self.num_heads,
                           dim // self.num_heads)

  def _level1(self, x_BxLxD, mask_BxL):
    length = x_BxLxD.shape[1]
    block = max(1, min(self.half1, length))
    offset_QxK = np.arange(block)[:, None] + block - np.arange(3 * block)
    mixed_BxLxHxK = self._banded(
        self._heads(self.query1(x_BxLxD)), self._heads(self.key1(x_BxLxD)),
        self._heads(self.value1(x_BxLxD)), mask_BxL, block, block,
        np.abs(offset_QxK) <= self.half1)
    return self.out1(mixed_BxLxHxK.reshape(x_BxLxD.shape))

  def _level2(self, y_BxLxD, mask_BxL):
    """Attention of every token over the pooled windows near it."""
    batch, length, dim = y_BxLxD.shape
    size, centre = self.pool_size, self.pool_size // 2
    block = min(math.ceil((self.half2 + centre) / size),
                math.ceil(length / size))
    pad = -length % (block * size)
    padded_BxLxD = jnp.pad(y_BxLxD, ((0, 0), (0, pad), (0, 0)))
    mask_BxPxS = jnp.pad(mask_BxL, ((0, 0), (0, pad))).reshape(
        batch, -1, size)
    weights_BxPxHxS = self._pool_weights(padded_BxLxD, mask_BxPxS)

    def pool(x_BxLxD):
      x_BxPxSxHxK = self._heads(x_BxLxD).reshape(
          batch, -1, size, self.num_heads, dim // self.num_heads)
      return jnp.einsum('bphs,bpshk->bphk', weights_BxPxHxS, x_BxPxSxHxK)

    # A query at i = n * Q + a sees pooled window p = (n - 1) * block + c
    # when |p * size + centre - i| <= half2; that depends on (a, c) only.
    distance_QxK = (np.arange(block * size)[:, None] + block * size
                    - np.arange(3 * block)[None] * size - centre)
    mixed_BxLxHxK = self._banded(
        self._heads(self.query2(y_BxLxD)), pool(self.key2(padded_BxLxD)),
        pool(self.value2(padded_BxLxD)), mask_BxPxS.any(axis=-1),
        block * size, block, np.abs(distance_QxK) <= self.half2)
    return mixed_BxLxHxK.reshape(y_BxLxD.shape)

  def _pool_weights(self, x_BxLxD, mask_BxPxS):
    """Per pooled window, head and member: weights summing to 1 over reals."""
    batch, num_pooled, size = mask_BxPxS.shape
    real_BxPx1xS = mask_BxPxS[:, :, None, :]
    if self.pooling == 'mean':
      logits_BxPxHxS = jnp.zeros((batch, num_pooled, self.num_heads, size))
    else:
      windows_BxPxSxD = x_BxLxD.reshape(batch, num_pooled, size, -1)
      count_BxPx1 = jnp.maximum(mask_BxPxS.sum(-1, keepdims=True), 1)
      mean_BxPxD = jnp.where(mask_BxPxS[..., None], windows_BxPxSxD,
                             0).sum(2) / count_BxPx1
      logits_BxPxHxS = self.pool_weights(mean_BxPxD).reshape(
          batch, num_pooled, self.num_heads, size)
    logits_BxPxHxS = jnp.where(real_BxPx1xS, logits_BxPxHxS, -1e9)
    weights_BxPxHxS = jax.nn.softmax(logits_BxPxHxS, axis=-1)
    # All-padding windows pool to zero (they are masked as keys anyway).
    return jnp.where(real_BxPx1xS, weights_BxPxHxS, 0).astype(x_BxLxD.dtype)

  def _banded(self, query_BxLxHxK, key_BxMxHxK, value_BxMxHxK, key_mask_BxM,
              query_block, key_block, allowed_Qx3K):
    """Query block n attends key blocks n - 1, n, n + 1 where allowed."""
    batch, length, heads, head_dim = query_BxLxHxK.shape
    num_blocks = math.ceil(length / query_block)

    def blocks(x, size):
      pad = num_blocks * size - x.shape[1]
      x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
      return x.reshape((batch, num_blocks, size) + x.shape[2:])

    def with_neighbours(x_BxNxK):
      padded = jnp.pad(x_BxNxK, [(0, 0), (1, 1)] + [(0, 0)] * (
          x_BxNxK.ndim - 2))
      return jnp.concatenate(
          [padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=2)

    query_BxNxQxHxK = blocks(query_BxLxHxK, query_block)
    key_BxNx3KxHxK = with_neighbours(blocks(key_BxMxHxK, key_block))
    value_BxNx3KxHxK = with_neighbours(blocks(value_BxMxHxK, key_block))
    real_BxNx3K = with_neighbours(blocks(key_mask_BxM, key_block))
    logits_BxNxHxQx3K = jnp.einsum(
        'bnqhk,bnvhk->bnhqv', query_BxNxQxHxK,
        key_BxNx3KxHxK) / math.sqrt(head_dim)
    allowed_BxNx1xQx3K = (real_BxNx3K[:, :, None, None, :]
                          & allowed_Qx3K[None, None, None])
    logits_BxNxHxQx3K = jnp.where(allowed_BxNx1xQx3K, logits_BxNxHxQx3K,
                                  jnp.finfo(logits_BxNxHxQx3K.dtype).min)
    probs_BxNxHxQx3K = self.attention_dropout(
        jax.nn.softmax(logits_BxNxHxQx3K, axis=-1))
    mixed_BxNxQxHxK = jnp.einsum('bnhqv,bnvhk->bnqhk', probs_BxNxHxQx3K,
                                 value_BxNx3KxHxK)
    return mixed_BxNxQxHxK.reshape(batch, -1, heads, head_dim)[:, :length]

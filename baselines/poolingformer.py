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
  * projections Linear(D, D) with bias, initialised by the model,
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

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

POOLINGS = ('mean', 'ldconv')


class Poolingformer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, linear in L."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               window1: int = 128, window2: int = 512, pool_size: int = 4,
               pooling: str = 'mean', attention_dropout: float = 0.1,
               dtype=jnp.float32):
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

    def projections():
      return attention.attention_projections(dim, rngs=rngs, dtype=dtype)

    self.query1, self.key1, self.value1, self.out1 = projections()
    self.query2, self.key2, self.value2, self.out2 = projections()
    if pooling == 'ldconv':
      self.pool_weights = nnx.Linear(dim, num_heads * pool_size, dtype=dtype,
                                     rngs=rngs)
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)

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

  def _heads(self, x_xD):
    return attention.split_heads(x_xD, self.num_heads)

  def _level1(self, x_BxLxD, mask_BxL):
    block = max(1, min(self.half1, x_BxLxD.shape[1]))
    near_QxS = np.abs(attention.block_offsets(block, block)) <= self.half1
    mixed_BxLxHxK = attention.banded_attention(
        self._heads(self.query1(x_BxLxD)), self._heads(self.key1(x_BxLxD)),
        self._heads(self.value1(x_BxLxD)), mask_BxL, near_QxS,
        self.attention_dropout)
    return self.out1(attention.merge_heads(mixed_BxLxHxK))

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
      x_BxPxSxHxK = self._heads(x_BxLxD.reshape(batch, -1, size, dim))
      return jnp.einsum('bphs,bpshk->bphk', weights_BxPxHxS, x_BxPxSxHxK)

    # A query at i sees pooled window p when |p * size + centre - i| <=
    # half2: within a block and its neighbours, a band like level 1's.
    offset_QxS = attention.block_offsets(block * size, block,
                                         key_stride=size)
    mixed_BxLxHxK = attention.banded_attention(
        self._heads(self.query2(y_BxLxD)), pool(self.key2(padded_BxLxD)),
        pool(self.value2(padded_BxLxD)), mask_BxPxS.any(axis=-1),
        np.abs(offset_QxS + centre) <= self.half2, self.attention_dropout)
    return attention.merge_heads(mixed_BxLxHxK)

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

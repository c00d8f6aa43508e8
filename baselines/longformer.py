"""Longformer attention (Beltagy et al., 2020, arXiv 2004.05150), banded.

The maths of the Long Range Arena JAX Longformer
(google-research/long-range-arena @ cd31e5c,
`lra_benchmarks/models/longformer/longformer_attention.py`), computed with
memory linear in the length instead of that code's dense L x L mask:

* Sliding window of `window_size` keys (L42-66): query i attends to keys
  j in [i - (w - w//2) + 1, i + w//2], i.e. 256 to the left including itself
  and 256 to the right for w = 512.
* Positions `0 .. global_tokens-1` are global (the official `global_mask`):
  every query also attends to them, and their own rows attend to every key
  through separate global query/key/value projections (L223-229, L273).
* Padding keys are masked at -1e10 (L96-128).
* Projections without bias, Xavier-uniform kernels (kept with
  `model.linear_init=flax`: the default `pytorch` (ponet preset) and `lra`
  redraw every `nnx.Linear`, models.LINEAR_INITS), attention dropout
  `model.attention_dropout` (not broadcast over the batch), as
  `longformer.py` L63-78 builds it.

The sequence is cut into blocks of b = w//2 queries; each block attends to
the keys of itself and of its neighbouring blocks (one on each side for even
w), masked down to the exact window, so memory is O(L * 3b) per head.

Hyperparameters (`config.model.longformer`):
* `window_size` = 512: `sliding_window_size` default of `longformer.py` L29
  and `longformer_attention.py` L153; no LRA task config changes it.
* `global_tokens` = 0: `global_mask=None` in every LRA run, so no position is
  global. With `model.pooling='cls'` set it to 1 to make the CLS token global.

Differences from the official module: it creates the three global
projections even when no position is global (they then get no gradient);
this one only when `global_tokens > 0`, so the parameter count is smaller by
3 D^2 in the LRA setting. The official code masks padding queries too, making
their rows a uniform average over all L keys; here those rows (which no real
position reads) hold attention over their window instead.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from baselines import projections
from lra_ponet.errors import UserError

_MASKED = -1e10  # The official bias for masked keys (L128).


def window_sides(window_size):
  """(keys to the left including self, keys to the right), as L60-61."""
  right = window_size // 2
  return window_size - right, right


class LongformerAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`: banded window + global attention."""

  masks_padding = True

  def __init__(self, dim, num_heads, *, rngs, window_size=512,
               global_tokens=0, attention_dropout=0.1, dtype=jnp.float32):
    if dim % num_heads:
      raise UserError(f'model.dim {dim} is not divisible by model.num_heads '
                      f'{num_heads}; change one of them')
    if window_size < 1 or global_tokens < 0:
      raise UserError('longformer needs window_size >= 1 and global_tokens '
                      '>= 0; set --config.model.longformer.window_size / '
                      'global_tokens')
    self.num_heads = num_heads
    self.window_size = window_size
    self.global_tokens = global_tokens
    linear = functools.partial(projections.xavier_linear, dim, rngs=rngs,
                               dtype=dtype)
    self.query, self.key, self.value = linear(), linear(), linear()
    if global_tokens:
      self.global_query, self.global_key, self.global_value = (
          linear(), linear(), linear())
    self.out = linear()
    self.attention_dropout = nnx.Dropout(attention_dropout,
                                         broadcast_dims=(), rngs=rngs)

  @classmethod
  def default_config(cls, config):
    del config  # The same window for every task (longformer.py L29).
    return dict(window_size=512, global_tokens=0)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.longformer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               window_size=own.window_size, global_tokens=own.global_tokens,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def _heads(self, projection, x_BxLxD):
    batch, length, dim = x_BxLxD.shape
    return projection(x_BxLxD).reshape(batch, length, self.num_heads,
                                       dim // self.num_heads)

  def _softmax_mix(self, logits, value_index, values):
    probs = self.attention_dropout(jax.nn.softmax(logits, axis=-1))
    return jnp.einsum(value_index, probs, values)

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, dim = x_BxLxD.shape
    if self.global_tokens > length:
      raise UserError(f'longformer.global_tokens {self.global_tokens} exceeds '
                      f'the length {length}; lower it')
    scale = (dim // self.num_heads) ** -0.5
    q_BxLxHxK = self._heads(self.query, x_BxLxD) * scale
    k_BxLxHxK = self._heads(self.key, x_BxLxD)
    v_BxLxHxK = self._heads(self.value, x_BxLxD)
    out_BxLxHxK = self._banded(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxL)
    if self.global_tokens:
      out_BxLxHxK = self._with_global_rows(out_BxLxHxK, x_BxLxD, mask_BxL,
                                           scale)
    return self.out(out_BxLxHxK.reshape(batch, length, dim))

  def _banded(self, q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxL):
    batch, length, heads, head_dim = q_BxLxHxK.shape
    left, right = window_sides(self.window_size)
    block = max(right, 1)
    before, after = -(-(left - 1) // block), -(-right // block)
    num_blocks = -(-length // block)
    tail = num_blocks * block - length
    pad = lambda a, front, back: jnp.pad(
        a, ((0, 0), (front, back)) + ((0, 0),) * (a.ndim - 2))
    q_BxNxCxHxK = pad(q_BxLxHxK, 0, tail).reshape(
        batch, num_blocks, block, heads, head_dim)
    span = (before + 1 + after) * block

    def tiles(a):  # Each block's keys: the blocks before, itself, after.
      a = pad(a, before * block, (after * block) + tail)
      return jnp.concatenate(
          [a[:, s * block:(s + num_blocks) * block].reshape(
              (batch, num_blocks, block) + a.shape[2:])
           for s in range(before + 1 + after)], axis=2)

    k_BxNxSxHxK = tiles(k_BxLxHxK)
    v_BxNxSxHxK = tiles(v_BxLxHxK)
    real_BxNxS = tiles(mask_BxL)
    # Query position and key position inside each tile, as static arrays.
    query_pos_NxC = np.arange(num_blocks * block).reshape(num_blocks, block)
    key_pos_NxS = (query_pos_NxC[:, :1] - before * block) + np.arange(span)
    offset_NxCxS = key_pos_NxS[:, None, :] - query_pos_NxC[:, :, None]
    in_window_NxCxS = (offset_NxCxS > -left) & (offset_NxCxS <= right)
    in_window_NxCxS &= key_pos_NxS[:, None, :] >= self.global_tokens
    allowed_BxNxCxS = in_window_NxCxS[None] & real_BxNxS[:, :, None, :]
    logits_BxHxNxCxS = jnp.einsum('bnchk,bnshk->bhncs', q_BxNxCxHxK,
                                  k_BxNxSxHxK)
    logits_BxHxNxCxS = jnp.where(allowed_BxNxCxS[:, None], logits_BxHxNxCxS,
                                 _MASKED)
    if not self.global_tokens:
      out = self._softmax_mix(logits_BxHxNxCxS, 'bhncs,bnshk->bnchk',
                              v_BxNxSxHxK)
      return out.reshape(batch, -1, heads, head_dim)[:, :length]
    # Every query also attends to the global keys, in their own columns.
    g = self.global_tokens
    logits_BxHxNxCxG = jnp.einsum('bnchk,bghk->bhncg', q_BxNxCxHxK,
                                  k_BxLxHxK[:, :g])
    logits_BxHxNxCxG = jnp.where(mask_BxL[:, None, None, None, :g],
                                 logits_BxHxNxCxG, _MASKED)
    values_BxNx_xHxK = jnp.concatenate(
        [jnp.broadcast_to(v_BxLxHxK[:, None, :g],
                          (batch, num_blocks, g, heads, head_dim)),
         v_BxNxSxHxK], axis=2)
    out = self._softmax_mix(
        jnp.concatenate([logits_BxHxNxCxG, logits_BxHxNxCxS], axis=-1),
        'bhncs,bnshk->bnchk', values_BxNx_xHxK)
    return out.reshape(batch, -1, heads, head_dim)[:, :length]

  def _with_global_rows(self, out_BxLxHxK, x_BxLxD, mask_BxL, scale):
    """Rows of global positions: all keys, through the global projections."""
    g = self.global_tokens
    q_BxGxHxK = self._heads(self.global_query, x_BxLxD[:, :g]) * scale
    k_BxLxHxK = self._heads(self.global_key, x_BxLxD)
    v_BxLxHxK = self._heads(self.global_value, x_BxLxD)
    logits_BxHxGxL = jnp.einsum('bghk,blhk->bhgl', q_BxGxHxK, k_BxLxHxK)
    logits_BxHxGxL = jnp.where(mask_BxL[:, None, None, :], logits_BxHxGxL,
                               _MASKED)
    global_BxGxHxK = self._softmax_mix(logits_BxHxGxL, 'bhgl,blhk->bghk',
                                       v_BxLxHxK)
    return out_BxLxHxK.at[:, :g].set(global_BxGxHxK)

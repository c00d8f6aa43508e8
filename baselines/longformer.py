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
* Padding keys are masked (L96-128; there at -1e10, here at the dtype's
  lowest value, which gives them the same zero weight).
* Projections without bias and attention dropout `model.attention_dropout`
  (not broadcast over the batch), as `longformer.py` L63-78 builds them;
  the model initialises the projections (`model.linear_init`,
  models.reinit_linears), not Xavier-uniform as there.

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

import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError


def window_sides(window_size):
  """(keys to the left including self, keys to the right), as L60-61."""
  right = window_size // 2
  return window_size - right, right


class LongformerAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`: banded window + global attention."""

  masks_padding = True

  def __init__(self, dim, num_heads, *, rngs, window_size=512,
               global_tokens=0, attention_dropout=0.1, dtype=jnp.float32):
    if window_size < 1 or global_tokens < 0:
      raise UserError('longformer needs window_size >= 1 and global_tokens '
                      '>= 0; set --config.model.longformer.window_size / '
                      'global_tokens')
    self.num_heads = num_heads
    self.window_size = window_size
    self.global_tokens = global_tokens
    linear = functools.partial(nnx.Linear, dim, dim, use_bias=False,
                               dtype=dtype, rngs=rngs)
    self.query, self.key, self.value = linear(), linear(), linear()
    if global_tokens:
      self.global_query, self.global_key, self.global_value = (
          linear(), linear(), linear())
    self.out = linear()
    self.attention_dropout = Dropout(attention_dropout,
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
    return attention.split_heads(projection(x_BxLxD), self.num_heads)

  def __call__(self, x_BxLxD, mask_BxL):
    if self.global_tokens > x_BxLxD.shape[1]:
      raise UserError(f'longformer.global_tokens {self.global_tokens} exceeds '
                      f'the length {x_BxLxD.shape[1]}; lower it')
    out_BxLxHxK = self._banded(self._heads(self.query, x_BxLxD),
                               self._heads(self.key, x_BxLxD),
                               self._heads(self.value, x_BxLxD), mask_BxL)
    if self.global_tokens:
      out_BxLxHxK = self._with_global_rows(out_BxLxHxK, x_BxLxD, mask_BxL)
    return self.out(attention.merge_heads(out_BxLxHxK))

  def _banded(self, q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxL):
    """The window, in blocks of w//2 queries, and the global keys."""
    left, right = window_sides(self.window_size)
    block = max(right, 1)
    before, after = -(-(left - 1) // block), -(-right // block)
    offset_CxS = attention.block_offsets(block, block, before, after)
    return attention.banded_attention(
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxL,
        (offset_CxS > -left) & (offset_CxS <= right), self.attention_dropout,
        before=before, after=after, global_keys=self.global_tokens)

  def _with_global_rows(self, out_BxLxHxK, x_BxLxD, mask_BxL):
    """Rows of global positions: all keys, through the global projections."""
    g = self.global_tokens
    global_BxGxHxK = attention.dense_attention(
        self._heads(self.global_query, x_BxLxD[:, :g]),
        self._heads(self.global_key, x_BxLxD),
        self._heads(self.global_value, x_BxLxD), mask_BxL[:, None],
        self.attention_dropout)
    return out_BxLxHxK.at[:, :g].set(global_BxGxHxK)

"""The PoNet token mixer (Tan et al., ICLR 2022, arXiv 2110.02442).

Pooling at three granularities replaces self-attention: a global summary vector
per head (GA), max-pooling over fixed segments (SMP) and over a local window
(LMP), fused as `(g' + s) * o + l`. Every cost is linear in the length.

The maths follows the official LRA implementation (lxchtan/PoNet,
examples/LRA/code/attention_ponet.py), which produced the paper's tables:
padding is excluded with -10000 fills, the global attention uses the keys as
values, segments are `L // segment_num + 1` long and the local window's edges
see -inf (fewer elements), not zeros.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

# The official code fills padding with this finite value, not -inf; an
# all-padding segment therefore pools to -10000 rather than -inf.
PADDING_FILL = -10000.0


class PoNetMixer(nnx.Module):
  """Pooling token mixer: `mixer(x_BxLxD, mask_BxL) -> BxLxD`.

  `mask_BxL` is True at real tokens. Parameters live in six `nnx.Linear`
  submodules (kernel shaped (in, out)): `query` and `key` feed the global
  aggregation (keys double as values), `gate` is the multiplicative gate of
  the fusion, `segment` and `local` feed the two max-poolings, `out` is the
  output projection.
  """

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, segment_num: int, *,
               rngs: nnx.Rngs, local_window: int = 3,
               dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
    if local_window < 1 or local_window % 2 == 0:
      raise ValueError(f'local_window must be odd and positive, got '
                       f'{local_window}')
    if segment_num < 1:
      raise ValueError(f'segment_num must be positive, got {segment_num}')
    self.num_heads = num_heads
    self.segment_num = segment_num
    self.local_window = local_window
    self.dtype = dtype

    def linear():
      return nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    self.query = linear()
    self.key = linear()
    self.gate = linear()
    self.segment = linear()
    self.local = linear()
    self.out = linear()

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    return cls(model_config.dim, model_config.num_heads,
               model_config.segment_num, rngs=rngs,
               local_window=model_config.local_window,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, dim = x_BxLxD.shape
    head_dim = dim // self.num_heads
    mask_BxLx1 = mask_BxL[:, :, None]

    global_BxD = self._global_aggregation(x_BxLxD, mask_BxL, head_dim)
    segment_BxLxD = self._segment_max(
        jnp.where(mask_BxLx1, self.segment(x_BxLxD), PADDING_FILL))
    local_BxLxD = self._local_max(
        jnp.where(mask_BxLx1, self.local(x_BxLxD), PADDING_FILL))
    # Heads are contiguous channel blocks, so the per-head fusion is the same
    # element-wise expression on the flat D channels.
    fused_BxLxD = ((global_BxD[:, None, :] + segment_BxLxD)
                   * self.gate(x_BxLxD) + local_BxLxD)
    return self.out(jnp.where(mask_BxLx1, fused_BxLxD, 0.0))

  def _global_aggregation(self, x_BxLxD, mask_BxL, head_dim):
    batch, length, dim = x_BxLxD.shape
    split = (batch, length, self.num_heads, head_dim)
    query_BxLxHxK = self.query(x_BxLxD).reshape(split)
    key_BxLxHxK = self.key(x_BxLxD).reshape(split)
    weight_BxL = mask_BxL.astype(query_BxLxHxK.dtype)
    summary_BxHxK = (jnp.einsum('blhk,bl->bhk', query_BxLxHxK, weight_BxL)
                     / weight_BxL.sum(axis=1)[:, None, None])
    logits_BxHxL = jnp.einsum('bhk,blhk->bhl', summary_BxHxK,
                              key_BxLxHxK) / math.sqrt(head_dim)
    logits_BxHxL = jnp.where(mask_BxL[:, None, :], logits_BxHxL, PADDING_FILL)
    probs_BxHxL = jax.nn.softmax(logits_BxHxL, axis=-1)
    return jnp.einsum('bhl,blhk->bhk', probs_BxHxL,
                      key_BxLxHxK).reshape(batch, dim)

  def _segment_max(self, x_BxLxD):
    """Each position gets the channel-wise max of its fixed segment.

    Segments are `L // segment_num + 1` long (the official formula), so the
    last one is short and fewer than segment_num may be non-empty.
    """
    batch, length, dim = x_BxLxD.shape
    segment_len = length // self.segment_num + 1
    num_segments = -(-length // segment_len)
    padded_BxPxD = jnp.pad(
        x_BxLxD, ((0, 0), (0, num_segments * segment_len - length), (0, 0)),
        constant_values=-jnp.inf)
    max_BxSxD = padded_BxPxD.reshape(
        batch, num_segments, segment_len, dim).max(axis=2)
    return jnp.repeat(max_BxSxD, segment_len, axis=1)[:, :length]

  def _local_max(self, x_BxLxD):
    half = self.local_window // 2
    return jax.lax.reduce_window(
        x_BxLxD, -jnp.inf, jax.lax.max,
        window_dimensions=(1, self.local_window, 1),
        window_strides=(1, 1, 1),
        padding=((0, 0), (half, half), (0, 0)))

"""The PoNet token mixer (Tan et al., ICLR 2022, arXiv 2110.02442).

Pooling at three granularities replaces self-attention: a global summary vector
per head (GA), max-pooling over fixed segments (SMP) and over a local window
(LMP), fused as `(g' + s) * o + l`. Every cost is linear in the length.

The maths follows the official LRA implementation (lxchtan/PoNet,
examples/LRA/code/attention_ponet.py), which produced the paper's tables:
padding is excluded with -10000 fills, the global attention uses the keys as
values, segments are `L // segment_num + 1` long and the local window's edges
see -inf (fewer elements), not zeros. The official code runs the six
projections under its float16 autocast and turns autocast off around the
pooling and fusion only (`attention.py` L87-95, L109); here the whole mixer,
projections included, computes in float32 whatever the model's dtype: its
input is cast to float32 and its output back.

The computation is arranged for speed, with the same result up to float
rounding:
- GA never forms the per-token queries and keys. The masked mean of
  `Q = X Wq + bq` is `mean(X) Wq + bq`; the logit of position n is
  `g . K_n = X_n . (Wk g) + g . bk`, one D-vector per head; and since the
  softmax weights sum to one, `sum_n a_n K_n = (sum_n a_n X_n) Wk + bk`.
- On a CPU, a large batch is mixed in chunks of examples (`lax.map`), each
  chunk's intermediates recomputed in the backward pass rather than stored:
  this cut XLA's memory plan of a ListOps training step (batch 32, L=2,048)
  from 1,198 to 1,003 MiB and its CPU time by about a seventh. (XLA's
  cost_analysis counts a loop's body once, so the FLOPs it reports for such
  a step are those of one chunk's mixer, not the batch's.)
- `gate`, `segment` and `local` run as one D x 3D matmul.
- Both max-poolings have hand-written gradients (a masked broadcast of the
  output gradient) instead of autodiff's, and the local window is taken as
  the maximum of shifted copies rather than a `reduce_window`, whose gradient
  (select-and-scatter) is slow. At a tie, every tied position receives the
  gradient (autodiff would split it, the official scatter_max gives it to one
  of them); ties between real positions do not occur with continuous inputs,
  and ties among -10000 fills carry no gradient to anything.
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

# The official code fills padding with this finite value, not -inf; an
# all-padding segment therefore pools to -10000 rather than -inf.
PADDING_FILL = -10000.0


class PoNetMixer(nnx.Module):
  """Pooling token mixer: `mixer(x_BxLxD, mask_BxL) -> BxLxD`.

  `mask_BxL` is True at real tokens. Parameters live in six float32
  `nnx.Linear` submodules (kernel shaped (in, out)): `query` and `key` feed
  the global aggregation (keys double as values), `gate` is the
  multiplicative gate of the fusion, `segment` and `local` feed the two
  max-poolings, `out` is the output projection. The output has the input's
  dtype; inside, everything is float32.

  A row with no real token (an empty document, an all-black image under the
  official pixel quirks) has no masked mean to take. The official code
  divides 0 by 0 there and then overwrites the resulting NaN logits with
  -10000, so its output rows are all padding (the `out` bias) and no
  gradient comes from that row. Here the count in the denominator is at
  least 1: the same outputs and gradients, without a 0 / 0 whose gradient
  would be NaN.
  """

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, segment_num: int, *,
               rngs: nnx.Rngs, local_window: int = 3):
    if local_window < 1 or local_window % 2 == 0:
      raise ValueError(f'local_window must be odd and positive, got '
                       f'{local_window}')
    if segment_num < 1:
      raise ValueError(f'segment_num must be positive, got {segment_num}')
    self.num_heads = num_heads
    self.segment_num = segment_num
    self.local_window = local_window

    def linear():
      return nnx.Linear(dim, dim, dtype=jnp.float32, rngs=rngs)

    self.query = linear()
    self.key = linear()
    self.gate = linear()
    self.segment = linear()
    self.local = linear()
    self.out = linear()

  @classmethod
  def default_config(cls, config):
    """`segment_num` is the task's (each task config sets it); 64 is ListOps'."""
    del config
    return dict(segment_num=64, local_window=3)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.ponet
    return cls(model_config.dim, model_config.num_heads, own.segment_num,
               rngs=rngs, local_window=own.local_window)

  def __call__(self, x_BxLxD, mask_BxL):
    params = {name: (getattr(self, name).kernel[...],
                      getattr(self, name).bias[...]) for name in PROJECTIONS}
    static = (self.num_heads, self.segment_num, self.local_window // 2)
    batch, length, dim = x_BxLxD.shape
    chunk = chunk_size(batch, length)
    if chunk == batch:
      return _mix(params, x_BxLxD, mask_BxL, *static)
    # Chunks of examples one after the other, each recomputed in the
    # backward pass: the step holds one chunk's intermediates rather than
    # the batch's, and on a CPU that is also faster.
    mixed_NxCxLxD = jax.lax.map(
        lambda pair: _mix_recomputed(params, *pair, *static),
        (x_BxLxD.reshape(-1, chunk, length, dim),
         mask_BxL.reshape(-1, chunk, length)))
    return mixed_NxCxLxD.reshape(batch, length, dim)


PROJECTIONS = ('query', 'key', 'gate', 'segment', 'local', 'out')
# On a CPU, a batch of more tokens than this runs the mixer in chunks of
# whole examples of at most this many tokens (fewer where the batch size
# needs it). Other backends, which this was not measured on, mix the whole
# batch at once.
CHUNK_TOKENS = 8192


def chunk_size(batch: int, length: int) -> int:
  """Examples per chunk: the largest divisor of batch within CHUNK_TOKENS."""
  if jax.default_backend() != 'cpu':
    return batch
  most = max(1, CHUNK_TOKENS // length)
  return max(size for size in range(1, min(most, batch) + 1)
             if batch % size == 0)


def _mix(params, x_BxLxD, mask_BxL, num_heads, segment_num, half):
  """The mixer as a pure function of its (kernel, bias) pairs by name."""
  model_dtype = x_BxLxD.dtype
  x_BxLxD = x_BxLxD.astype(jnp.float32)
  mask_BxLx1 = mask_BxL[:, :, None]
  global_BxD = _global_aggregation(params, x_BxLxD, mask_BxL, num_heads)

  names = ('gate', 'segment', 'local')
  kernel_Dx3D = jnp.concatenate([params[name][0] for name in names], axis=1)
  bias_3D = jnp.concatenate([params[name][1] for name in names])
  gate_BxLxD, segment_BxLxD, local_BxLxD = split_channels(
      x_BxLxD @ kernel_Dx3D + bias_3D, 3)
  segment_BxLxD = segment_max(
      jnp.where(mask_BxLx1, segment_BxLxD, PADDING_FILL),
      segment_length(x_BxLxD.shape[1], segment_num))
  local_BxLxD = local_max(
      jnp.where(mask_BxLx1, local_BxLxD, PADDING_FILL), half)
  # Heads are contiguous channel blocks, so the per-head fusion is the same
  # element-wise expression on the flat D channels.
  fused_BxLxD = jnp.where(
      mask_BxLx1,
      (global_BxD[:, None, :] + segment_BxLxD) * gate_BxLxD + local_BxLxD,
      0.0)
  out_kernel, out_bias = params['out']
  return (fused_BxLxD @ out_kernel + out_bias).astype(model_dtype)


_mix_recomputed = jax.checkpoint(
    _mix, static_argnums=(3, 4, 5),
    policy=jax.checkpoint_policies.nothing_saveable)


def _global_aggregation(params, x_BxLxD, mask_BxL, heads):
  """`sum_n a_n K_n` per head, flat: BxD. See the module docstring."""
  batch, _, dim = x_BxLxD.shape
  head_dim = dim // heads
  weight_BxL = mask_BxL.astype(jnp.float32)
  count_Bx1 = jnp.maximum(weight_BxL.sum(axis=1, keepdims=True), 1.0)
  mean_BxD = jnp.einsum('bl,bld->bd', weight_BxL, x_BxLxD) / count_Bx1
  query_kernel, query_bias = params['query']
  query_BxHxK = (mean_BxD @ query_kernel + query_bias).reshape(
      batch, heads, head_dim)
  key_kernel_DxHxK = params['key'][0].reshape(dim, heads, head_dim)
  key_bias_HxK = params['key'][1].reshape(heads, head_dim)
  scale = 1 / math.sqrt(head_dim)
  probe_BxDxH = jnp.einsum('dhk,bhk->bdh', key_kernel_DxHxK,
                           query_BxHxK) * scale
  offset_BxH = jnp.einsum('hk,bhk->bh', key_bias_HxK, query_BxHxK) * scale
  logits_BxHxL = (jnp.einsum('bld,bdh->bhl', x_BxLxD, probe_BxDxH)
                  + offset_BxH[:, :, None])
  logits_BxHxL = jnp.where(mask_BxL[:, None, :], logits_BxHxL, PADDING_FILL)
  probs_BxHxL = jax.nn.softmax(logits_BxHxL, axis=-1)
  pooled_BxHxD = jnp.einsum('bhl,bld->bhd', probs_BxHxL, x_BxLxD)
  summary_BxHxK = jnp.einsum('bhd,dhk->bhk', pooled_BxHxD,
                             key_kernel_DxHxK) + key_bias_HxK
  return summary_BxHxK.reshape(batch, dim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def split_channels(x_BxLxND, parts):
  """The last axis in `parts` equal blocks.

  Its gradient is one concatenation; autodiff's (a sum of zero-padded
  blocks) makes XLA's CPU backend evaluate every block at every element.
  """
  return tuple(jnp.split(x_BxLxND, parts, axis=-1))


split_channels.defvjp(
    lambda x_BxLxND, parts: (split_channels(x_BxLxND, parts), None),
    lambda parts, _, grads: (jnp.concatenate(grads, axis=-1),))


def segment_length(length: int, segment_num: int) -> int:
  """The official `L // segment_num + 1`: fewer than segment_num may be used."""
  return length // segment_num + 1


def _segment_maxima(x_BxLxD, segment_len):
  """The channel-wise max of each segment, BxSxD; the last may be short."""
  batch, length, dim = x_BxLxD.shape
  whole = length // segment_len * segment_len
  maxima = [x_BxLxD[:, :whole].reshape(batch, -1, segment_len, dim).max(2)]
  if whole < length:
    maxima.append(x_BxLxD[:, whole:].max(axis=1, keepdims=True))
  return jnp.concatenate(maxima, axis=1) if len(maxima) > 1 else maxima[0]


def _spread(value_BxSxD, segment_len, length):
  """Each segment's row, repeated over its positions: BxLxD."""
  batch, segments, dim = value_BxSxD.shape
  spread_BxSxTxD = jnp.broadcast_to(value_BxSxD[:, :, None],
                                    (batch, segments, segment_len, dim))
  return spread_BxSxTxD.reshape(batch, -1, dim)[:, :length]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def segment_max(x_BxLxD, segment_len):
  """Every position gets the channel-wise max of its segment of `segment_len`.

  Position n is in segment `n // segment_len` (the official segment ids).
  """
  if segment_len == 1:
    return x_BxLxD
  return _spread(_segment_maxima(x_BxLxD, segment_len), segment_len,
                 x_BxLxD.shape[1])


def _segment_max_forward(x_BxLxD, segment_len):
  out_BxLxD = segment_max(x_BxLxD, segment_len)
  return out_BxLxD, (x_BxLxD, out_BxLxD)


def _segment_max_backward(segment_len, residuals, grad_BxLxD):
  x_BxLxD, out_BxLxD = residuals
  if segment_len == 1:
    return (grad_BxLxD,)
  batch, length, dim = x_BxLxD.shape
  # The gradient of a segment's max is the sum over the positions it reached.
  whole = length // segment_len * segment_len
  sums = [grad_BxLxD[:, :whole].reshape(batch, -1, segment_len, dim).sum(2)]
  if whole < length:
    sums.append(grad_BxLxD[:, whole:].sum(axis=1, keepdims=True))
  sum_BxSxD = jnp.concatenate(sums, axis=1) if len(sums) > 1 else sums[0]
  return (jnp.where(x_BxLxD == out_BxLxD,
                    _spread(sum_BxSxD, segment_len, length), 0.0),)


segment_max.defvjp(_segment_max_forward, _segment_max_backward)


def _shift(x_BxLxD, offset, fill):
  """`out[:, n] = x[:, n - offset]`, `fill` where that is outside."""
  length = x_BxLxD.shape[1]
  if abs(offset) >= length:
    return jnp.full_like(x_BxLxD, fill)
  edge = jnp.full_like(x_BxLxD[:, :abs(offset)], fill)
  if offset > 0:
    return jnp.concatenate([edge, x_BxLxD[:, :-offset]], axis=1)
  return jnp.concatenate([x_BxLxD[:, -offset:], edge], axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def local_max(x_BxLxD, half):
  """The max over positions n - half .. n + half that exist (no padding)."""
  out_BxLxD = x_BxLxD
  for offset in range(1, half + 1):
    out_BxLxD = jnp.maximum(out_BxLxD, jnp.maximum(
        _shift(x_BxLxD, offset, -jnp.inf), _shift(x_BxLxD, -offset, -jnp.inf)))
  return out_BxLxD


def _local_max_forward(x_BxLxD, half):
  out_BxLxD = local_max(x_BxLxD, half)
  return out_BxLxD, (x_BxLxD, out_BxLxD)


def _local_max_backward(half, residuals, grad_BxLxD):
  x_BxLxD, out_BxLxD = residuals
  # Position n receives the gradient of each window m (|m - n| <= half) whose
  # max it is.
  total_BxLxD = jnp.where(x_BxLxD == out_BxLxD, grad_BxLxD, 0.0)
  for offset in range(1, half + 1):
    for step in (offset, -offset):
      window_max_BxLxD = _shift(out_BxLxD, -step, jnp.nan)
      total_BxLxD += jnp.where(x_BxLxD == window_max_BxLxD,
                               _shift(grad_BxLxD, -step, 0.0), 0.0)
  return (total_BxLxD,)


local_max.defvjp(_local_max_forward, _local_max_backward)

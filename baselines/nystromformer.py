"""Nystromformer attention (Xiong et al., AAAI 2021, arXiv 2102.03902).

Softmax attention approximated through M landmarks, the means of M
consecutive segments of the queries and of the keys:

    A1 = softmax(Q Kt^T),  A2 = softmax(Qt Kt^T),  A3 = softmax(Qt K^T + mask)
    out = (A1 pinv(A2)) (A3 V) + DepthwiseConv(V * m)

with q and k scaled by d^(-1/4) each, pinv(A2) by 6 Newton-Schulz iterations
from Z0 = A2^T / max(column sums of A2), and a per-head convolution along the
length on the values (one 35-tap kernel per head, shared by its d channels;
out[l] = sum_t w[t] V[l + t - 17], zero beyond the ends). Time and memory are
O(L M d) per head.

As the Nystromformer LRA code that produced the PoNet paper's
"Nystromformer (3)" row and its speed table, nystrom-64 (mlpen/Nystromformer
@5689313, LRA/code/attention_nystrom.py L6-66; attention.py L32-88;
lra_config.py "nystrom-64"), step by step:
  * Q and K are multiplied by the mask before the landmarks are taken (L31-32);
  * A1 and A2 have no mask; A3 masks padding keys with -1e9 (L41-43);
  * the convolution sees V * m (L46-47);
  * when M equals the length L, it is exact softmax attention with the mask
    (L34-36); here also when M exceeds L, where the official code fails.
So padding content never reaches real positions, but the number of padding
positions does (zero rows count in the segment means, and A1 gives weight to
landmarks of padding). Where L is not a multiple of M (the official code
requires one; its run_tasks.py L34 rounds the padded length up to a power of
two), Q and K are first zero-padded to the next multiple of M, as if the
padded length were that long.

Two quirks of the official code are switches (both default to the official
behaviour, `landmarks='padded'` and `pinv_init='batch'`):
  landmarks: 'padded' averages all c = L/M rows of a segment, padding rows
    (zeros) included; 'real_tokens' averages only a segment's real tokens
    (a segment of padding only gives a zero landmark).
  pinv_init: 'batch' takes one maximum column sum over the whole batch and all
    heads for Z0 (L56), so an example's output depends on the other examples
    in its batch; 'per_example' takes it per example and head (the code's
    other branch, L58, unreachable there because its option key is misspelt,
    L16-17).

Hyperparameters (`config.model.nystromformer`):
  num_landmarks: 64 ("nystrom-64", lra_config.py; the model LRA/README.md
    names).
  conv_kernel_size: 35 ("nystrom-64"); 0 disables the convolution. Its
    kernel starts U(+-1/sqrt(conv_kernel_size)), PyTorch's Conv2d default.
  pinv_iterations: 6 (`iterative_inv`'s default, L51).
  landmarks: 'padded'; pinv_init: 'batch' (see above).
Heads and projections are the suite's (`model.num_heads`; q, k, v and output
`nnx.Linear` layers with the suite's initialisation, as its Transformer).
The attention core runs in float32, as the official code runs it with
autocast off: the Newton-Schulz iteration is unstable in bfloat16.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention

from lra_ponet.errors import UserError

LANDMARKS = ('padded', 'real_tokens')
PINV_INITS = ('batch', 'per_example')
# The official code's mask fill for padding keys.
MASK_FILL = -1e9


class Nystromformer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, Nystrom-approximated attention."""

  # Q, K and V are multiplied by the mask before anything mixes positions.
  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               num_landmarks: int = 64, conv_kernel_size: int = 35,
               pinv_iterations: int = 6, landmarks: str = 'padded',
               pinv_init: str = 'batch', dtype=jnp.float32):
    if landmarks not in LANDMARKS:
      raise UserError(f'unknown model.nystromformer.landmarks {landmarks!r}; '
                      f'use one of {", ".join(LANDMARKS)}')
    if pinv_init not in PINV_INITS:
      raise UserError(f'unknown model.nystromformer.pinv_init {pinv_init!r}; '
                      f'use one of {", ".join(PINV_INITS)}')
    if num_landmarks < 1:
      raise UserError(f'model.nystromformer.num_landmarks must be positive, '
                      f'got {num_landmarks}')
    if conv_kernel_size and (conv_kernel_size < 0 or conv_kernel_size % 2 == 0):
      raise UserError(f'model.nystromformer.conv_kernel_size must be odd (or '
                      f'0 for no convolution), got {conv_kernel_size}')
    self.num_heads = num_heads
    self.num_landmarks = num_landmarks
    self.pinv_iterations = pinv_iterations
    self.landmarks = landmarks
    self.pinv_init = pinv_init

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))
    bound = 1 / math.sqrt(max(conv_kernel_size, 1))
    self.conv = nnx.Param(jax.random.uniform(
        rngs.params(), (num_heads, conv_kernel_size), minval=-bound,
        maxval=bound)) if conv_kernel_size else None

  @classmethod
  def default_config(cls, config):
    del config  # The same in every task.
    return dict(num_landmarks=64, conv_kernel_size=35, pinv_iterations=6,
                landmarks='padded', pinv_init='batch')

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.nystromformer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               num_landmarks=own.num_landmarks,
               conv_kernel_size=own.conv_kernel_size,
               pinv_iterations=own.pinv_iterations,
               landmarks=own.landmarks, pinv_init=own.pinv_init,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    length, dim = x_BxLxD.shape[1:]
    head_dim = dim // self.num_heads
    weight_BxL = mask_BxL.astype(jnp.float32)
    weight_Bx1xLx1 = weight_BxL[:, None, :, None]

    def heads(layer):
      return attention.split_heads(layer(x_BxLxD).astype(jnp.float32),
                                   self.num_heads).transpose(0, 2, 1, 3)

    scale = head_dim ** -0.25
    query_BxHxLxK = heads(self.query) * weight_Bx1xLx1 * scale
    key_BxHxLxK = heads(self.key) * weight_Bx1xLx1 * scale
    value_BxHxLxK = heads(self.value)
    key_fill_Bx1x1xL = MASK_FILL * (1 - weight_BxL[:, None, None, :])
    if self.num_landmarks >= length:
      probs_BxHxLxL = jax.nn.softmax(
          query_BxHxLxK @ _transpose(key_BxHxLxK) + key_fill_Bx1x1xL)
      mixed_BxHxLxK = probs_BxHxLxL @ value_BxHxLxK
    else:
      query_BxHxMxK = self._landmarks(query_BxHxLxK, weight_BxL)
      key_BxHxMxK = self._landmarks(key_BxHxLxK, weight_BxL)
      kernel1_BxHxLxM = jax.nn.softmax(
          query_BxHxLxK @ _transpose(key_BxHxMxK))
      kernel2_BxHxMxM = jax.nn.softmax(
          query_BxHxMxK @ _transpose(key_BxHxMxK))
      kernel3_BxHxMxL = jax.nn.softmax(
          query_BxHxMxK @ _transpose(key_BxHxLxK) + key_fill_Bx1x1xL)
      inverse_BxHxMxM = iterative_pinv(
          kernel2_BxHxMxM, self.pinv_iterations,
          per_example=self.pinv_init == 'per_example')
      mixed_BxHxLxK = ((kernel1_BxHxLxM @ inverse_BxHxMxM)
                       @ (kernel3_BxHxMxL @ value_BxHxLxK))
    if self.conv is not None:
      mixed_BxHxLxK += self._depthwise_conv(value_BxHxLxK * weight_Bx1xLx1)
    mixed_BxLxD = attention.merge_heads(mixed_BxHxLxK.transpose(0, 2, 1, 3))
    return self.out(mixed_BxLxD.astype(x_BxLxD.dtype))

  def _landmarks(self, x_BxHxLxK, weight_BxL):
    """Means of M consecutive segments of the rows, the length zero-padded."""
    batch, heads, length, head_dim = x_BxHxLxK.shape
    segment = -(-length // self.num_landmarks)
    extra = segment * self.num_landmarks - length
    x_BxHxLxK = jnp.pad(x_BxHxLxK, ((0, 0), (0, 0), (0, extra), (0, 0)))
    sums_BxHxMxK = x_BxHxLxK.reshape(
        batch, heads, self.num_landmarks, segment, head_dim).sum(axis=3)
    if self.landmarks == 'padded':
      return sums_BxHxMxK / segment
    counts_BxM = jnp.pad(weight_BxL, ((0, 0), (0, extra))).reshape(
        batch, self.num_landmarks, segment).sum(axis=2)
    return sums_BxHxMxK / jnp.maximum(counts_BxM, 1)[:, None, :, None]

  def _depthwise_conv(self, value_BxHxLxK):
    """Per-head cross-correlation along L, as PyTorch's grouped Conv2d."""
    kernel_HxT = self.conv[...]
    half = kernel_HxT.shape[1] // 2
    return jax.lax.conv_general_dilated(
        value_BxHxLxK, kernel_HxT[:, None, :, None].astype(jnp.float32),
        window_strides=(1, 1), padding=((half, half), (0, 0)),
        feature_group_count=self.num_heads)


def _transpose(x):
  return jnp.swapaxes(x, -1, -2)


def iterative_pinv(matrix_BxHxMxM, iterations: int, *, per_example: bool):
  """Newton-Schulz pseudo-inverse (attention_nystrom.py `iterative_inv`)."""
  column_sums_BxHxM = matrix_BxHxMxM.sum(axis=-2)
  if per_example:
    scale = column_sums_BxHxM.max(axis=-1)[..., None, None]
  else:
    scale = column_sums_BxHxM.max()
  identity = jnp.eye(matrix_BxHxMxM.shape[-1], dtype=matrix_BxHxMxM.dtype)
  inverse = _transpose(matrix_BxHxMxM) / scale
  for _ in range(iterations):
    product = matrix_BxHxMxM @ inverse
    inverse = (0.25 * inverse) @ (
        13 * identity - product @ (15 * identity - product @ (
            7 * identity - product)))
  return inverse

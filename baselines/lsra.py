"""LSRA, the Long-Short Range Attention of Lite Transformer.

Wu et al., "Lite Transformer with Long-Short Range Attention", ICLR 2020
(arXiv 2004.11886); the convolutions are those of Wu et al., "Pay Less
Attention with Lightweight and Dynamic Convolutions", ICLR 2019. The maths
follows the official code, mit-han-lab/lite-transformer: the channels are
split in two (`fairseq/modules/multibranch.py`), the first half goes through
multi-head attention (long range), the second through a convolution branch
(short range, `dynamic_convolution.py` / `lightconv_layer.py`), and the two
outputs are concatenated with no shared output projection.

Convolution branch (`conv_type='dynamic'`): u = GLU(Linear(Dc, 2 Dc)(x_c))
(or Linear(Dc, Dc) without GLU); per position and head, K filter taps
w = softmax_K(u W_w) (W_w: Linear(Dc, Hc K), no bias), DropConnect on w, then
y[t, c] = sum_k w[t, c // (Dc / Hc), k] u[t + k - K // 2, c] (zero outside
the sequence; cross-correlation, as PyTorch), then Linear(Dc, Dc).
`conv_type='lightweight'`: u = Linear(Dc, Dc)(x_c), the taps are one learned
softmax-normalised (Hc, K) parameter shared by all positions.

Padding: the official branch zeroes its input at padding before the first
Linear, whose bias (and GLU) makes u non-zero there again, so the real tokens
within K // 2 of the end see a learned constant where an unpadded sequence
has zeros: the result depends on how much padding follows
(`padding='faithful'`). The default `padding='fixed'` also zeroes u at
padding, so a padded sequence gives the same result as the unpadded one. In
both forms the content of padding never reaches real tokens (the constant
does not depend on it), so `masks_padding` holds. The attention branch
excludes padding keys (a finite fill instead of fairseq's -inf).

Initialisation: the lightweight taps, a plain parameter, start
xavier-uniform as in the official code; every Linear, the dynamic taps'
included, is initialised by the model (`model.linear_init`,
models.reinit_linears), not as the official code (xavier-uniform kernels,
gain 1/sqrt(2) for q/k/v, zero or PyTorch-default biases).

Hyperparameters (`config.model.lsra`):
  conv_type: 'dynamic' (the WMT and CNN-DM configs); 'lightweight' is the
    IWSLT config's branch.
  kernel_sizes: (3, 7, 15, 31, 31, 31), the official
    `encoder_kernel_size_list`; layer i uses entry i (odd sizes only).
  attention_heads: num_heads // 2, so that the attention head dim is the
    model's (the official configs use 4 heads on each half).
  conv_heads: 4, as every official config.
  glu: True, the official `encoder_glu` default (dynamic branch only).
  weight_dropout: the model's attention_dropout (0.1), the official default.
  padding: 'fixed' (see above) or 'faithful'.
The split is half and half, as in every official config.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

CONV_TYPES = ('dynamic', 'lightweight')
PADDINGS = ('fixed', 'faithful')


class LongShortRangeAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`: attention and convolution halves."""

  masks_padding = True

  def __init__(self, dim: int, kernel_size: int, *, rngs: nnx.Rngs,
               attention_heads: int, conv_heads: int = 4,
               conv_type: str = 'dynamic', glu: bool = True,
               attention_dropout: float = 0.1, weight_dropout: float = 0.1,
               padding: str = 'fixed', dtype=jnp.float32):
    half = dim // 2
    _check(dim, kernel_size, attention_heads, conv_heads, conv_type, padding)
    self.attention_dim = half
    self.attention_heads = attention_heads
    self.conv_heads = conv_heads
    self.kernel_size = kernel_size
    self.conv_type = conv_type
    self.padding = padding
    self.query, self.key, self.value, self.attention_out = (
        attention.attention_projections(half, rngs=rngs, dtype=dtype))
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)
    conv_dim = dim - half
    self.glu = glu and conv_type == 'dynamic'

    def linear(size_out, use_bias=True):
      return nnx.Linear(conv_dim, size_out, use_bias=use_bias, dtype=dtype,
                        rngs=rngs)

    self.conv_in = linear(conv_dim * (1 + self.glu))
    if conv_type == 'dynamic':
      self.taps = linear(conv_heads * kernel_size, use_bias=False)
    else:
      self.taps = nnx.Param(nnx.initializers.xavier_uniform()(
          rngs.params(), (conv_heads, kernel_size)))
    self.weight_dropout = Dropout(weight_dropout, rngs=rngs)
    self.conv_out = linear(conv_dim)

  @classmethod
  def default_config(cls, config):
    return dict(conv_type='dynamic', kernel_sizes=(3, 7, 15, 31, 31, 31),
                attention_heads=config.model.get_ref('num_heads') // 2,
                conv_heads=4, glu=True,
                weight_dropout=config.model.get_ref('attention_dropout'),
                padding='fixed')

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    settings = model_config.lsra
    if layer_index >= len(settings.kernel_sizes):
      raise UserError(
          f'lsra has kernel sizes for {len(settings.kernel_sizes)} layers '
          f'but the model has {model_config.num_layers}; give one per layer '
          'in --config.model.lsra.kernel_sizes')
    return cls(model_config.dim, settings.kernel_sizes[layer_index],
               rngs=rngs, attention_heads=settings.attention_heads,
               conv_heads=settings.conv_heads, conv_type=settings.conv_type,
               glu=settings.glu,
               attention_dropout=model_config.attention_dropout,
               weight_dropout=settings.weight_dropout,
               padding=settings.padding, dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    attention_BxLxA = self._attention(x_BxLxD[..., :self.attention_dim],
                                      mask_BxL)
    conv_BxLxC = self._convolution(x_BxLxD[..., self.attention_dim:],
                                   mask_BxL)
    return jnp.concatenate([attention_BxLxA, conv_BxLxC], axis=-1)

  def _attention(self, x_BxLxA, mask_BxL):
    query_BxLxHxK, key_BxLxHxK, value_BxLxHxK = (
        attention.split_heads(projection(x_BxLxA), self.attention_heads)
        for projection in (self.query, self.key, self.value))
    mixed_BxLxHxK = attention.dense_attention(
        query_BxLxHxK, key_BxLxHxK, value_BxLxHxK, mask_BxL[:, None],
        self.attention_dropout)
    return self.attention_out(attention.merge_heads(mixed_BxLxHxK))

  def _convolution(self, x_BxLxC, mask_BxL):
    mask_BxLx1 = mask_BxL[:, :, None]
    u_BxLxC = self.conv_in(jnp.where(mask_BxLx1, x_BxLxC, 0))
    if self.glu:
      u_BxLxC = jax.nn.glu(u_BxLxC, axis=-1)
    if self.padding == 'fixed':
      u_BxLxC = jnp.where(mask_BxLx1, u_BxLxC, 0)
    batch, length, channels = u_BxLxC.shape
    if self.conv_type == 'dynamic':
      taps_BxLxHxK = self.taps(u_BxLxC).reshape(
          batch, length, self.conv_heads, self.kernel_size)
    else:
      taps_BxLxHxK = jnp.broadcast_to(self.taps[...].astype(u_BxLxC.dtype),
                                      (1, 1) + self.taps.shape)
    taps_BxLxHxK = self.weight_dropout(jax.nn.softmax(taps_BxLxHxK, axis=-1))
    half = self.kernel_size // 2
    padded_BxPxHxR = jnp.pad(u_BxLxC, ((0, 0), (half, half), (0, 0))).reshape(
        batch, length + 2 * half, self.conv_heads, -1)
    # One shifted product per tap keeps memory at O(L * C), not O(L * C * K).
    y_BxLxHxR = sum(
        taps_BxLxHxK[..., k, None] * padded_BxPxHxR[:, k:k + length]
        for k in range(self.kernel_size))
    return self.conv_out(y_BxLxHxR.reshape(batch, length, channels))


def _check(dim, kernel_size, attention_heads, conv_heads, conv_type,
           padding):
  if conv_type not in CONV_TYPES:
    raise UserError(f'unknown lsra.conv_type {conv_type!r}; use one of '
                    f'{", ".join(CONV_TYPES)}')
  if padding not in PADDINGS:
    raise UserError(f'unknown lsra.padding {padding!r}; use one of '
                    f'{", ".join(PADDINGS)}')
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise UserError(f'lsra kernel sizes must be odd and positive, got '
                    f'{kernel_size}; fix --config.model.lsra.kernel_sizes')
  half = dim // 2
  if attention_heads < 1 or half % attention_heads:
    raise UserError(f'lsra attention half ({half} channels) does not split '
                    f'into {attention_heads} heads; set '
                    '--config.model.lsra.attention_heads')
  if conv_heads < 1 or (dim - half) % conv_heads:
    raise UserError(f'lsra convolution half ({dim - half} channels) does '
                    f'not split into {conv_heads} heads; set '
                    '--config.model.lsra.conv_heads')

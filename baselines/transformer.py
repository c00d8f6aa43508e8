"""Multi-head softmax self-attention, the Transformer rows of the tables.

Two implementations of the same maths, chosen by `model.attention`:
`xla` (an explicit L x L softmax, what the published speed tables measured)
and `cudnn` (`jax.nn.dot_product_attention(implementation="cudnn")`, a fused
flash kernel on NVIDIA GPUs, bf16/fp16 only).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from baselines import projections

from lra_ponet.errors import UserError

IMPLEMENTATIONS = ('xla', 'cudnn')


class SelfAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` with q, k, v and out projections.

  q, k and v are `qkv_dim` wide (`dim` by default; LRA sets it apart for
  Image and Pathfinder), split into `num_heads` heads of `qkv_dim //
  num_heads`; `out` maps them back to `dim`. Padding keys are excluded from
  every softmax. The cudnn path passes the padding as per-example key
  lengths, so it assumes the real tokens come first (padding at the end, as
  in every LRA task; models.validate_config refuses it where black pixels
  are masked anywhere), and it applies no attention dropout (the fused
  kernel of jax has none).
  """

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               qkv_dim: int | None = None, use_bias: bool = True,
               attention_dropout: float = 0.1, implementation: str = 'xla',
               dtype=jnp.float32):
    qkv_dim = qkv_dim or dim
    if qkv_dim % num_heads:
      raise UserError(f'the attention width {qkv_dim} (model.qkv_dim) is not '
                      f'divisible by model.num_heads {num_heads}')
    _check_implementation(implementation, jnp.dtype(dtype))
    self.num_heads = num_heads
    self.implementation = implementation

    def linear(size_in, size_out):
      return nnx.Linear(size_in, size_out, use_bias=use_bias, dtype=dtype,
                        rngs=rngs)

    self.query = linear(dim, qkv_dim)
    self.key = linear(dim, qkv_dim)
    self.value = linear(dim, qkv_dim)
    self.out = linear(qkv_dim, dim)
    self.attention_dropout = nnx.Dropout(attention_dropout, rngs=rngs)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               qkv_dim=model_config.qkv_dim,
               use_bias=model_config.attention_bias,
               attention_dropout=model_config.attention_dropout,
               implementation=model_config.attention,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, _ = x_BxLxD.shape
    qkv_dim = self.query.kernel.shape[1]
    split = (batch, length, self.num_heads, qkv_dim // self.num_heads)
    query_BxLxHxK = self.query(x_BxLxD).reshape(split)
    key_BxLxHxK = self.key(x_BxLxD).reshape(split)
    value_BxLxHxK = self.value(x_BxLxD).reshape(split)
    if self.implementation == 'cudnn':
      mixed_BxLxHxK = jax.nn.dot_product_attention(
          query_BxLxHxK, key_BxLxHxK, value_BxLxHxK,
          key_value_seq_lengths=mask_BxL.sum(axis=1, dtype=jnp.int32),
          implementation='cudnn')
    else:
      mixed_BxLxHxK = projections.dense_attention(
          query_BxLxHxK, key_BxLxHxK, value_BxLxHxK, mask_BxL,
          self.attention_dropout)
    return self.out(mixed_BxLxHxK.reshape(batch, length, qkv_dim))


def _check_implementation(implementation, dtype):
  if implementation not in IMPLEMENTATIONS:
    raise UserError(f'unknown attention implementation {implementation!r}; '
                    f'use one of {", ".join(IMPLEMENTATIONS)}')
  if implementation != 'cudnn':
    return
  if jax.default_backend() != 'gpu':
    raise UserError(
        f'attention=cudnn needs an NVIDIA GPU, but the backend is '
        f'{jax.default_backend()}; use --config.model.attention=xla')
  if dtype not in (jnp.bfloat16, jnp.float16):
    raise UserError(
        f'attention=cudnn runs in bfloat16 or float16 only, not {dtype}; '
        'add --config.model.dtype=bfloat16')

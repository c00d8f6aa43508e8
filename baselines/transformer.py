"""Multi-head softmax self-attention, the Transformer rows of the tables.

Two implementations of the same maths, chosen by
`model.transformer.attention`:
`xla` (an explicit L x L softmax, what the published speed tables measured)
and `cudnn` (`jax.nn.dot_product_attention(implementation="cudnn")`, a fused
flash kernel on NVIDIA GPUs, bf16/fp16 only).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

IMPLEMENTATIONS = ('xla', 'cudnn')


class SelfAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` with q, k, v and out projections.

  q, k and v are `qkv_dim` wide (`dim` by default; LRA sets it apart for
  Image and Pathfinder), split into `num_heads` heads of `qkv_dim //
  num_heads`; `out` maps them back to `dim`. Padding keys are excluded from
  every softmax. The cudnn path passes the padding as per-example key
  lengths, so it assumes the real tokens come first (padding at the end, as
  in every LRA task; validation.validate_config refuses it where black pixels
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
      raise UserError(f'the attention width {qkv_dim} '
                      '(model.transformer.qkv_dim) is not '
                      f'divisible by model.num_heads {num_heads}')
    _check_implementation(implementation, jnp.dtype(dtype))
    self.num_heads = num_heads
    self.implementation = implementation

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype,
                                        use_bias=use_bias, qkv_dim=qkv_dim))
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)

  @classmethod
  def default_config(cls, config):
    """`attention`: an IMPLEMENTATIONS name; `qkv_dim` follows `model.dim`."""
    return dict(attention='xla', attention_bias=True,
                qkv_dim=config.model.get_ref('dim').identity())

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.transformer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               qkv_dim=own.qkv_dim, use_bias=own.attention_bias,
               attention_dropout=model_config.attention_dropout,
               implementation=own.attention,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    query_BxLxHxK, key_BxLxHxK, value_BxLxHxK = (
        attention.split_heads(projection(x_BxLxD), self.num_heads)
        for projection in (self.query, self.key, self.value))
    if self.implementation == 'cudnn':
      mixed_BxLxHxK = jax.nn.dot_product_attention(**cudnn_arguments(
          query_BxLxHxK, key_BxLxHxK, value_BxLxHxK, mask_BxL))
    else:
      mixed_BxLxHxK = attention.dense_attention(
          query_BxLxHxK, key_BxLxHxK, value_BxLxHxK, mask_BxL[:, None],
          self.attention_dropout)
    return self.out(attention.merge_heads(mixed_BxLxHxK))


def cudnn_arguments(query_BxLxHxK, key_BxLxHxK, value_BxLxHxK, mask_BxL):
  """The keyword arguments of `jax.nn.dot_product_attention` for cuDNN.

  Its layout is BTNH, which the heads already have (batch, length, heads,
  head width); the padding goes in as each example's number of real keys.
  """
  return dict(query=query_BxLxHxK, key=key_BxLxHxK, value=value_BxLxHxK,
              key_value_seq_lengths=mask_BxL.sum(axis=1, dtype=jnp.int32),
              implementation='cudnn')


def _check_implementation(implementation, dtype):
  if implementation not in IMPLEMENTATIONS:
    raise UserError(f'unknown attention implementation {implementation!r}; '
                    f'use one of {", ".join(IMPLEMENTATIONS)}')
  if implementation != 'cudnn':
    return
  if jax.default_backend() != 'gpu':
    raise UserError(
        f'attention=cudnn needs an NVIDIA GPU, but the backend is '
        f'{jax.default_backend()}; use --config.model.transformer.attention=xla')
  if dtype not in (jnp.bfloat16, jnp.float16):
    raise UserError(
        f'attention=cudnn runs in bfloat16 or float16 only, not {dtype}; '
        'add --config.model.dtype=bfloat16')

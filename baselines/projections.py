"""Pieces the attention-like mixers share: their projections, dense attention.

Each mixer keeps its projections as its own attributes `query`, `key`,
`value`, `out`, so parameter paths (and checkpoints) name them as before.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx


def attention_projections(dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
                          **linear_options):
  """(query, key, value, out): four D x D `nnx.Linear`s, drawn in that order."""
  return tuple(nnx.Linear(dim, dim, dtype=dtype, rngs=rngs, **linear_options)
               for _ in range(4))


def xavier_linear(dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
  """A D x D `nnx.Linear` without bias, Xavier-uniform: LRA's Flax projections."""
  return nnx.Linear(dim, dim, use_bias=False, dtype=dtype,
                    kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs)


def dense_attention(query_BxLxHxK, key_BxMxHxK, value_BxMxHxK, mask_BxM,
                    dropout: nnx.Dropout):
  """Softmax attention over the real keys, with dropout on the weights."""
  logits_BxHxLxM = jnp.einsum('bqhk,bvhk->bhqv', query_BxLxHxK,
                              key_BxMxHxK) / math.sqrt(query_BxLxHxK.shape[-1])
  logits_BxHxLxM = jnp.where(mask_BxM[:, None, None, :], logits_BxHxLxM,
                             jnp.finfo(logits_BxHxLxM.dtype).min)
  probs_BxHxLxM = dropout(jax.nn.softmax(logits_BxHxLxM, axis=-1))
  return jnp.einsum('bhqv,bvhk->bqhk', probs_BxHxLxM, value_BxMxHxK)

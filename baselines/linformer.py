"""Linformer attention (Wang et al. 2020, arXiv 2006.04768).

Keys and values are projected along the length, from n positions to k,
before an ordinary softmax attention, so time and memory are O(L k d):

    K' = E (K * m),  V' = E (V * m),  out = softmax(Q K'^T / sqrt(d)) V'

As the Nystromformer LRA code that produced the PoNet paper's
"Linformer (3)" row, linformer-256 (mlpen/Nystromformer@5689313,
LRA/code/attention_linformer.py L6-35; lra_config.py "linformer-256"):
  * one projection E of shape (heads, k, n), drawn N(0, 0.02), is shared by
    every layer of the model and by keys and values (it is a class attribute
    there, L7 and L17-22); here the encoder creates it once and hands the
    same parameter to every layer (`shared_params`);
  * n is the length the model sees: config.padded_len, plus 1 with CLS
    pooling. It is fixed at construction: a longer batch is an error. A
    shorter batch uses the first L columns of E, which is the same as padding
    it to n (padding keys and values are zero);
  * keys and values are multiplied by the mask before the projection and the
    softmax has no mask (L25-31), so padding content never reaches real
    positions, but the number of padding positions does (each of the k
    projected keys mixes real and zero rows).
Not this form: the LRA JAX Linformer (the LRA paper's row), with one
projection per layer shared by the heads, k = 16, and no padding mask.

Hyperparameters (`config.model.linformer`):
  k: 256, the projected length ("linformer-256", lra_config.py).
Heads and projections are the suite's (`model.num_heads`; q, k, v and output
`nnx.Linear` layers with the suite's initialisation, as its Transformer).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention

from lra_ponet.errors import UserError

# The official projection's initialisation: N(0, 0.02).
PROJECTION_STDDEV = 0.02


class Linformer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, attention over k projected keys."""

  # Keys and values are multiplied by the mask before the projection.
  masks_padding = True

  def __init__(self, dim: int, num_heads: int, projection: nnx.Param, *,
               rngs: nnx.Rngs, dtype=jnp.float32):
    self.num_heads = num_heads
    self.projection = projection

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))

  @classmethod
  def default_config(cls, config):
    del config  # The same in every task.
    return dict(k=256)

  @classmethod
  def shared_params(cls, model_config, length: int, *, rngs):
    """The one projection E (heads x k x length) of the whole model."""
    k = model_config.linformer.k
    if k < 1:
      raise UserError(f'model.linformer.k must be positive, got {k}')
    shape = (model_config.num_heads, k, length)
    return dict(projection=nnx.Param(
        PROJECTION_STDDEV * jax.random.normal(rngs.params(), shape)))

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0, projection):
    del layer_index  # Every layer is the same, E included.
    return cls(model_config.dim, model_config.num_heads, projection,
               rngs=rngs, dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    length = x_BxLxD.shape[1]
    projection_HxPxN = self.projection[...]
    if length > projection_HxPxN.shape[-1]:
      raise UserError(
          f'a batch of {length} positions is longer than the Linformer '
          f'projection ({projection_HxPxN.shape[-1]}, fixed by '
          'config.padded_len when the model was built); build the model '
          'with a padded_len that covers the longest batch')
    weight_BxLx1x1 = mask_BxL[:, :, None, None].astype(jnp.float32)

    def heads(layer):
      return attention.split_heads(layer(x_BxLxD),
                                   self.num_heads).astype(jnp.float32)

    projection_HxPxL = projection_HxPxN[:, :, :length].astype(jnp.float32)
    key_BxPxHxK, value_BxPxHxK = (
        jnp.einsum('hpl,blhk->bphk', projection_HxPxL,
                   heads(layer) * weight_BxLx1x1)
        for layer in (self.key, self.value))
    # No mask: the projected keys mix real and (zero) padding rows alike.
    mixed_BxLxHxK = attention.dense_attention(heads(self.query), key_BxPxHxK,
                                              value_BxPxHxK)
    return self.out(attention.merge_heads(mixed_BxLxHxK.astype(x_BxLxD.dtype)))

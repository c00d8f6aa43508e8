"""DMAN, the dynamic mask attention of Mask Attention Networks.

Fan et al., "Mask Attention Networks: Rethinking and Strengthen Transformer",
NAACL 2021 (arXiv 2103.13597). The maths follows the official code,
LibertFan/MAN `translation/fairseq/modules/multihead_attention2.py`
(`MultiheadAttention2` with `re_weight_m=1`): multi-head attention whose
logits get a learned log-mask,

  M[b, h, i, j] = sigmoid(x_i . w_ctx + pos[j - i] + head[h]),
  logits = q_i . k_j / sqrt(d) + log(max(M, 1e-10)),
  out = ReLU(softmax_j(logits) V) W_o,

so the mask depends on the query's content, the signed distance j - i and
the head. `pos` holds one learned scalar per signed distance in
[-max_distance, max_distance] with distance 0 fixed at 0 (the official
`forward_position_x`, a zero, `backward_position_x`). The ReLU before the
output projection is in the official code (every `MultiheadAttention2`).

Initialisation as the official `reset_parameters`: q/k/v one xavier-uniform
matrix of shape (D, 3D) with zero bias; output kaiming-uniform (gain sqrt 2)
with zero bias; `w_ctx` xavier-uniform, no bias; `pos` and `head` N(0, 1).
The three Linears keep it with `model.linear_init=flax`; the default
`pytorch` (ponet preset) and `lra` redraw every `nnx.Linear`
(models.LINEAR_INITS).

Hyperparameters (`config.model.dman`):
  max_distance: the largest |j - i| with a learned scalar, the official
    `max_len` (= `max_source_positions`). Default `config.padded_len`
    (tracking overrides), enough for the CLS token too, since the largest
    distance in a sequence of L tokens is L - 1. Longer inputs raise a
    UserError rather than sharing scalars.
Heads and attention dropout are the model's `num_heads` and
`attention_dropout` (the official IWSLT setting is 4 heads, dropout 0.1).

Only the DMAN sublayer is the mixer: the paper's layer is DMAN, then plain
self-attention (SAN), then the FFN, each with its own residual. The suite's
block is mixer then MLP, and a mixer sees LayerNorm(x), not x, so it cannot
form the residual between DMAN and SAN; the SAN sublayer is left out.
Padding keys are excluded from every softmax (finite fill instead of the
official -inf, so padding query rows stay finite), so `masks_padding` holds.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.errors import UserError

# The official clamp before the log.
MASK_FLOOR = 1e-10


class DynamicMaskAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` with a learned soft attention mask."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, max_distance: int, *,
               rngs: nnx.Rngs, attention_dropout: float = 0.1,
               dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
    self.num_heads = num_heads
    self.max_distance = max_distance
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.xavier_uniform(),
                          bias_init=nnx.initializers.zeros)
    self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.he_uniform(),
                          bias_init=nnx.initializers.zeros)
    self.context = nnx.Linear(dim, 1, use_bias=False, dtype=dtype, rngs=rngs,
                              kernel_init=nnx.initializers.xavier_uniform())
    normal = nnx.initializers.normal(stddev=1.0)
    self.forward_position = nnx.Param(normal(rngs.params(), (max_distance,)))
    self.backward_position = nnx.Param(normal(rngs.params(), (max_distance,)))
    self.head = nnx.Param(normal(rngs.params(), (num_heads,)))
    self.attention_dropout = nnx.Dropout(attention_dropout, rngs=rngs)

  @classmethod
  def default_config(cls, config):
    return dict(max_distance=config.get_ref('padded_len'))

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    return cls(model_config.dim, model_config.num_heads,
               model_config.dman.max_distance, rngs=rngs,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def log_mask(self, x_BxLxD):
    """`log(max(M, 1e-10))` of shape BxHxLxL (query i, key j)."""
    length = x_BxLxD.shape[1]
    if length - 1 > self.max_distance:
      raise UserError(
          f'dman sees {length} tokens but has position scalars up to '
          f'distance {self.max_distance}; set --config.model.dman.'
          f'max_distance={length - 1} or more')
    position_P = jnp.concatenate([
        self.forward_position[...], jnp.zeros((1,)),
        self.backward_position[...]])
    offset_LxL = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]
    position_LxL = position_P[self.max_distance + offset_LxL]
    context_BxL = self.context(x_BxLxD)[..., 0].astype(jnp.float32)
    gate_BxHxLxL = (context_BxL[:, None, :, None] + position_LxL[None, None]
                    + self.head[...][None, :, None, None])
    return jnp.log(jnp.maximum(jax.nn.sigmoid(gate_BxHxLxL), MASK_FLOOR))

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, dim = x_BxLxD.shape
    split = (batch, length, self.num_heads, dim // self.num_heads)
    query_BxLxD, key_BxLxD, value_BxLxD = jnp.split(self.qkv(x_BxLxD), 3, -1)
    logits_BxHxLxL = jnp.einsum(
        'bqhk,bvhk->bhqv', query_BxLxD.reshape(split),
        key_BxLxD.reshape(split)) / math.sqrt(split[-1])
    logits_BxHxLxL = logits_BxHxLxL + self.log_mask(x_BxLxD).astype(
        logits_BxHxLxL.dtype)
    logits_BxHxLxL = jnp.where(mask_BxL[:, None, None, :], logits_BxHxLxL,
                               jnp.finfo(logits_BxHxLxL.dtype).min)
    probs_BxHxLxL = self.attention_dropout(
        jax.nn.softmax(logits_BxHxLxL, axis=-1))
    mixed_BxLxHxK = jnp.einsum('bhqv,bvhk->bqhk', probs_BxHxLxL,
                               value_BxLxD.reshape(split))
    return self.out(jax.nn.relu(mixed_BxLxHxK.reshape(batch, length, dim)))

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

Initialisation: `pos` and `head` start N(0, 1), as the official
`reset_parameters`. The three Linears (q/k/v as one D x 3D matrix with bias,
the output with bias, `w_ctx` without) are initialised by the model
(`model.linear_init`, models.reinit_linears), not as the official code
(xavier-uniform, the output kaiming-uniform, zero biases).

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

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

# The official clamp before the log.
MASK_FLOOR = 1e-10


class DynamicMaskAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` with a learned soft attention mask."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, max_distance: int, *,
               rngs: nnx.Rngs, attention_dropout: float = 0.1,
               dtype=jnp.float32):
    self.num_heads = num_heads
    self.max_distance = max_distance
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.context = nnx.Linear(dim, 1, use_bias=False, dtype=dtype, rngs=rngs)
    normal = nnx.initializers.normal(stddev=1.0)
    self.forward_position = nnx.Param(normal(rngs.params(), (max_distance,)))
    self.backward_position = nnx.Param(normal(rngs.params(), (max_distance,)))
    self.head = nnx.Param(normal(rngs.params(), (num_heads,)))
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)

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
    query_BxLxHxK, key_BxLxHxK, value_BxLxHxK = (
        attention.split_heads(part_BxLxD, self.num_heads)
        for part_BxLxD in jnp.split(self.qkv(x_BxLxD), 3, -1))
    logits_BxHxLxL = attention.attention_logits(query_BxLxHxK, key_BxLxHxK)
    logits_BxHxLxL += self.log_mask(x_BxLxD).astype(logits_BxHxLxL.dtype)
    probs_BxHxLxL = attention.masked_softmax(
        logits_BxHxLxL, mask_BxL[:, None, None, :], self.attention_dropout)
    mixed_BxLxHxK = attention.mix_values(probs_BxHxLxL, value_BxLxHxK)
    return self.out(jax.nn.relu(attention.merge_heads(mixed_BxLxHxK)))

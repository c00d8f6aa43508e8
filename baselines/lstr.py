"""LSTR-inspired latent bottleneck (after Xu et al., NeurIPS 2021, 2107.03377).

This is not LSTR. LSTR (Long Short-term Transformer) is an online, causal
video model: a long memory of frame features is compressed by learned
queries, and a short "work" window of recent frames, under a causal mask,
reads the compressed memory and is classified frame by frame. None of the
online, causal or two-window parts has a counterpart in a bidirectional
sequence classifier. What transfers is the compression: learned latents
read the whole sequence in two stages and every token then reads the
latents, at a cost of O(L * m) instead of O(L^2):
```
Z1 = stage 1 (16 queries, 1 layer) over x, padding masked
Z2 = stage 2 (32 queries, 2 layers) over Z1
y  = MHA(query = x, key = value = Z2)
```
Source: amazon-science/long-short-term-transformer (899b0c2),
src/rekognition_online_action_detection/models/lstr.py L40-57 (stages of
learned queries, each a TransformerDecoder with a final LayerNorm), L89-106
(stage 1 reads the memory with its key padding mask, later stages read the
previous stage); models/transformer/transformer.py L206-220 (the post-LN
decoder layer: query self-attention, cross-attention, ReLU FFN, each added
then normalised).

Hyperparameters (`config.model.lstr`):
- `stages = '16x1,32x2'`: queries x layers per stage, ENC_MODULE
  `[[16, 1, True], [32, 2, True]]` (config/defaults.py L47-49 and
  configs/THUMOS/LSTR/lstr_long_512_work_8_kinetics_1x.yaml);
- `ffn_ratio = 1.0`: decoder FFN width over the model width; the THUMOS
  config has DIM_FEEDFORWARD 1024 at a 1024-wide model (LINEAR_OUT_FEATURES);
- `dropout = 0.2` (DROPOUT, defaults.py L37 and the THUMOS config), inside
  the stages, their attention included;
- heads: the suite's `model.num_heads` (LSTR: 8 by default, 16 for THUMOS).

Reconstructed (this suite's adaptation, not LSTR's code): the read-out
`y` is a single cross-attention from every token to Z2 (no causal work
window, no decoder self-attention among the tokens: the encoder block around
the mixer supplies the residual, the norm and the MLP) with
`model.attention_dropout`. Learned queries start N(0, 1) as `nn.Embedding`
does; the projections and FFNs are `nnx.Linear` layers initialised as
`model.linear_init` says (not nn.MultiheadAttention's xavier-uniform
in-projection with zero biases).
Padding is masked as a key of stage 1 and never reaches the latents, so
`masks_padding` holds.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError


class CrossAttention(nnx.Module):
  """Multi-head softmax attention of queries over a memory (masked keys)."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               dropout: float, dtype=jnp.float32):
    self.num_heads = num_heads

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))
    self.attention_dropout = Dropout(dropout, rngs=rngs)

  def __call__(self, x_BxQxD, memory_BxMxD, memory_mask_BxM=None):
    def heads(projection, x_BxNxD):
      return attention.split_heads(projection(x_BxNxD), self.num_heads)

    mixed_BxQxHxK = attention.dense_attention(
        heads(self.query, x_BxQxD), heads(self.key, memory_BxMxD),
        heads(self.value, memory_BxMxD),
        None if memory_mask_BxM is None else memory_mask_BxM[:, None],
        self.attention_dropout)
    return self.out(attention.merge_heads(mixed_BxQxHxK))


# The official model's nn.LayerNorm default (flax's is 1e-6).
TORCH_LAYER_NORM_EPS = 1e-5


class LatentLayer(nnx.Module):
  """LSTR's post-LN decoder layer, for the latent queries."""

  def __init__(self, dim: int, num_heads: int, ffn_dim: int, *,
               rngs: nnx.Rngs, dropout: float, dtype=jnp.float32):
    def attention_layer():
      return CrossAttention(dim, num_heads, rngs=rngs, dropout=dropout,
                            dtype=dtype)

    def norm():
      return nnx.LayerNorm(dim, epsilon=TORCH_LAYER_NORM_EPS, dtype=dtype,
                           rngs=rngs)

    def drop():
      return Dropout(dropout, rngs=rngs)

    self.self_attention = attention_layer()
    self.cross_attention = attention_layer()
    self.norms = nnx.List([norm(), norm(), norm()])
    self.drops = nnx.List([drop(), drop(), drop(), drop()])
    self.ffn_in = nnx.Linear(dim, ffn_dim, dtype=dtype, rngs=rngs)
    self.ffn_out = nnx.Linear(ffn_dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, z_BxQxD, memory_BxMxD, memory_mask_BxM):
    norm, drop = self.norms, self.drops
    z_BxQxD = norm[0](z_BxQxD + drop[0](self.self_attention(z_BxQxD,
                                                           z_BxQxD)))
    z_BxQxD = norm[1](z_BxQxD + drop[1](self.cross_attention(
        z_BxQxD, memory_BxMxD, memory_mask_BxM)))
    hidden = drop[3](jax.nn.relu(self.ffn_in(z_BxQxD)))
    return norm[2](z_BxQxD + drop[2](self.ffn_out(hidden)))


class LatentStage(nnx.Module):
  """Learned queries, decoder layers over a memory, a final LayerNorm."""

  def __init__(self, dim: int, num_queries: int, num_layers: int, *,
               rngs: nnx.Rngs, **layer_args):
    self.queries = nnx.Param(jax.random.normal(
        rngs.params(), (num_queries, dim), jnp.float32))
    self.layers = nnx.List([LatentLayer(dim, rngs=rngs, **layer_args)
                            for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(dim, epsilon=TORCH_LAYER_NORM_EPS,
                              dtype=layer_args['dtype'], rngs=rngs)

  def __call__(self, memory_BxMxD, memory_mask_BxM):
    batch, _, dim = memory_BxMxD.shape
    z_BxQxD = jnp.broadcast_to(self.queries[...].astype(memory_BxMxD.dtype),
                               (batch, *self.queries.shape))
    for layer in self.layers:
      z_BxQxD = layer(z_BxQxD, memory_BxMxD, memory_mask_BxM)
    return self.norm(z_BxQxD)


class LSTRMixer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` through a latent bottleneck."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               stages=((16, 1), (32, 2)), ffn_ratio: float = 1.0,
               dropout: float = 0.2, attention_dropout: float = 0.1,
               dtype=jnp.float32):
    layer_args = dict(num_heads=num_heads,
                      ffn_dim=max(1, round(ffn_ratio * dim)),
                      dropout=dropout, dtype=dtype)
    self.stages = nnx.List([
        LatentStage(dim, queries, layers, rngs=rngs, **layer_args)
        for queries, layers in stages])
    self.read = CrossAttention(dim, num_heads, rngs=rngs,
                               dropout=attention_dropout, dtype=dtype)

  @classmethod
  def default_config(cls, config):
    del config  # The same for every task.
    return dict(stages='16x1,32x2', ffn_ratio=1.0, dropout=0.2)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.lstr
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               stages=_parse_stages(own.stages),
               ffn_ratio=own.ffn_ratio, dropout=own.dropout,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    latents, latent_mask = x_BxLxD, mask_BxL
    for stage in self.stages:
      latents, latent_mask = stage(latents, latent_mask), None
    return self.read(x_BxLxD, latents)


def _parse_stages(text: str) -> tuple[tuple[int, int], ...]:
  """`'16x1,32x2'` -> ((16, 1), (32, 2)): queries x layers per stage."""
  try:
    stages = tuple(tuple(int(n) for n in stage.split('x'))
                   for stage in text.split(','))
  except ValueError:
    stages = ()
  if not stages or any(len(stage) != 2 or min(stage) < 1
                       for stage in stages):
    raise UserError(f'model.lstr.stages={text!r}: give queries x layers per '
                    "stage, comma-separated, e.g. '16x1,32x2'")
  return stages

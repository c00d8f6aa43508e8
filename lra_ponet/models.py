"""The shared encoder, its classifier heads and the registry of token mixers.

Every model of the suite is the same pre-LN encoder (token + learned position
embeddings, blocks of mixer then MLP, final LayerNorm, pooling) around a token
mixer chosen by name. A mixer is an `nnx.Module` called as
`mixer(x_BxLxD, mask_BxL) -> BxLxD` (mask True at real tokens), built by a
`from_config(model_config, *, rngs, layer_index)` classmethod (`layer_index`
counts blocks from 0, for mixers whose settings change with depth), with a
`masks_padding` attribute that says whether padding content is kept out of
real positions.

A mixer with hyperparameters of its own declares them in a classmethod
`default_config(config) -> dict` (it may read the task config, e.g. the
padded length); they become the fields of `config.model.<name>`, present only
when that mixer is chosen, so `--config.model.<name>.FIELD=...` overrides
them. A mixer that draws random numbers (hashing, random features) takes its
keys from the `mixer` stream of `rngs` (`rngs["mixer"].fork()`), which the
trainer seeds from `config.seed`.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from baselines import cluster_former
from baselines import fnet
from baselines import lstr
from baselines import pyramidion
from baselines import transformer
from lra_ponet import ponet
from lra_ponet.errors import UserError

MIXERS = {
    'ponet': ponet.PoNetMixer,
    'transformer': transformer.SelfAttention,
    'fnet': fnet.FNetMixer,
    'cluster_former': cluster_former.ClusterFormerAttention,
    'pyramidion': pyramidion.PyramidionAttention,
    'lstr': lstr.LSTRMixer,
}

POOLINGS = ('mean', 'cls')
# 'padded_length' divides the sum by L with padding rows zeroed, as the
# official PoNet and LRA code do; 'real_tokens' by the number of real tokens.
MEAN_OVER = ('padded_length', 'real_tokens')


def mixer_class(name: str):
  if name not in MIXERS:
    raise UserError(f'unknown model {name!r}; choose one of '
                    f'{", ".join(sorted(MIXERS))}')
  return MIXERS[name]


def configure_mixer(config, name: str):
  """Sets `config.model.name` and adds the mixer's own fields, if it has any."""
  mixer = mixer_class(name)
  config.model.name = name
  if hasattr(mixer, 'default_config'):
    config.model[name] = ml_collections.ConfigDict(
        mixer.default_config(config))
  return config


def _embedding_init():
  return nnx.initializers.normal(stddev=0.02)


class EncoderBlock(nnx.Module):
  """`x = x + Dropout(Mixer(LN(x)))`, then `x = x + MLP(LN(x))`.

  `pool`, when not None, is the mixer's sequence-shortening step that the
  encoder runs after the block (DeepPyramidion).
  """

  def __init__(self, model_config, *, rngs: nnx.Rngs, layer_index: int):
    dim, dtype = model_config.dim, jnp.dtype(model_config.dtype)
    self.mixer_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    mixer = mixer_class(model_config.name)
    self.mixer = mixer.from_config(model_config, rngs=rngs,
                                   layer_index=layer_index)
    # A mixer class with `pool_from_config` shortens the sequence after each
    # block: `pool(x_BxLxD, mask_BxL)` returns a shorter x and its mask.
    self.pool = (mixer.pool_from_config(model_config, rngs=rngs,
                                        layer_index=layer_index)
                 if hasattr(mixer, 'pool_from_config') else None)
    self.mixer_dropout = nnx.Dropout(model_config.dropout, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, model_config.mlp_dim, dtype=dtype,
                             rngs=rngs)
    self.mlp_hidden_dropout = nnx.Dropout(model_config.dropout, rngs=rngs)
    self.mlp_out = nnx.Linear(model_config.mlp_dim, dim, dtype=dtype,
                              rngs=rngs)
    self.mlp_out_dropout = nnx.Dropout(model_config.dropout, rngs=rngs)

  def __call__(self, x_BxLxD, mask_BxL):
    mixed_BxLxD = self.mixer(self.mixer_norm(x_BxLxD), mask_BxL)
    x_BxLxD = x_BxLxD + self.mixer_dropout(mixed_BxLxD)
    hidden_BxLxF = jax.nn.gelu(self.mlp_in(self.mlp_norm(x_BxLxD)),
                               approximate=False)
    hidden_BxLxD = self.mlp_out(self.mlp_hidden_dropout(hidden_BxLxF))
    return x_BxLxD + self.mlp_out_dropout(hidden_BxLxD)


class Encoder(nnx.Module):
  """Token ids `tokens_BxL` and `mask_BxL` -> pooled features `BxD`."""

  def __init__(self, model_config, vocab_size: int, max_len: int, *,
               rngs: nnx.Rngs):
    if model_config.pooling not in POOLINGS:
      raise UserError(f'unknown model.pooling {model_config.pooling!r}; use '
                      f'one of {", ".join(POOLINGS)}')
    if model_config.mean_over not in MEAN_OVER:
      raise UserError(f'unknown model.mean_over {model_config.mean_over!r}; '
                      f'use one of {", ".join(MEAN_OVER)}')
    dim, dtype = model_config.dim, jnp.dtype(model_config.dtype)
    self.pooling = model_config.pooling
    self.mean_over = model_config.mean_over
    self.dtype = dtype
    self.token_embed = nnx.Embed(vocab_size, dim, dtype=dtype,
                                 embedding_init=_embedding_init(), rngs=rngs)
    num_positions = max_len + (self.pooling == 'cls')
    self.position_embed = nnx.Embed(num_positions, dim, dtype=dtype,
                                    embedding_init=_embedding_init(),
                                    rngs=rngs)
    if self.pooling == 'cls':
      self.cls_token = nnx.Param(_embedding_init()(rngs.params(), (1, 1, dim)))
    self.embed_dropout = nnx.Dropout(model_config.dropout, rngs=rngs)
    self.blocks = nnx.List([
        EncoderBlock(model_config, rngs=rngs, layer_index=index)
        for index in range(model_config.num_layers)])
    self.final_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, tokens_BxL, mask_BxL):
    x_BxLxD = self.token_embed(tokens_BxL)
    if self.pooling == 'cls':
      batch, _, dim = x_BxLxD.shape
      cls_Bx1xD = jnp.broadcast_to(self.cls_token[...].astype(self.dtype),
                                   (batch, 1, dim))
      x_BxLxD = jnp.concatenate([cls_Bx1xD, x_BxLxD], axis=1)
      mask_BxL = jnp.pad(mask_BxL, ((0, 0), (1, 0)), constant_values=True)
    length = x_BxLxD.shape[1]
    x_BxLxD = x_BxLxD + self.position_embed(jnp.arange(length))[None]
    x_BxLxD = self.embed_dropout(x_BxLxD)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, mask_BxL)
      if block.pool is not None:
        x_BxLxD, mask_BxL = block.pool(x_BxLxD, mask_BxL)
    x_BxLxD = jnp.where(mask_BxL[:, :, None], self.final_norm(x_BxLxD), 0.0)
    if self.pooling == 'cls':
      return x_BxLxD[:, 0]
    if self.mean_over == 'real_tokens':
      count_Bx1 = mask_BxL.sum(axis=1, keepdims=True)
      return x_BxLxD.sum(axis=1) / jnp.maximum(count_Bx1, 1)
    return x_BxLxD.mean(axis=1)


class MLPHead(nnx.Module):
  """Linear(in -> 2D), ReLU, Linear(2D -> classes)."""

  def __init__(self, in_features: int, dim: int, num_classes: int, *,
               rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, 2 * dim, rngs=rngs)
    self.logits = nnx.Linear(2 * dim, num_classes, rngs=rngs)

  def __call__(self, features_BxF):
    return self.logits(jax.nn.relu(self.hidden(features_BxF)))


class Classifier(nnx.Module):
  """One sequence per example: `model(tokens_BxL, mask_BxL) -> logits_BxC`."""

  def __init__(self, model_config, vocab_size: int, max_len: int,
               num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(model_config, vocab_size, max_len, rngs=rngs)
    self.head = MLPHead(model_config.dim, model_config.dim, num_classes,
                        rngs=rngs)

  def __call__(self, tokens_BxL, mask_BxL):
    features_BxD = self.encoder(tokens_BxL, mask_BxL)
    return self.head(features_BxD.astype(jnp.float32))


def pair_features(u_BxD, v_BxD):
  """The two-tower matching features `[u, v, u*v, u-v]`."""
  return jnp.concatenate([u_BxD, v_BxD, u_BxD * v_BxD, u_BxD - v_BxD],
                         axis=-1)


class PairClassifier(nnx.Module):
  """Two documents per example, one shared encoder (the retrieval task).

  `model(tokens_Bx2xL, mask_Bx2xL) -> logits_BxC`.
  """

  def __init__(self, model_config, vocab_size: int, max_len: int,
               num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(model_config, vocab_size, max_len, rngs=rngs)
    self.head = MLPHead(4 * model_config.dim, model_config.dim, num_classes,
                        rngs=rngs)

  def __call__(self, tokens_Bx2xL, mask_Bx2xL):
    batch, _, length = tokens_Bx2xL.shape
    both_2BxD = self.encoder(tokens_Bx2xL.reshape(2 * batch, length),
                             mask_Bx2xL.reshape(2 * batch, length))
    both_Bx2xD = both_2BxD.reshape(batch, 2, -1).astype(jnp.float32)
    return self.head(pair_features(both_Bx2xD[:, 0], both_Bx2xD[:, 1]))


def build_model(model_config, task_info, max_len: int, *, rngs: nnx.Rngs):
  """The classifier for a task: paired tasks get the two-tower head."""
  model_class = PairClassifier if task_info.paired else Classifier
  return model_class(model_config, task_info.vocab_size, max_len,
                     task_info.num_classes, rngs=rngs)


def count_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

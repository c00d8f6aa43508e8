"""The shared encoder, its classifier heads and the registry of token mixers.

Every model of the suite is the same pre-LN encoder (token + position
embeddings, blocks of mixer then MLP, final LayerNorm, pooling) around a token
mixer chosen by name from `MIXERS`; what a mixer provides is
`contract.TokenMixer`. A mixer's own hyperparameters are the fields of
`config.model.<name>`, present only when that mixer is chosen
(`configure_mixer`). A mixer that draws random numbers takes its keys from
the `mixer` stream of `rngs`, which the trainer seeds from `config.seed`.

Initialisation follows `model.linear_init` for every `nnx.Linear` of the
model, those inside mixers included: `build_model` draws each Linear's
kernel and bias afresh from the `params` stream (see `LINEAR_INITS`).
"""

import importlib
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lra_ponet import jax_compat
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

# Tracing a model on jax < 0.12 otherwise slows with the model's size.
jax_compat.drop_the_trace_walk()

# name -> 'module:Class' of a class following `contract.TokenMixer`; the
# module is imported when the mixer is first used.
MIXERS = {
    'ponet': 'lra_ponet.ponet:PoNetMixer',
    'transformer': 'lra_ponet.baselines.transformer:SelfAttention',
    'fnet': 'lra_ponet.baselines.fnet:FNetMixer',
    'dman': 'lra_ponet.baselines.dman:DynamicMaskAttention',
    'lsra': 'lra_ponet.baselines.lsra:LongShortRangeAttention',
    'poolingformer': 'lra_ponet.baselines.poolingformer:Poolingformer',
    'bpt': 'lra_ponet.baselines.bpt:BinaryPartitionAttention',
    'longformer': 'lra_ponet.baselines.longformer:LongformerAttention',
    'bigbird': 'lra_ponet.baselines.bigbird:BigBirdAttention',
    'reformer': 'lra_ponet.baselines.reformer:LSHSelfAttention',
    'linear_transformer':
        'lra_ponet.baselines.linear_transformer:LinearAttention',
    'linformer': 'lra_ponet.baselines.linformer:Linformer',
    'nystromformer': 'lra_ponet.baselines.nystromformer:Nystromformer',
    'performer': 'lra_ponet.baselines.performer:Performer',
    's4d': 'lra_ponet.baselines.s4d:S4D',
    'cluster_former':
        'lra_ponet.baselines.cluster_former:ClusterFormerAttention',
    'pyramidion': 'lra_ponet.baselines.pyramidion:PyramidionAttention',
    'lstr': 'lra_ponet.baselines.lstr:LSTRMixer',
}

# 'cls' reads a learned vector prepended to the sequence; 'first' reads the
# output at the first token, which is what LRA's dual encoder calls CLS
# pooling (it prepends nothing).
POOLINGS = ('mean', 'cls', 'first')
# 'padded_length' divides the sum by L with padding rows zeroed, as the
# official PoNet code does (LRA's also divides by L, but keeps the outputs at
# padding rows); 'real_tokens' by the number of real tokens.
MEAN_OVER = ('padded_length', 'real_tokens')
# 'pytorch': weights and biases uniform in +-1/sqrt(fan_in), PyTorch's
# nn.Linear default (the official PoNet code). 'lra': the official LRA
# Transformer's, Xavier-uniform kernels and N(0, 1e-6) biases in the encoder,
# flax's default (LeCun-normal kernels, zero biases) in the classifier head.
# 'flax': flax's default everywhere.
LINEAR_INITS = ('pytorch', 'lra', 'flax')
# 'learned': N(0, 0.02), trained; 'sinusoidal': the fixed sin/cos table of
# LRA's `learn_pos_emb=False`.
POSITION_EMBEDDINGS = ('learned', 'sinusoidal')
# 'ponet': Linear(F -> 2D), ReLU, Linear(2D -> C) (the official PoNet code);
# 'lra': Dense(mlp_dim), ReLU, Dense(C), and for two documents Dense(mlp_dim),
# ReLU, Dense(mlp_dim // 2), ReLU, Dense(C) (LRA's classifier_head(_dual)).
HEADS = ('ponet', 'lra')
# Features of a document pair: 'nli' = [u, v, u*v, u-v] (the papers), 'concat'
# = [u, v] (the default `interaction=None` of LRA's code).
PAIR_FEATURES = ('nli', 'concat')


def mixer_class(name: str):
  """The class of mixer `name`, its module imported on first use."""
  if name not in MIXERS:
    raise UserError(f'unknown model {name!r}; choose one of '
                    f'{", ".join(sorted(MIXERS))}')
  module, class_name = MIXERS[name].split(':')
  return getattr(importlib.import_module(module), class_name)


def configure_mixer(config, name: str):
  """Sets `config.model.name` and the chosen mixer's own fields.

  They are `config.model.<name>`: the mixer's `default_config`, under the
  values the task config set for that mixer; what the task set for other
  mixers is dropped, so only the chosen mixer's fields can be overridden.
  """
  mixer = mixer_class(name)
  task_settings = {other: config.model[other] for other in MIXERS
                   if other in config.model}
  for other in task_settings:
    del config.model[other]
  config.model.name = name
  # The task's ConfigDict itself is kept: its fields may be references
  # (Text's segment_num follows padded_len).
  own = task_settings.get(name, ml_collections.ConfigDict())
  defaults = (mixer.default_config(config)
              if hasattr(mixer, 'default_config') else {})
  for field, value in defaults.items():
    if field not in own:
      own[field] = value
  if own:
    config.model[name] = own
  return config


def _pytorch_uniform(key, shape, fan_in):
  bound = 1 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def reinit_linears(module, scheme: str, rngs: nnx.Rngs):
  """Redraws the kernel and bias of every nnx.Linear under `module`.

  `scheme` is a LINEAR_INITS name; 'flax' keeps the layers as built. Each
  Linear takes one key of the `params` stream, in the module tree's order.
  """
  if scheme == 'flax':
    return
  for _, layer in nnx.iter_modules(module):
    if not isinstance(layer, nnx.Linear):
      continue
    kernel_key, bias_key = jax.random.split(rngs.params())
    shape = layer.kernel.shape
    bias_shape = (shape[1],)
    if scheme == 'pytorch':
      kernel = _pytorch_uniform(kernel_key, shape, fan_in=shape[0])
      bias = _pytorch_uniform(bias_key, bias_shape, fan_in=shape[0])
    else:
      kernel = nnx.initializers.xavier_uniform()(kernel_key, shape)
      bias = 1e-6 * jax.random.normal(bias_key, bias_shape)
    layer.kernel[...] = kernel.astype(layer.kernel.dtype)
    if layer.bias is not None:
      layer.bias[...] = bias.astype(layer.bias.dtype)


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
  """LRA's fixed position table: sin on even channels, cos on odd ones."""
  position_Lx1 = np.arange(length)[:, None]
  rate_H = np.exp(np.arange(0, dim, 2) * -(np.log(10000.0) / dim))
  table_LxD = np.zeros((length, dim), np.float32)
  table_LxD[:, 0::2] = np.sin(position_Lx1 * rate_H)
  table_LxD[:, 1::2] = np.cos(position_Lx1 * rate_H[:dim // 2])
  return table_LxD
def shared_mixer_params(model_config, length: int, *, rngs: nnx.Rngs):
  """Parameters one mixer object shares between all layers, or None.

  A mixer whose layers share parameters (Linformer's length projection)
  defines a classmethod `shared_params(model_config, length, *, rngs) ->
  dict`; the encoder calls it once, with the longest length it will see, and
  passes the dict as keyword arguments to every layer's `from_config`.
  """
  mixer = mixer_class(model_config.name)
  if not hasattr(mixer, 'shared_params'):
    return None
  return mixer.shared_params(model_config, length, rngs=rngs)


class EncoderBlock(nnx.Module):
  """`x = x + Dropout(Mixer(LN(x)))`, then `x = x + MLP(LN(x))`.

  `pool`, when not None, is the mixer's sequence-shortening step that the
  encoder runs after the block (DeepPyramidion).
  """

  def __init__(self, model_config, *, rngs: nnx.Rngs, layer_index: int,
               shared=None):
    dim, dtype = model_config.dim, jnp.dtype(model_config.dtype)
    epsilon = model_config.layer_norm_epsilon
    self.gelu_approximate = model_config.gelu_approximate
    self.mixer_norm = nnx.LayerNorm(dim, epsilon=epsilon, dtype=dtype,
                                    rngs=rngs)
    mixer = mixer_class(model_config.name)
    self.mixer = mixer.from_config(model_config, rngs=rngs,
                                   layer_index=layer_index, **(shared or {}))
    # A mixer class with `pool_from_config` shortens the sequence after each
    # block: `pool(x_BxLxD, mask_BxL)` returns a shorter x and its mask.
    self.pool = (mixer.pool_from_config(model_config, rngs=rngs,
                                        layer_index=layer_index)
                 if hasattr(mixer, 'pool_from_config') else None)
    self.mixer_dropout = Dropout(model_config.dropout, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(dim, epsilon=epsilon, dtype=dtype,
                                  rngs=rngs)
    self.mlp_in = nnx.Linear(dim, model_config.mlp_dim, dtype=dtype,
                             rngs=rngs)
    self.mlp_hidden_dropout = Dropout(model_config.dropout, rngs=rngs)
    self.mlp_out = nnx.Linear(model_config.mlp_dim, dim, dtype=dtype,
                              rngs=rngs)
    self.mlp_out_dropout = Dropout(model_config.dropout, rngs=rngs)

  def __call__(self, x_BxLxD, mask_BxL):
    mixed_BxLxD = self.mixer(self.mixer_norm(x_BxLxD), mask_BxL)
    x_BxLxD = x_BxLxD + self.mixer_dropout(mixed_BxLxD)
    hidden_BxLxF = jax.nn.gelu(self.mlp_in(self.mlp_norm(x_BxLxD)),
                               approximate=self.gelu_approximate)
    hidden_BxLxD = self.mlp_out(self.mlp_hidden_dropout(hidden_BxLxF))
    return x_BxLxD + self.mlp_out_dropout(hidden_BxLxD)


class Encoder(nnx.Module):
  """Token ids `tokens_BxL` and `mask_BxL` -> pooled features `BxD`."""

  def __init__(self, model_config, vocab_size: int, max_len: int, *,
               rngs: nnx.Rngs):
    dim, dtype = model_config.dim, jnp.dtype(model_config.dtype)
    self.pooling = model_config.pooling
    self.mean_over = model_config.mean_over
    self.dtype = dtype
    self.token_embed = nnx.Embed(
        vocab_size, dim, dtype=dtype, rngs=rngs,
        embedding_init=nnx.initializers.normal(
            model_config.embedding_init_std))
    num_positions = max_len + (self.pooling == 'cls')
    if model_config.position_embedding == 'learned':
      self.position_embed = nnx.Embed(
          num_positions, dim, dtype=dtype, rngs=rngs,
          embedding_init=nnx.initializers.normal(0.02))
    else:
      self.position_embed = None
    if self.pooling == 'cls':
      # LRA starts its CLS vector at zero; PoNet's code has none.
      cls_init = (nnx.initializers.zeros
                  if model_config.linear_init == 'lra'
                  else nnx.initializers.normal(0.02))
      self.cls_token = nnx.Param(cls_init(rngs.params(), (1, 1, dim)))
    self.embed_dropout = Dropout(model_config.dropout, rngs=rngs)
    shared = shared_mixer_params(model_config, num_positions, rngs=rngs)
    self.blocks = nnx.List([
        EncoderBlock(model_config, rngs=rngs, layer_index=index,
                     shared=shared)
        for index in range(model_config.num_layers)])
    self.final_norm = nnx.LayerNorm(
        dim, epsilon=model_config.layer_norm_epsilon, dtype=dtype, rngs=rngs)

  def _positions(self, length: int, dim: int):
    if self.position_embed is None:
      return jnp.asarray(sinusoidal_table(length, dim), self.dtype)
    return self.position_embed(jnp.arange(length))

  def __call__(self, tokens_BxL, mask_BxL):
    x_BxLxD = self.token_embed(tokens_BxL)
    if self.pooling == 'cls':
      batch, _, dim = x_BxLxD.shape
      cls_Bx1xD = jnp.broadcast_to(self.cls_token[...].astype(self.dtype),
                                   (batch, 1, dim))
      x_BxLxD = jnp.concatenate([cls_Bx1xD, x_BxLxD], axis=1)
      mask_BxL = jnp.pad(mask_BxL, ((0, 0), (1, 0)), constant_values=True)
    _, length, dim = x_BxLxD.shape
    x_BxLxD = x_BxLxD + self._positions(length, dim)[None]
    x_BxLxD = self.embed_dropout(x_BxLxD)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, mask_BxL)
      if block.pool is not None:
        x_BxLxD, mask_BxL = block.pool(x_BxLxD, mask_BxL)
    x_BxLxD = jnp.where(mask_BxL[:, :, None], self.final_norm(x_BxLxD), 0.0)
    if self.pooling in ('cls', 'first'):
      return x_BxLxD[:, 0]
    if self.mean_over == 'real_tokens':
      count_Bx1 = mask_BxL.sum(axis=1, keepdims=True)
      return x_BxLxD.sum(axis=1) / jnp.maximum(count_Bx1, 1)
    return x_BxLxD.mean(axis=1)


class MLPHead(nnx.Module):
  """ReLU MLP `in_features -> widths... -> num_classes`."""

  def __init__(self, in_features: int, widths, num_classes: int, *,
               rngs: nnx.Rngs):
    sizes = [in_features, *widths, num_classes]
    self.layers = nnx.List([nnx.Linear(size_in, size_out, rngs=rngs)
                            for size_in, size_out in zip(sizes, sizes[1:])])

  def __call__(self, features_BxF):
    for layer in self.layers[:-1]:
      features_BxF = jax.nn.relu(layer(features_BxF))
    return self.layers[-1](features_BxF)


def head_widths(model_config, paired: bool):
  """Hidden widths of the classifier head (see HEADS)."""
  if model_config.head == 'ponet':
    return [2 * model_config.dim]
  if paired:
    return [model_config.mlp_dim, model_config.mlp_dim // 2]
  return [model_config.mlp_dim]


class Classifier(nnx.Module):
  """One sequence per example: `model(tokens_BxL, mask_BxL) -> logits_BxC`."""

  def __init__(self, model_config, vocab_size: int, max_len: int,
               num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(model_config, vocab_size, max_len, rngs=rngs)
    self.head = MLPHead(model_config.dim, head_widths(model_config, False),
                        num_classes, rngs=rngs)

  def __call__(self, tokens_BxL, mask_BxL):
    features_BxD = self.encoder(tokens_BxL, mask_BxL)
    return self.head(features_BxD.astype(jnp.float32))


def pair_features(u_BxD, v_BxD, kind: str = 'nli'):
  """The two-tower matching features (see PAIR_FEATURES)."""
  if kind == 'concat':
    return jnp.concatenate([u_BxD, v_BxD], axis=-1)
  return jnp.concatenate([u_BxD, v_BxD, u_BxD * v_BxD, u_BxD - v_BxD],
                         axis=-1)


class PairClassifier(nnx.Module):
  """Two documents per example, one shared encoder (the retrieval task).

  `model(tokens_Bx2xL, mask_Bx2xL) -> logits_BxC`.
  """

  def __init__(self, model_config, vocab_size: int, max_len: int,
               num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(model_config, vocab_size, max_len, rngs=rngs)
    self.pair_features = model_config.pair_features
    width = (4 if self.pair_features == 'nli' else 2) * model_config.dim
    self.head = MLPHead(width, head_widths(model_config, True), num_classes,
                        rngs=rngs)

  def __call__(self, tokens_Bx2xL, mask_Bx2xL):
    batch, _, length = tokens_Bx2xL.shape
    both_2BxD = self.encoder(tokens_Bx2xL.reshape(2 * batch, length),
                             mask_Bx2xL.reshape(2 * batch, length))
    both_Bx2xD = both_2BxD.reshape(batch, 2, -1).astype(jnp.float32)
    return self.head(pair_features(both_Bx2xD[:, 0], both_Bx2xD[:, 1],
                                   self.pair_features))


def build_model(model_config, task_info, max_len: int, *, rngs: nnx.Rngs):
  """The classifier for a task: paired tasks get the two-tower head.

  Every nnx.Linear is then initialised as `model_config.linear_init` says
  (the 'lra' scheme keeps flax's default in the head, as LRA's code does),
  and every dropout draws its masks as `model_config.dropout_mask_bits`
  says.
  Unknown choices of the shared fields are refused first, as a run's
  validation does, since the branches below would read them as a default.
  """
  from lra_ponet import validation  # pylint: disable=g-import-not-at-top
  validation.check_model_fields(model_config)  # It imports this module.
  model_class = PairClassifier if task_info.paired else Classifier
  model = model_class(model_config, task_info.vocab_size, max_len,
                      task_info.num_classes, rngs=rngs)
  scheme = model_config.linear_init
  reinit_linears(model.encoder, scheme, rngs)
  reinit_linears(model.head, 'flax' if scheme == 'lra' else scheme, rngs)
  set_dropout_mask_bits(model, model_config.dropout_mask_bits)
  return model


def set_dropout_mask_bits(module, mask_bits: int):
  """Every `dropout.Dropout` in `module` draws masks of `mask_bits` bits."""
  for _, submodule in nnx.iter_modules(module):
    if isinstance(submodule, Dropout):
      submodule.mask_bits = mask_bits


def count_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

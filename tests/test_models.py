"""The shared encoder, the mixer registry and padding masks of every mixer."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model_config
from lra_ponet import models
from lra_ponet.errors import UserError
from lra_ponet.input_pipeline import TaskInfo


def _tokens_and_mask(seed=0):
  rng = np.random.default_rng(seed)
  tokens_BxL = rng.integers(1, 20, size=(3, 14))
  lengths = np.array([14, 9, 3])
  mask_BxL = np.arange(14)[None] < lengths[:, None]
  return np.where(mask_BxL, tokens_BxL, 0), mask_BxL


MASKING_MIXERS = [name for name in models.MIXERS
                  if models.mixer_class(name).masks_padding]
HOOKS = ('default_config', 'shared_params', 'pool_from_config')


@pytest.mark.parametrize('name', list(models.MIXERS))
def test_every_registered_mixer_follows_the_contract(name):
  mixer = models.mixer_class(name)
  assert isinstance(mixer.masks_padding, bool)
  assert callable(mixer.from_config)
  for hook in HOOKS:
    assert callable(getattr(mixer, hook, print)), hook
  groups = getattr(mixer, 'param_groups', {})
  assert all(isinstance(names, tuple) for names in groups.values())


def test_fnet_is_the_one_mixer_that_mixes_padding_in():
  assert sorted(set(models.MIXERS) - set(MASKING_MIXERS)) == ['fnet']
  with pytest.raises(UserError, match='unknown model .mamba.; choose one of '
                     '.*fnet.*ponet'):
    models.mixer_class('mamba')


def test_mixer_modules_are_imported_only_when_used():
  code = ('import sys; from lra_ponet import models, tasks; '
          'tasks.get_config("listops", "ponet", "fnet"); '
          'print(sorted(m for m in sys.modules '
          'if m.startswith("lra_ponet.baselines.")))')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, check=True)
  assert done.stdout.split() == ["['lra_ponet.baselines.fnet']"]


# Mean and CLS pooling for every masking mixer (CLS adds a position, which
# length-bound mixers must take); the mean's denominator, which does not
# depend on the mixer, for the PoNet mixer alone.
POOLINGS = [(name, 'mean', 'padded_length') for name in MASKING_MIXERS] + [
    (name, 'cls', 'padded_length') for name in MASKING_MIXERS] + [
        ('ponet', 'mean', 'real_tokens')]


@pytest.mark.parametrize('name,pooling,mean_over', POOLINGS)
def test_padding_content_never_changes_logits(name, pooling, mean_over):
  config = tiny_model_config(name, short=True, pooling=pooling,
                             mean_over=mean_over)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  model.eval()
  tokens_BxL, mask_BxL = _tokens_and_mask()
  other_BxL = np.where(mask_BxL, tokens_BxL,
                       np.random.default_rng(7).integers(1, 32, (3, 14)))
  twin = nnx.clone(model)  # The same random draws (e.g. hashing) in both.
  forward = nnx.jit(lambda model, tokens_BxL: model(tokens_BxL, mask_BxL))
  np.testing.assert_allclose(forward(model, other_BxL),
                             forward(twin, tokens_BxL), rtol=1e-5,
                             atol=1e-5)


def test_mean_pooling_denominators():
  config = tiny_model_config('ponet', num_layers=0)
  encoder = models.Encoder(config, 32, 14, rngs=nnx.Rngs(0))
  encoder.eval()
  tokens_BxL, mask_BxL = _tokens_and_mask()
  over_length = np.asarray(encoder(tokens_BxL, mask_BxL))
  encoder.mean_over = 'real_tokens'
  over_tokens = np.asarray(encoder(tokens_BxL, mask_BxL))
  ratio = mask_BxL.sum(1, keepdims=True) / 14
  np.testing.assert_allclose(over_length, over_tokens * ratio, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('name', sorted(models.MIXERS))
def test_every_mixer_pairs_each_example_with_its_own_documents(name):
  """Two-tower logits: the head on the features of that example's pair.

  The pair head folds both documents into one batch for the encoder and
  back; a mix-up of rows would pair documents of other examples.
  """
  config = tiny_model_config(name, short=True)
  tokens_BxL, mask_BxL = _tokens_and_mask()
  pair = models.build_model(config, TaskInfo('t', 2, 32, paired=True), 14,
                            rngs=nnx.Rngs(0))
  pair.eval()
  # Each call from the same random state: Reformer draws its hashing
  # rotations (shared by the batch) at every call.
  first_copy, second_copy = nnx.clone(pair), nnx.clone(pair)
  second_BxL, second_mask_BxL = tokens_BxL[[1, 2, 0]], mask_BxL[[1, 2, 0]]
  # Jitted: a compiled program is much faster than the forward op by op.
  logits_Bx2 = nnx.jit(lambda model, *both: model(*both))(
      pair, np.stack([tokens_BxL, second_BxL], axis=1),
      np.stack([mask_BxL, second_mask_BxL], axis=1))
  encode = nnx.jit(lambda model, *one: model.encoder(*one))
  u_BxD = encode(first_copy, tokens_BxL, mask_BxL)
  v_BxD = encode(second_copy, second_BxL, second_mask_BxL)
  expected_Bx2 = pair.head(models.pair_features(u_BxD, v_BxD,
                                                pair.pair_features))
  assert np.isfinite(logits_Bx2).all()
  np.testing.assert_allclose(logits_Bx2, expected_Bx2, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training():
  config = tiny_model_config('ponet')
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  tokens_BxL, mask_BxL = _tokens_and_mask()
  assert not np.allclose(model(tokens_BxL, mask_BxL),
                         model(tokens_BxL, mask_BxL))
  model.eval()
  np.testing.assert_array_equal(model(tokens_BxL, mask_BxL),
                                model(tokens_BxL, mask_BxL))


def test_cudnn_attention_refused_off_gpu():
  config = tiny_model_config('transformer', dtype='bfloat16',
                             transformer=dict(attention='cudnn'))
  with pytest.raises(UserError, match='attention=xla'):
    models.build_model(config, TaskInfo('t', 5, 32), 14, rngs=nnx.Rngs(0))


# Initialisation and LayerNorm epsilon, as the presets record them.


def _linears(model):
  return [(path, layer) for path, layer in nnx.iter_modules(model)
          if isinstance(layer, nnx.Linear)]


@pytest.mark.parametrize('name', sorted(models.MIXERS))
def test_pytorch_init_of_every_linear_and_embeddings(name):
  config = tiny_model_config(name, dim=64, num_heads=2, mlp_dim=128)
  assert (config.linear_init, config.layer_norm_epsilon) == ('pytorch', 1e-5)
  model = models.build_model(config, TaskInfo('t', 5, 512), 1024,
                             rngs=nnx.Rngs(0))
  linears = _linears(model)
  assert len(linears) >= 2 * 2 + 2  # MLPs of both blocks and the head.
  for path, layer in linears:
    bound = 1 / np.sqrt(layer.kernel.shape[0])  # 1 / sqrt(fan_in).
    kernel = np.asarray(layer.kernel[...])
    assert 0.9 * bound < np.abs(kernel).max() <= bound, path
    if layer.bias is not None:  # Some mixers' projections have none.
      bias = np.asarray(layer.bias[...])
      assert np.abs(bias).max() <= bound and bias.all(), path  # Not zeros.
      if bias.size >= 16:
        assert 0.2 * bound < np.abs(bias).max(), path
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.1,
                               err_msg=str(path))
  encoder = model.encoder
  for table in (encoder.token_embed.embedding,
                encoder.position_embed.embedding):
    np.testing.assert_allclose(np.asarray(table[...]).std(), 0.02,
                               rtol=0.05)
  norms = [(path, layer) for path, layer in nnx.iter_modules(model)
           if isinstance(layer, nnx.LayerNorm)]
  # Two per block and the final one; a mixer may have its own inside.
  assert len([path for path, _ in norms if 'mixer' not in path]) == 2 * 2 + 1
  assert {norm.epsilon for _, norm in norms} == {1e-5}


def test_layer_norm_epsilon_reaches_the_maths():
  config = tiny_model_config('fnet', num_layers=0, pooling='first')
  encoder = models.Encoder(config, 32, 4, rngs=nnx.Rngs(0))
  encoder.eval()
  encoder.token_embed.embedding[...] = jnp.zeros((32, 16))
  encoder.position_embed.embedding[...] = jnp.zeros((4, 16)).at[0, 0].set(
      0.004)
  x_D = np.zeros(16)
  x_D[0] = 0.004
  centred_D = x_D - x_D.mean()
  expected_D = centred_D / np.sqrt((centred_D**2).mean() + 1e-5)
  np.testing.assert_allclose(encoder(np.ones((1, 4), int),
                                     np.ones((1, 4), bool))[0],
                             expected_D, rtol=1e-4)


def test_lra_init_xavier_encoder_flax_head_unit_embeddings():
  config = tiny_model_config('transformer', dim=64, num_heads=2, mlp_dim=128,
                             linear_init='lra', embedding_init_std=1.0,
                             head='lra', transformer=dict(attention_bias=False),
                             position_embedding='sinusoidal', pooling='cls')
  model = models.build_model(config, TaskInfo('t', 5, 512), 1024,
                             rngs=nnx.Rngs(0))
  for path, layer in _linears(model.encoder):
    fan_in, fan_out = layer.kernel.shape
    bound = np.sqrt(6 / (fan_in + fan_out))
    kernel = np.asarray(layer.kernel[...])
    assert bound * 0.8 < np.abs(kernel).max() <= bound, path
    if path[-2] == 'mixer':
      assert layer.bias is None, path  # LRA's q, k, v, out have none.
    else:
      assert 0 < np.abs(np.asarray(layer.bias[...])).max() < 1e-5, path
  for path, layer in _linears(model.head):
    np.testing.assert_allclose(np.asarray(layer.kernel[...]).std(),
                               1 / np.sqrt(layer.kernel.shape[0]), rtol=0.2)
    assert not np.asarray(layer.bias[...]).any(), path
  np.testing.assert_allclose(
      np.asarray(model.encoder.token_embed.embedding[...]).std(), 1.0,
      rtol=0.05)
  assert model.encoder.position_embed is None
  assert not np.asarray(model.encoder.cls_token[...]).any()


def test_sinusoidal_positions_are_lra_table():
  table_LxD = models.sinusoidal_table(50, 6)
  for position in (0, 1, 49):
    for i in range(3):
      angle = position / 10000**(2 * i / 6)
      np.testing.assert_allclose(table_LxD[position, 2 * i], np.sin(angle),
                                 atol=1e-6)
      np.testing.assert_allclose(table_LxD[position, 2 * i + 1],
                                 np.cos(angle), atol=1e-6)
  config = tiny_model_config('fnet', num_layers=0, pooling='first',
                             position_embedding='sinusoidal')
  encoder = models.Encoder(config, 32, 14, rngs=nnx.Rngs(0))
  encoder.eval()
  tokens_BxL, mask_BxL = _tokens_and_mask()
  x_BxD = (np.asarray(encoder.token_embed.embedding[...])[tokens_BxL[:, 0]]
           + models.sinusoidal_table(1, 16)[0])
  centred_BxD = x_BxD - x_BxD.mean(1, keepdims=True)
  np.testing.assert_allclose(
      encoder(tokens_BxL, mask_BxL),
      centred_BxD / np.sqrt((centred_BxD**2).mean(1, keepdims=True) + 1e-5),
      rtol=1e-4, atol=1e-5)


def test_lra_head_is_dense_mlp_dim_relu_dense():
  config = tiny_model_config('fnet', head='lra', mlp_dim=24)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  model.eval()
  hidden, logits = model.head.layers
  assert (hidden.kernel.shape, logits.kernel.shape) == ((16, 24), (24, 5))
  tokens_BxL, mask_BxL = _tokens_and_mask()
  features_BxD = np.asarray(model.encoder(tokens_BxL, mask_BxL))
  hidden_BxH = np.maximum(features_BxD @ np.asarray(hidden.kernel[...])
                          + np.asarray(hidden.bias[...]), 0)
  np.testing.assert_allclose(
      model(tokens_BxL, mask_BxL),
      hidden_BxH @ np.asarray(logits.kernel[...])
      + np.asarray(logits.bias[...]), rtol=1e-5, atol=1e-5)


# The maths of the Transformer and FNet mixers against slow references.


def _attention_reference(mixer, x_BxLxD, mask_BxL, num_heads):
  """Loops over examples, heads and queries; softmax over real keys."""
  def project(layer, x_LxD):
    out = x_LxD @ np.asarray(layer.kernel[...], np.float64)
    return out if layer.bias is None else out + np.asarray(layer.bias[...])

  batch, length, _ = x_BxLxD.shape
  outputs = []
  for b in range(batch):
    q_LxQ, k_LxQ, v_LxQ = (project(layer, x_BxLxD[b]) for layer in
                           (mixer.query, mixer.key, mixer.value))
    head_dim = q_LxQ.shape[1] // num_heads
    mixed_LxQ = np.zeros_like(q_LxQ)
    for h in range(num_heads):
      cols = slice(h * head_dim, (h + 1) * head_dim)
      for i in range(length):
        scores = [q_LxQ[i, cols] @ k_LxQ[j, cols] / np.sqrt(head_dim)
                  if mask_BxL[b, j] else -np.inf for j in range(length)]
        weights = np.exp(np.array(scores) - max(scores))
        mixed_LxQ[i, cols] = (weights / weights.sum()) @ v_LxQ[:, cols]
    outputs.append(project(mixer.out, mixed_LxQ))
  return np.stack(outputs)


@pytest.mark.parametrize('qkv_dim,use_bias', [(16, True), (8, False)])
@pytest.mark.parametrize('masked', [False, True])
def test_transformer_matches_slow_reference(qkv_dim, use_bias, masked):
  from lra_ponet.baselines import transformer
  mixer = transformer.SelfAttention(16, 2, qkv_dim=qkv_dim, use_bias=use_bias,
                                    rngs=nnx.Rngs(0), attention_dropout=0.5)
  mixer.eval()
  models.reinit_linears(mixer, 'pytorch', nnx.Rngs(1))  # Non-zero biases.
  rng = np.random.default_rng(0)
  x_BxLxD = rng.normal(size=(2, 7, 16)).astype(np.float32)
  mask_BxL = np.ones((2, 7), bool)
  if masked:
    mask_BxL[0, 4:] = False
    mask_BxL[1, [0, 3]] = False  # Not a prefix: the xla path masks anywhere.
  np.testing.assert_allclose(
      mixer(x_BxLxD, mask_BxL),
      _attention_reference(mixer, x_BxLxD, mask_BxL, 2), rtol=1e-4,
      atol=1e-5)


def test_fnet_is_real_part_of_dft_over_length_and_hidden():
  from lra_ponet.baselines import fnet
  rng = np.random.default_rng(0)
  x_BxLxD = rng.normal(size=(2, 5, 3)).astype(np.float32)
  length, dim = 5, 3
  expected_BxLxD = np.zeros((2, length, dim))
  for k in range(length):
    for n in range(dim):
      for m in range(length):
        for d in range(dim):
          angle = -2 * np.pi * (k * m / length + n * d / dim)
          expected_BxLxD[:, k, n] += x_BxLxD[:, m, d] * np.cos(angle)
  np.testing.assert_allclose(fnet.FNetMixer()(x_BxLxD, None),
                             expected_BxLxD, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', MASKING_MIXERS)
def test_all_padding_row_gives_finite_outputs_and_gradients(name):
  """An empty document (or an all-black image under the quirk) must train."""
  config = tiny_model_config(name, short=True, dropout=0.0)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  tokens_BxL, mask_BxL = _tokens_and_mask()
  mask_BxL[2] = False
  tokens_BxL[2] = 0

  def loss(model):
    return model(tokens_BxL, mask_BxL).sum()

  # Jitted: one compiled program is faster than the backward pass op by op.
  value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
  assert np.isfinite(value)
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      nnx.to_pure_dict(grads)):
    assert np.isfinite(leaf).all(), jax.tree_util.keystr(path)


@pytest.mark.parametrize('shape', [(2, 7, 5), (2, 8, 6), (3, 16, 64),
                                   (1, 9, 1)])
def test_fnet_is_the_official_real_part_of_fft2_and_its_gradient(shape):
  from lra_ponet.baselines import fnet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  weight = rng.standard_normal(shape).astype(np.float32)
  # attention_fnet.py: fft(fft(X, dim=-1), dim=-2).real.
  official = np.fft.fft(np.fft.fft(x.astype(np.float64), axis=-1),
                        axis=-2).real
  np.testing.assert_allclose(fnet.real_fft2(x), official, atol=2e-5)
  gradient = jax.grad(lambda x: (fnet.real_fft2(x) * weight).sum())(x)
  # The map is x -> Re(F x) with Re(F) symmetric: its gradient is Re(F) w.
  expected = np.fft.fft(np.fft.fft(weight.astype(np.float64), axis=-1),
                        axis=-2).real
  np.testing.assert_allclose(gradient, expected, atol=2e-5)

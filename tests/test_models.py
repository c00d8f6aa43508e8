"""The shared encoder, the mixer registry and padding masks of every mixer."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import base
from lra_ponet import models
from lra_ponet.errors import UserError
from lra_ponet.input_pipeline import TaskInfo


def tiny_model_config(name, length=14, **overrides):
  """A 2-layer, 16-wide model config for sequences of `length` tokens."""
  model = base.model_config(num_layers=2, dim=16, num_heads=2, mlp_dim=32,
                            segment_num=3, pooling='mean')
  model.update(overrides)
  config = ml_collections.ConfigDict(dict(max_len=length, padded_len=length,
                                          model=model))
  return models.configure_mixer(config, name).model


def _tokens_and_mask(seed=0):
  rng = np.random.default_rng(seed)
  tokens_BxL = rng.integers(1, 20, size=(3, 14))
  lengths = np.array([14, 9, 3])
  mask_BxL = np.arange(14)[None] < lengths[:, None]
  return np.where(mask_BxL, tokens_BxL, 0), mask_BxL


MASKING_MIXERS = [name for name, cls in models.MIXERS.items()
                  if cls.masks_padding]


def test_registry_names_the_three_mixers():
  assert set(models.MIXERS) >= {'ponet', 'transformer', 'fnet'}
  assert MASKING_MIXERS == ['ponet', 'transformer']
  with pytest.raises(UserError, match='choose one of fnet, ponet'):
    models.mixer_class('mamba')


@pytest.mark.parametrize('name', MASKING_MIXERS)
@pytest.mark.parametrize('pooling,mean_over', [('mean', 'padded_length'),
                                               ('mean', 'real_tokens'),
                                               ('cls', 'padded_length')])
def test_padding_content_never_changes_logits(name, pooling, mean_over):
  config = tiny_model_config(name, pooling=pooling, mean_over=mean_over)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  model.eval()
  tokens_BxL, mask_BxL = _tokens_and_mask()
  other_BxL = np.where(mask_BxL, tokens_BxL,
                       np.random.default_rng(7).integers(1, 32, (3, 14)))
  np.testing.assert_allclose(model(other_BxL, mask_BxL),
                             model(tokens_BxL, mask_BxL), rtol=1e-5,
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


def test_pair_features_layout():
  u = jnp.array([[1.0, 2.0]])
  v = jnp.array([[3.0, 5.0]])
  np.testing.assert_array_equal(
      models.pair_features(u, v),
      [[1.0, 2.0, 3.0, 5.0, 3.0, 10.0, -2.0, -3.0]])


@pytest.mark.parametrize('name', sorted(models.MIXERS))
def test_every_mixer_trains_in_both_heads(name):
  config = tiny_model_config(name)
  tokens_BxL, mask_BxL = _tokens_and_mask()
  single = models.build_model(config, TaskInfo('t', 5, 32), 14,
                              rngs=nnx.Rngs(0))
  assert single(tokens_BxL, mask_BxL).shape == (3, 5)
  pair = models.build_model(config, TaskInfo('t', 2, 32, paired=True), 14,
                            rngs=nnx.Rngs(0))
  both_Bx2xL = np.stack([tokens_BxL, tokens_BxL[::-1]], axis=1)
  assert pair(both_Bx2xL, np.stack([mask_BxL, mask_BxL[::-1]], 1)).shape == (
      3, 2)


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
  config = tiny_model_config('transformer', attention='cudnn',
                             dtype='bfloat16')
  with pytest.raises(UserError, match='attention=xla'):
    models.build_model(config, TaskInfo('t', 5, 32), 14, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('name', MASKING_MIXERS)
def test_all_padding_row_gives_finite_outputs_and_gradients(name):
  """An empty document (or an all-black image under the quirk) must train."""
  config = tiny_model_config(name, dropout=0.0)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  tokens_BxL, mask_BxL = _tokens_and_mask()
  mask_BxL[2] = False
  tokens_BxL[2] = 0

  def loss(model):
    return model(tokens_BxL, mask_BxL).sum()

  value, grads = nnx.value_and_grad(loss)(model)
  assert np.isfinite(value)
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      nnx.to_pure_dict(grads)):
    assert np.isfinite(leaf).all(), jax.tree_util.keystr(path)

"""Dropout masks of 16 random bits: rate, independence, nnx parity at 32."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model_config
from lra_ponet import config_lib
from lra_ponet import dropout
from lra_ponet import models
from lra_ponet import tasks
from lra_ponet.errors import UserError
from lra_ponet.input_pipeline import TaskInfo
from lra_ponet.report import load


def _kept(layer, shape=(64, 257, 33)):
  """The kept mask of one call (odd sizes: the last hash is cut short)."""
  return np.asarray(layer(jnp.ones(shape)) != 0)


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5])
def test_16_bit_masks_keep_one_minus_rate(rate):
  layer = dropout.Dropout(rate, rngs=nnx.Rngs(dropout=0))
  kept = _kept(layer)
  # Binomial standard error at 559,488 elements: at most 6.7e-4.
  assert abs(kept.mean() - (1 - rate)) < 5 * 6.7e-4
  assert abs(dropout.keep_threshold(1 - rate) / 2**16 - (1 - rate)) < 1e-5


def test_kept_elements_are_scaled_and_the_rest_are_zero():
  layer = dropout.Dropout(0.25, rngs=nnx.Rngs(dropout=3))
  x = jax.random.normal(jax.random.key(1), (8, 40, 16))
  y = np.asarray(layer(x))
  kept = y != 0
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)


def test_the_four_draws_of_a_hash_are_independent():
  draws = np.asarray(dropout.uniform16(jax.random.key(7), (1 << 18, 4)))
  assert draws.min() >= 0 and draws.max() < 2**16
  # Every lane is uniform, and no two lanes move together.
  lanes = draws / 2**16 - 0.5
  np.testing.assert_allclose(lanes.mean(axis=0), 0, atol=5 * 0.29 / 512)
  correlation = np.corrcoef(lanes.T)
  assert np.abs(correlation - np.eye(4)).max() < 5 / 512
  # Both halves of each 32-bit word carry bits: high bytes are uniform too.
  counts = np.bincount((draws >> 8).ravel(), minlength=256)
  expected = draws.size / 256
  chi_square = ((counts - expected) ** 2 / expected).sum()
  assert chi_square < 255 + 5 * np.sqrt(2 * 255)


def test_counters_past_2_to_the_32_carry_into_the_high_word(monkeypatch):
  monkeypatch.setattr(dropout, '_COUNTER_BLOCK', 8)
  high, low = dropout._counter_words(8 * 3 + 5)
  np.testing.assert_array_equal(np.asarray(high) * 8 + np.asarray(low),
                                np.arange(29))
  assert high.dtype == low.dtype == jnp.uint32


def test_a_path_x_attention_mask_of_2_to_the_35_elements_traces():
  shape = (16, 8, 16384, 16384)
  mask = jax.eval_shape(lambda k: dropout.uniform16(k, shape),
                        jax.random.key(0))
  assert mask.shape == shape


def test_each_call_draws_a_new_mask_and_a_seed_repeats_the_stream():
  first = dropout.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
  again = dropout.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
  one, two = _kept(first), _kept(first)
  assert (one != two).mean() > 0.4
  np.testing.assert_array_equal(one, _kept(again))
  np.testing.assert_array_equal(two, _kept(again))


def test_eval_mode_and_rate_zero_return_the_input():
  x = jax.random.normal(jax.random.key(0), (4, 9))
  layer = dropout.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
  layer.eval()
  np.testing.assert_array_equal(layer(x), x)
  np.testing.assert_array_equal(
      dropout.Dropout(0.0, rngs=nnx.Rngs(dropout=0))(x), x)


def test_32_bit_masks_are_nnx_dropout_bit_for_bit():
  x = jax.random.normal(jax.random.key(2), (6, 50, 24))
  ours = dropout.Dropout(0.1, rngs=nnx.Rngs(dropout=5), mask_bits=32)
  theirs = nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=5))
  for _ in range(2):
    np.testing.assert_array_equal(ours(x), theirs(x))
  # Same state, so a checkpoint of either restores into the other.
  assert (jax.tree.structure(nnx.state(ours))
          == jax.tree.structure(nnx.state(theirs)))


def test_gradients_pass_the_kept_elements_only():

  class Dropped(nnx.Module):

    def __init__(self):
      self.x = nnx.Param(jnp.ones((16, 16)))
      self.dropout = dropout.Dropout(0.5, rngs=nnx.Rngs(dropout=0))

  @nnx.jit
  def gradient(module):
    return nnx.grad(lambda module: module.dropout(module.x[...]).sum())(
        module)

  module = Dropped()
  gradient_x = np.asarray(gradient(module).x[...])
  assert set(np.unique(gradient_x)) == {0.0, 2.0}
  # The mask is the one the forward pass drew from the same stream.
  replay = Dropped()
  np.testing.assert_array_equal(gradient_x != 0,
                                np.asarray(replay.dropout(replay.x[...]) != 0))


@pytest.mark.parametrize('mask_bits', [16, 32])
def test_the_model_sets_every_dropout_to_the_configs_bits(mask_bits):
  config = tiny_model_config('transformer', dropout_mask_bits=mask_bits)
  model = models.build_model(config, TaskInfo('tiny', 3, 20), 14,
                             rngs=nnx.Rngs(0, dropout=1))
  layers = [layer for _, layer in nnx.iter_modules(model)
            if isinstance(layer, nnx.Dropout)]
  # The embedding's, three per block and each block's attention weights'.
  assert len(layers) == 1 + 2 * 4
  assert {(type(layer), layer.mask_bits) for layer in layers} == {
      (dropout.Dropout, mask_bits)}


def test_an_unknown_number_of_bits_is_refused():
  with pytest.raises(UserError, match='dropout_mask_bits is 8; use 16'):
    dropout.Dropout(0.1, rngs=nnx.Rngs(0), mask_bits=8)
  config = tiny_model_config('ponet', dropout_mask_bits=24)
  with pytest.raises(UserError, match='model.dropout_mask_bits 24; use one '
                     'of 16, 32'):
    models.build_model(config, TaskInfo('tiny', 3, 20), 14, rngs=nnx.Rngs(0))


def test_runs_saved_without_the_field_read_as_32_bit_and_keep_their_hash():
  current = json.loads(json.dumps(tasks.get_config('listops').to_dict()))
  assert current['model']['dropout_mask_bits'] == 16
  old = json.loads(json.dumps(current))
  del old['model']['dropout_mask_bits']
  migrated = config_lib.migrate(old)
  assert migrated['model']['dropout_mask_bits'] == 32
  assert 'dropout_mask_bits' not in old['model']
  assert load.config_hash(migrated) == load.config_hash(old)
  assert load.config_hash(current) != load.config_hash(migrated)

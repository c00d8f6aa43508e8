"""Every mixer under `model.dtype='bfloat16'`: a forward and a training step.

The intended dtypes (configs/base.py: "compute dtype; parameters stay
float32"): each mixer returns bfloat16, so the residual stream stays in
bfloat16; the head reads float32 features and gives float32 logits; the
parameters, their gradients and updates stay float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SHORT_MIXER_SETTINGS
from lra_ponet import input_pipeline
from lra_ponet import models
from lra_ponet import steps
from lra_ponet import tasks

LENGTH = 16


def bfloat16_config(mixer):
  """Tiny ListOps (16 tokens, one 16-wide layer) in bfloat16."""
  config = tasks.get_config('listops', 'ponet', mixer)
  config.update(dict(max_len=LENGTH, padded_len=LENGTH, batch_size=4))
  config.model.update(dict(num_layers=1, dim=16, mlp_dim=32,
                           dtype='bfloat16'))
  if mixer in SHORT_MIXER_SETTINGS:
    config.model[mixer].update(SHORT_MIXER_SETTINGS[mixer])
  return config


def _batch(info):
  rng = np.random.default_rng(0)
  lengths = np.array([LENGTH, 11, 5, 2])  # Padding in three rows.
  tokens = rng.integers(1, info.vocab_size, size=(4, LENGTH))
  tokens[np.arange(LENGTH)[None] >= lengths[:, None]] = input_pipeline.PAD_ID
  return {'inputs': jnp.asarray(tokens, jnp.int32),
          'label': jnp.asarray(rng.integers(0, info.num_classes, size=4),
                               jnp.int32)}


def _dtypes(tree):
  return {leaf.dtype for leaf in jax.tree.leaves(tree)}


@pytest.mark.parametrize('mixer', list(models.MIXERS))
def test_every_mixer_runs_a_bfloat16_forward_and_step(mixer):
  config = bfloat16_config(mixer)
  info = tasks.get_task('listops').INFO
  graphdef, _, state = steps.create_train_state(config, info)
  model = nnx.merge(graphdef, state)[0]
  batch = _batch(info)
  mask = batch['inputs'] != input_pipeline.PAD_ID
  x_BxLxD = jnp.zeros((4, LENGTH, 16), jnp.bfloat16)

  def forward(model):
    return (model.encoder.blocks[0].mixer(x_BxLxD, mask),
            model(batch['inputs'], mask))

  # A clone: dropout's RNG counts advance under the abstract forward too.
  mixed, logits = nnx.eval_shape(forward, nnx.clone(model))
  assert (mixed.shape, mixed.dtype) == ((4, LENGTH, 16), jnp.bfloat16)
  assert logits.dtype == jnp.float32
  before = nnx.state(model, nnx.Param)
  assert _dtypes(before) == {jnp.dtype(jnp.float32)}
  before = jax.tree.map(np.array, before)  # The step donates nothing here.

  step = jax.jit(steps.make_train_step(graphdef, True))
  state, metrics = step(state, batch)
  assert np.isfinite(metrics['loss']) and metrics['loss'] > 0
  assert np.isfinite(metrics['grad_norm']) and metrics['grad_norm'] > 0
  assert bool(metrics['params_finite'])
  after = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
  assert _dtypes(after) == {jnp.dtype(jnp.float32)}
  assert any(not np.array_equal(old, new) for old, new in zip(
      jax.tree.leaves(before), jax.tree.leaves(after)))

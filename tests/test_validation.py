"""The one validation pass: every config check, and the traced training step.

Every task x preset x mixer combination must pass `validate_config`, which
traces the whole training step with `jax.eval_shape`. At the configs' real
sizes the 216 traces take about 11 minutes on 2 cores (LSTR's alone 5), so
each combination is traced at a tiny size that keeps every field but the
sizes, and all mixers at the real size of one config, Path-X under `lra`:
the longest sequence, gradient clipping, the cosine schedule and the
black-pixel mask. (test_tasks.py validates every task at its real size
under both presets for PoNet, and under `lra` for the Transformer.)
"""

import optax
import pytest
from flax import nnx

from lra_ponet import models
from lra_ponet import optim
from lra_ponet import tasks
from lra_ponet import validation
from lra_ponet.configs import base
from lra_ponet.errors import UserError


def tiny_variant(task, preset, mixer):
  """The config of (task, preset, mixer) with only its sizes made tiny.

  64 tokens, batch 2, one layer of width 16 (every preset's head count
  divides it). The preset's optimiser, clipping, schedule, pooling, head,
  initialisation, positions and pixel mask, and the mixer's own fields, are
  those of the real config.
  """
  config = tasks.get_config(task, preset, mixer)
  config.update(dict(max_len=64, padded_len=64, batch_size=2))
  config.model.update(dict(num_layers=1, dim=16, mlp_dim=32))
  return config


COMBINATIONS = [(task, preset, mixer) for task in tasks.TASKS
                for preset in base.PRESETS for mixer in models.MIXERS]


@pytest.mark.parametrize('task,preset,mixer', COMBINATIONS)
def test_every_combination_traces_a_training_step(task, preset, mixer):
  validation.validate_config(tiny_variant(task, preset, mixer))


@pytest.mark.parametrize('mixer', list(models.MIXERS))
def test_every_mixer_traces_at_path_x_real_size(mixer):
  validation.validate_config(tasks.get_config('pathx', 'lra', mixer))


def _reader_before_the_fix(opt_state):
  """optim.injected_hyperparams as it was: blind to clip + param groups."""
  if hasattr(opt_state, 'inner_states'):
    opt_state = opt_state.inner_states['default'].inner_state
  if not hasattr(opt_state, 'hyperparams'):
    opt_state = opt_state[-1]
  return opt_state.hyperparams


def test_metrics_read_from_the_optimizer_state_are_traced(monkeypatch):
  # S4D's parameter groups under clipping crashed at a run's first step;
  # the validation pass must meet that reader and say so in one line.
  config = tiny_variant('listops', 'ponet', 's4d')
  config.grad_clip_norm = 1.0
  monkeypatch.setattr(optim, 'injected_hyperparams', _reader_before_the_fix)
  with pytest.raises(UserError, match=(
      r"^config\.model \(s4d\): AttributeError 'PartitionState' object has "
      r"no attribute 'hyperparams'$")) as refused:
    validation.validate_config(config)
  assert isinstance(refused.value.__cause__, AttributeError)
  monkeypatch.undo()
  validation.validate_config(config)


def test_the_optimizer_update_is_traced(monkeypatch):
  def failing_update(updates, state, params=None):
    raise ValueError('the update cannot take these gradients')

  monkeypatch.setattr(optim, 'make_optimizer', lambda config: (
      optax.GradientTransformation(lambda params: optax.EmptyState(),
                                   failing_update)))
  with pytest.raises(UserError, match=r'^config\.model \(fnet\): the update '
                     'cannot take these gradients$'):
    validation.validate_config(tiny_variant('text', 'lra', 'fnet'))


@pytest.mark.parametrize('task,changes,message', [
    ('listops', {'schedule': 'linear'}, r"unknown schedule 'linear'"),
    ('listops', {'batch_size': 0}, r'config\.batch_size must be positive'),
    ('listops', {'padded_len': 1000},
     r'config\.padded_len \(1000\) is shorter than config\.max_len \(2000\)'),
    ('listops', {'model.pooling': 'max'}, r"unknown model\.pooling 'max'"),
    ('listops', {'model.mlp_dim': 0}, r'model\.mlp_dim must be positive'),
    ('listops', {'model.layer_norm_epsilon': 0.0},
     r'model\.layer_norm_epsilon must be in \(0, 1\)'),
    ('listops', {'model.embedding_init_std': 0.0},
     r'model\.embedding_init_std must be positive'),
    ('listops', {'model.num_heads': 3}, r'config\.model\.dim \(64\) must be '
     r'divisible by config\.model\.num_heads \(3\)'),
    ('listops', {'model.dtype': 'float64'}, r"dtype 'float64': use float32"),
    ('image', {'padded_len': 1100}, r'the image task has no padding id'),
])
def test_each_check_of_the_pass_refuses_in_one_line(task, changes, message):
  config = tasks.get_config(task)
  for field, value in changes.items():
    if field.startswith('model.'):
      config.model[field[len('model.'):]] = value
    else:
      config[field] = value
  with pytest.raises(UserError, match=message) as refused:
    validation.validate_config(config)
  assert '\n' not in str(refused.value)


def test_a_model_built_directly_refuses_an_unknown_choice():
  config = tasks.get_config('listops', 'ponet', 'ponet')
  config.model.pooling = 'max'
  with pytest.raises(UserError, match=r"unknown model\.pooling 'max'; use "
                     'one of'):
    models.build_model(config.model, tasks.get_task('listops').INFO, 16,
                       rngs=nnx.Rngs(0))

"""Schedules, optimiser and the pure training step."""

import json
import math
import threading

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import torch_one_cycle
from lra_ponet import tasks
from lra_ponet.configs import base
from lra_ponet import checkpoint
from lra_ponet import input_pipeline
from lra_ponet import optim
from lra_ponet import progress
from lra_ponet import steps
from lra_ponet import train
from lra_ponet import validation
from lra_ponet.errors import UserError
from lra_ponet.tasks import listops


def _config(**overrides):
  config = tasks.get_config('listops')
  config.update(overrides)
  return config


def test_one_cycle_matches_pytorch_on_the_listops_setting():
  config = _config()
  assert (config.learning_rate, config.warmup_steps,
          config.train_steps) == (1e-4, 1000, 5000)
  lr = optim.learning_rate_schedule(config)
  updates = [0, 1, 500, 998, 999, 1000, 1001, 3000, 4998, 4999]
  np.testing.assert_allclose(
      [lr(k) for k in updates],
      [torch_one_cycle(k, 5000, 0.2, 4e-6, 1e-4, 4e-10) for k in updates],
      rtol=1e-5)
  # The published reference values, update index -> rate.
  np.testing.assert_allclose([lr(0), lr(999), lr(1000), lr(4999)],
                             [4.0e-6, 1.0e-4, 9.9975e-5, 4.0e-10], rtol=1e-5)
  # beta1: 0.95 -> 0.85 -> 0.95.
  momentum = optim.one_cycle(1000, 5000, start=0.95, middle=0.85, end=0.95)
  np.testing.assert_allclose(
      [momentum(k) for k in updates],
      [torch_one_cycle(k, 5000, 0.2, 0.95, 0.85, 0.95) for k in updates],
      rtol=1e-6)


def test_one_cycle_without_warmup_matches_pytorch():
  lr = optim.learning_rate_schedule(_config(warmup_steps=0, train_steps=10))
  np.testing.assert_allclose(
      [lr(k) for k in range(10)],
      [torch_one_cycle(k, 10, 0.0, 4e-6, 1e-4, 4e-10) for k in range(10)],
      rtol=1e-5)


def lra_reference(k, schedule, peak, warmup, train_steps):
  """LRA's create_learning_rate_scheduler (train_utils.py), in plain Python."""
  rate = peak * min(1.0, k / warmup)
  if schedule == 'rsqrt':
    return rate / math.sqrt(max(k, warmup))
  # steps_per_cycle = num_train_steps in LRA's train.py.
  progress = max(0.0, (k - warmup) / float(train_steps))
  return rate * max(0.0, 0.5 * (1.0 + math.cos(math.pi * (progress % 1.0))))


@pytest.mark.parametrize('schedule, peak', [('rsqrt', 0.05),
                                            ('cosine', 1e-3)])
def test_lra_schedules_match_the_official_code(schedule, peak):
  config = _config(learning_rate=peak, warmup_steps=100, train_steps=1100)
  base.set_schedule(config, schedule)
  lr = optim.learning_rate_schedule(config)
  updates = [0, 1, 50, 99, 100, 101, 400, 600, 1099]
  np.testing.assert_allclose(
      [lr(k) for k in updates],
      [lra_reference(k, schedule, peak, 100, 1100) for k in updates],
      rtol=1e-5, atol=1e-12)
  if schedule == 'cosine':
    # The cycle is train_steps long, so the last update is not at rate 0.
    assert float(lr(1099)) == pytest.approx(
        peak * 0.5 * (1 + math.cos(math.pi * 999 / 1100)), rel=1e-5)


def test_each_update_uses_and_reports_the_scheduled_hyperparameters():
  config = _config(max_len=8, padded_len=8, batch_size=2, train_steps=6,
                   warmup_steps=3, learning_rate=1e-2, grad_clip_norm=1.0)
  config.model.update(dim=8, mlp_dim=8, num_layers=1, ponet=dict(segment_num=2))
  graphdef, _, state = steps.create_train_state(config, listops.INFO)
  step = jax.jit(steps.make_train_step(graphdef, True))
  for k, batch in enumerate(_batches(config, 6)):
    state, metrics = step(state, batch)
    used = optim.injected_hyperparams(
        nnx.merge(graphdef, state)[1].opt_state)
    want_lr = torch_one_cycle(k, 6, 0.5, 4e-4, 1e-2, 4e-8)
    want_b1 = torch_one_cycle(k, 6, 0.5, 0.95, 0.85, 0.95)
    np.testing.assert_allclose(
        [metrics['learning_rate'], used['learning_rate'][...]],
        [want_lr, want_lr], rtol=1e-5)
    np.testing.assert_allclose([metrics['b1'], used['b1'][...]],
                               [want_b1, want_b1], rtol=1e-6)


def test_schedule_fields_must_match_the_schedule():
  config = _config(schedule='rsqrt')  # One-cycle fields left behind.
  with pytest.raises(UserError, match=r'config.b1 is needed by the rsqrt '
                     r'schedule; pick a schedule with --schedule=rsqrt'):
    validation.validate_config(config)
  config.b1 = 0.9
  with pytest.raises(UserError, match='config.b1_max is not used by the '
                     'rsqrt schedule'):
    validation.validate_config(config)
  base.set_schedule(config, 'rsqrt')
  assert 'b1_max' not in config and config.b1 == 0.9
  validation.validate_config(config)
  base.set_schedule(config, 'one_cycle')
  assert (config.b1_max, config.b1_min) == (0.95, 0.85) and 'b1' not in config


@pytest.mark.parametrize('changes, message', [
    (dict(schedule='rsqrt', warmup_steps=0), 'needs config.warmup_steps >= 1'),
    (dict(schedule='cosine', warmup_steps=0), 'needs config.warmup_steps >= 1'),
    (dict(warmup_steps=1), r'must be 0 or 2 \.\. config.train_steps'),
    (dict(warmup_steps=6000), r'must be 0 or 2 \.\. config.train_steps'),
    ({'model.dtype': 'float16'}, 'needs dynamic loss scaling'),
    ({'model.ponet.segment_num': 0},
     r'config.model \(ponet\): segment_num must be positive, got 0'),
])
def test_impossible_configs_are_refused(changes, message):
  config = _config()
  for name, value in changes.items():
    if name == 'schedule':
      base.set_schedule(config, value)
    elif name.startswith('model.'):
      config.update_from_flattened_dict({name: value})
    else:
      config[name] = value
  with pytest.raises(UserError, match=message):
    validation.validate_config(config)


def test_bad_model_config_fails_before_any_data(tmp_path, monkeypatch):
  def no_loading(config):
    raise AssertionError('data was loaded before the config was checked')

  monkeypatch.setattr(listops, 'load', no_loading)
  config = _config()
  config.model.ponet.segment_num = 0
  with pytest.raises(UserError, match='segment_num must be positive'):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()


def test_unusable_workdir_is_one_clear_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(UserError, match=r'cannot use .*file/run as the '
                     r'workdir: Not a directory'):
    checkpoint.prepare_workdir(tmp_path / 'file' / 'run', {}, overwrite=False,
                               is_writer=True)


def _batches(config, count):
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
      inputs=rng.integers(1, 16, size=(32, config.padded_len)),
      labels=rng.integers(0, 10, size=32).astype(np.int32))
  batches = input_pipeline.train_batches(split, config.batch_size, seed=3)
  return [next(batches) for _ in range(count)]


def _losses(config, batches):
  graphdef, _, state = steps.create_train_state(config, listops.INFO)
  step = jax.jit(steps.make_train_step(graphdef, True), donate_argnums=0)
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return losses


def test_training_is_deterministic_for_a_seed():
  config = _config(max_len=24, padded_len=24, batch_size=4, train_steps=6,
                   warmup_steps=2)
  config.model.update(dim=16, mlp_dim=32, ponet=dict(segment_num=4))
  batches = _batches(config, 6)
  first, again = _losses(config, batches), _losses(config, batches)
  assert first == again
  config.seed = 1
  assert _losses(config, batches) != first


def test_batches_depend_only_on_seed_and_step():
  split = input_pipeline.Split(inputs=np.arange(10)[:, None],
                               labels=np.arange(10))
  run = input_pipeline.train_batches(split, 4, seed=0)
  labels = np.concatenate([next(run)['label'] for _ in range(5)])
  # Every epoch is a permutation of all examples.
  assert sorted(labels[:10]) == list(range(10))
  assert sorted(labels[10:20]) == list(range(10))
  resumed = input_pipeline.train_batches(split, 4, seed=0, start_step=3)
  np.testing.assert_array_equal(next(resumed)['label'], labels[12:16])


def test_eval_batches_cover_every_example_once():
  split = input_pipeline.Split(inputs=np.arange(7)[:, None],
                               labels=np.arange(7))
  batches = list(input_pipeline.eval_batches(split, 3))
  weights = np.concatenate([b['weight'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert weights.sum() == 7
  np.testing.assert_array_equal(labels[weights > 0], np.arange(7))


def test_prefetch_delivers_in_order_and_reraises():
  assert list(input_pipeline.prefetch(iter(range(5)), lambda x: x * 10)) == [
      0, 10, 20, 30, 40]

  def failing():
    yield 1
    raise ValueError('bad batch')

  with pytest.raises(ValueError, match='bad batch'):
    list(input_pipeline.prefetch(failing(), lambda x: x))


def test_closing_prefetch_ends_its_thread():
  # A producer left running at exit aborts the interpreter mid-transfer.
  before = threading.active_count()
  batches = input_pipeline.prefetch(iter(range(100)), lambda x: x, size=1)
  assert next(batches) == 0
  batches.close()
  assert threading.active_count() == before


def test_pixel_tasks_refuse_padding(tmp_path):
  config = tasks.get_config('image')
  config.padded_len = 1100
  with pytest.raises(UserError, match='no padding id'):
    train.train_and_evaluate(config, tmp_path)


def test_progress_saves_whole_and_reads_checkpoints_without_timing():
  kept = progress.Progress()
  kept.add_step(1.0, 0.5)
  kept.add_step(3.0, 1.0)
  kept.add_timed(2.0, 4)
  assert kept.add_evaluation(2, {'loss': 0.9, 'accuracy': 0.7}, 0.1)
  assert kept.window == {'loss': 0.0, 'accuracy': 0.0, 'steps': 0}
  kept.add_step(2.0, 0.0)
  assert not kept.add_evaluation(4, {'loss': 0.8, 'accuracy': 0.7}, 0.1)
  saved = json.loads(json.dumps(kept.to_json()))  # As the checkpoint does.
  assert sorted(saved) == ['best', 'records', 'timing', 'window']
  assert saved['records'][0] == {
      'step': 2, 'train_loss': 2.0, 'train_accuracy': 0.75, 'val_loss': 0.9,
      'val_accuracy': 0.7, 'learning_rate': 0.1, 'steps_per_second': 2.0}
  assert saved['best'] == {'accuracy': 0.7, 'step': 2}
  assert progress.Progress.from_json(saved) == kept
  del saved['timing']  # Checkpoints from before timing was kept.
  assert progress.Progress.from_json(saved).timing == {
      'train_seconds': 0.0, 'timed_steps': 0, 'wall_seconds': 0.0}

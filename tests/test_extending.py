"""A new mixer and a new task take one file and one registry line each.

The test writes both files as a user would, registers each with its one
line, and runs them through training, the harness and the report.
"""

import json
import sys
import textwrap

import pytest

from lra_ponet import data
from lra_ponet import models
from lra_ponet import stamp
from lra_ponet import tasks
from lra_ponet import train
from lra_ponet.bench import child
from lra_ponet.bench import sweep
from lra_ponet.report import accuracy
from lra_ponet.report import load
from lra_ponet.report import speed

MIXER_FILE = '''
"""Each real token gets a learned map of the mean of the real tokens."""

import jax.numpy as jnp
from flax import nnx


class MeanMixer(nnx.Module):
  masks_padding = True

  def __init__(self, dim, *, rngs, scale):
    self.project = nnx.Linear(dim, dim, rngs=rngs)
    self.scale = scale

  @classmethod
  def default_config(cls, config):
    del config
    return dict(scale=0.5)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index
    return cls(model_config.dim, rngs=rngs,
               scale=model_config.mean_mixer.scale)

  def __call__(self, x_BxLxD, mask_BxL):
    real_BxLx1 = mask_BxL[..., None]
    count_Bx1x1 = jnp.maximum(real_BxLx1.sum(1, keepdims=True), 1)
    mean_Bx1xD = jnp.where(real_BxLx1, x_BxLxD, 0).sum(1, keepdims=True)
    mixed_Bx1xD = self.scale * self.project(mean_Bx1xD / count_Bx1x1)
    return jnp.where(real_BxLx1, mixed_Bx1xD, 0.0)
'''

TASK_FILE = '''
"""Parity of the count of token 2 in a sequence of 1s and 2s."""

import numpy as np

from lra_ponet import input_pipeline
from lra_ponet.configs import base

INFO = input_pipeline.TaskInfo('parity', num_classes=2, vocab_size=3)
PUBLISHED = {('mean_mixer', 'ponet'): ('a made-up reference', 50.0)}


def get_config(preset='ponet'):
  model = base.ponet_model(segment_num=4)
  model.update(dim=16, mlp_dim=32, num_layers=1)
  return base.task_config(
      task='parity', preset=preset, max_len=16, padded_len=16, batch_size=8,
      train_steps=4, warmup_steps=2, eval_every=2, model=model)


def _split(rng, count, length):
  lengths = rng.integers(4, length + 1, count)
  tokens = rng.integers(1, 3, (count, length))
  tokens[np.arange(length)[None] >= lengths[:, None]] = 0
  labels = (tokens == 2).sum(1) % 2
  return input_pipeline.Split(tokens.astype(np.int32), labels)


def load(config):
  rng = np.random.default_rng(config.data_seed)
  return input_pipeline.TaskData(
      *(_split(rng, count, config.padded_len) for count in (64, 16, 16)),
      source=f'generated parity, seed {config.data_seed}')
'''


@pytest.fixture
def registered(tmp_path, monkeypatch):
  """Both files written and registered, as a user adds them."""
  (tmp_path / 'mean_mixer.py').write_text(textwrap.dedent(MIXER_FILE))
  (tmp_path / 'parity_task.py').write_text(textwrap.dedent(TASK_FILE))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(models.MIXERS, 'mean_mixer', 'mean_mixer:MeanMixer')
  monkeypatch.setitem(tasks.TASKS, 'parity', ('parity_task', 'parity_task'))
  yield tmp_path
  for name in ('mean_mixer', 'parity_task'):
    sys.modules.pop(name, None)


def test_new_mixer_and_task_train_and_report(registered):
  config = tasks.get_config('parity', 'ponet', 'mean_mixer')
  assert config.model.mean_mixer.scale == 0.5
  assert 'ponet' not in config.model and 'transformer' not in config.model
  runs = registered / 'runs'
  results = train.train_and_evaluate(config, runs / 'mean_mixer')
  assert results['model'] == 'mean_mixer'
  assert results['train_steps'] == 4
  saved = json.loads((runs / 'mean_mixer' / 'config.json').read_text())
  assert saved['model']['mean_mixer'] == {'scale': 0.5}
  table = accuracy.accuracy_report(runs)
  row = next(line for line in table.splitlines() if 'mean_mixer' in line)
  assert 'parity' in row
  assert '50.00 (a made-up reference)' in row
  assert f'{100 * results["test_accuracy"]:.2f}' in row


def test_new_mixer_and_task_in_the_harness_and_its_report(registered,
                                                          monkeypatch):
  # The harness runs each cell in a subprocess, which would not see the two
  # registry lines this test adds; here the cells run in this process.
  monkeypatch.setattr(sweep, 'run_cell',
                      lambda cell, timeout: child.measure(cell))
  settings = sweep.Settings(
      task='parity', preset='ponet', dtype='float32', steps=2, warmup=2,
      cell_timeout=300, memory_cap_gb=None, tokens_per_batch=None,
      until_oom=False, max_length=64, run_after_failure=False,
      results_dir=str(registered), sweep_id='extending',
      overrides={'model.mean_mixer.scale': '0.25'})
  device_stamp = dict(stamp.device_fields(), **stamp.versions())
  path = sweep.run(settings, [16, 32], [('mean_mixer', ''), ('fnet', '')],
                   batch_size=4, device_stamp=device_stamp)
  frame = load.load_bench(registered)[path.stem[len('bench_'):]]
  rows = frame[frame['model'] == 'mean_mixer']
  assert list(rows['status']) == ['ok', 'ok']
  assert list(rows['length']) == [16, 32]
  assert all(json.loads(text)['model']['mean_mixer'] == {'scale': 0.25}
             for text in rows['config_json'])
  report = speed.bench_report(path.stem[len('bench_'):], frame, False)
  assert 'mean_mixer' in report


def test_new_task_data_is_prepared_without_a_prepare_hook(registered):
  assert data.prepare('parity', '') == 'parity: generated parity, seed 0'

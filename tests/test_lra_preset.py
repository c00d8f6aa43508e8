"""Training steps of every task under the `lra` preset, on its loaded data.

Each task's `lra` config (the official LRA Transformer's: its schedule,
weight decay, clipping, pooling, heads, positions, initialisation and
black-pixel mask) with only the sizes made tiny, on small data in the
release formats (tests/lra_files.py). LRA's warm-up starts the learning
rate at 0, so the first update changes nothing; the second must.
"""

import jax
import numpy as np
import pytest
from flax import nnx

import lra_files
from lra_ponet import input_pipeline
from lra_ponet import steps
from lra_ponet import tasks
from lra_ponet import validation


def _pathfinder_images(root, resolution):
  images = np.random.default_rng(0).integers(
      0, 256, (20, resolution, resolution), dtype=np.uint8)
  lra_files.write_pathfinder(root / 'lra_release', resolution, images,
                             np.arange(20) % 2)
  return root / 'lra_release'


def _imdb(root):
  pytest.importorskip('tensorflow_datasets')
  lra_files.write_imdb(root / 'tfds',
                       [(b'review %d great' % i, i % 2) for i in range(6)],
                       [(b'test review %d' % i, i % 2) for i in range(4)])
  return root / 'tfds'


def _cifar10(root):
  pytest.importorskip('tensorflow_datasets')
  rng = np.random.default_rng(0)
  lra_files.write_cifar10(
      root / 'tfds',
      (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10)),
      (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.arange(4)))
  return root / 'tfds'


def _aan(root):
  lra_files.write_aan(root / 'lra_release', {
      split: [(i % 2, b'paper %d on parsing' % i, b'cited %d' % i)
              for i in range(count)]
      for split, count in (('train', 6), ('eval', 3), ('test', 3))})
  return root / 'lra_release'


# task -> writes its data under a root folder; returns config.data_dir.
DATA = {
    'text': _imdb,
    'retrieval': _aan,
    'image': _cifar10,
    'pathfinder': lambda root: _pathfinder_images(root, 32),
    'pathx': lambda root: _pathfinder_images(root, 128),
}


@pytest.mark.parametrize('task', list(tasks.TASKS))
def test_every_task_trains_under_the_lra_preset(task, tiny_listops_dir,
                                                tmp_path):
  data_dir = tiny_listops_dir if task == 'listops' else DATA[task](tmp_path)
  config = tasks.get_config(task, 'lra', 'transformer')
  config.update(dict(data_dir=str(data_dir), max_len=32, padded_len=32,
                     batch_size=2))
  config.model.update(dict(num_layers=1, dim=16, mlp_dim=32))
  validation.validate_config(config)
  info = tasks.get_task(task).INFO
  data = tasks.get_task(task).load(config)
  graphdef, _, state = steps.create_train_state(config, info)
  initial = jax.tree.map(np.array, nnx.state(nnx.merge(graphdef, state)[0],
                                             nnx.Param))
  step = jax.jit(steps.make_train_step(
      graphdef, steps.masks_zero_tokens(config, info)))
  batches = input_pipeline.train_batches(data.train, config.batch_size,
                                         config.seed)
  rates = []
  for _ in range(2):
    state, metrics = step(state, next(batches))
    assert np.isfinite(metrics['loss']) and np.isfinite(metrics['grad_norm'])
    assert bool(metrics['params_finite'])
    rates.append(float(metrics['learning_rate']))
  assert rates[0] == 0 < rates[1]
  trained = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
  assert any(not np.array_equal(old, new) for old, new in zip(
      jax.tree.leaves(initial), jax.tree.leaves(trained)))

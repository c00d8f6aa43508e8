"""One tiny `python -m lra_ponet.run` per task, and the missing-data errors.

A module fixture runs every command line once, one after the other (side by
side they were no faster on 2 cores): a run's time is mostly XLA
compilation, so the runs share a persistent compilation cache (the pixel
tasks compile the same programs) and, as every test, compile with XLA's
optimisations off (conftest.py). Each test then checks one run.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import lra_files

pytest.importorskip('tensorflow_datasets')

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--model=ponet', '--config.train_steps=2', '--config.warmup_steps=2',
        '--config.eval_every=2', '--config.batch_size=2',
        '--config.eval_batch_size=2', '--config.model.num_layers=1']
# name -> (data folder under the test's tmp dir or None, max_len,
# padded_len, segment_num, extra flags); the task is the name's first word.
RUNS = {
    'pathfinder': ('lra_release', 64, 64, 1, []),
    'pathx': ('lra_release', 64, 64, 1, []),
    'pathfinder_generated': (None, 64, 64, 1,
                             ['--config.generated_examples=20']),
    'image': ('tfds', 48, 48, 4, []),
    'text': ('tfds', 24, 32, 4, []),
    'retrieval': ('lra_release', 24, 32, 4, []),
}
MISSING = {  # task -> the path its error must name, under tmp/'missing'.
    'text': '',
    'retrieval': 'tsv_data/new_aan_pairs.train.tsv',
    'pathx': 'pathfinder128/curv_contour_length_14/metadata',
}


def write_data(root: pathlib.Path):
  rng = np.random.default_rng(0)
  lra_files.write_imdb(
      root / 'tfds',
      [(f'review {i} {"great" if i % 2 else "awful"}'.encode(), i % 2)
       for i in range(6)],
      [(f'test review {i}'.encode(), i % 2) for i in range(4)])
  lra_files.write_cifar10(
      root / 'tfds',
      (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10)),
      (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.arange(4)))
  lra_files.write_aan(root / 'lra_release', {
      split: [(i % 2, b'paper %d on parsing' % i, b'cited %d' % i)
              for i in range(count)]
      for split, count in (('train', 6), ('eval', 3), ('test', 3))})
  for resolution in (32, 128):
    images = rng.integers(0, 256, (20, resolution, resolution),
                          dtype=np.uint8)
    lra_files.write_pathfinder(root / 'lra_release', resolution, images,
                               np.arange(20) % 2, empty={5})


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """name -> (return code, stdout, stderr, workdir, tmp root) of each run."""
  root = tmp_path_factory.mktemp('cli')
  write_data(root)
  env = dict(os.environ, LRA_PONET_CACHE=str(root / 'cache'),
             JAX_COMPILATION_CACHE_DIR=str(root / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  commands = {}
  for name, (folder, max_len, padded_len, segments, extra) in RUNS.items():
    commands[name] = [
        f'--task={name.split("_")[0]}', f'--config.max_len={max_len}',
        f'--config.padded_len={padded_len}',
        f'--config.model.ponet.segment_num={segments}', *TINY, *extra]
    if folder:
      commands[name].append(f'--config.data_dir={root / folder}')
  for task in MISSING:
    commands[f'missing_{task}'] = [
        f'--task={task}', f'--config.data_dir={root / "missing"}']
  finished = {}
  for name, flags in commands.items():
    workdir = root / 'runs' / name
    process = subprocess.run(
        [sys.executable, '-m', 'lra_ponet.run', f'--workdir={workdir}',
         *flags], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300, check=False)
    finished[name] = (process.returncode, process.stdout, process.stderr,
                      workdir, root)
  return finished


def results_of(runs, name):
  returncode, stdout, stderr, workdir, _ = runs[name]
  assert returncode == 0, f'{name} failed:\n{stdout}\n{stderr}'
  return json.loads((workdir / 'results.json').read_text())


@pytest.mark.parametrize('name', list(RUNS))
def test_tiny_run_writes_results(runs, name):
  results = results_of(runs, name)
  workdir = runs[name][3]
  task = name.split('_')[0]
  assert (results['task'], results['train_steps']) == (task, 2)
  # The one evaluation, at step 2, is the best; its parameters are tested.
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [record['step'] for record in records] == [2]
  assert (results['best_step'], results['best_val_accuracy']) == (
      2, records[0]['val_accuracy'])
  if task == 'text':  # Validation is the test split: the same accuracy.
    assert results['test_accuracy'] == results['best_val_accuracy']
  assert results['config'] == json.loads(
      (workdir / 'config.json').read_text())
  assert results['mask_zero_tokens'] == (task in ('text', 'retrieval'))
  assert results['mean_over'] == 'padded_length'
  assert results['data_source']


def test_text_run_says_validation_is_test(runs):
  results = results_of(runs, 'text')
  assert 'tensorflow-datasets imdb_reviews/plain_text/1.0.0' in (
      results['data_source'])
  assert 'validation = test split' in results['data_notes']
  assert 'validation = test split' in runs['text'][1]  # Printed too.


def test_release_runs_name_their_files(runs):
  root = runs['retrieval'][4]
  release = root / 'lra_release'
  assert results_of(runs, 'retrieval')['data_source'] == (
      f'LRA release files {release / "tsv_data"}')
  pathx = results_of(runs, 'pathx')['data_source']
  assert pathx.startswith(
      f'LRA release files {release}/pathfinder128/curv_contour_length_14 '
      '(19 images; 1 empty image files skipped)')
  assert results_of(runs, 'image')['data_source'].startswith(
      'tensorflow-datasets cifar10/3.0.2')


def test_generated_pathfinder_says_so(runs):
  source = results_of(runs, 'pathfinder_generated')['data_source']
  assert source.startswith('generated by tasks/pathfinder_generator.py: 20 '
                           'images at 32x32, seed 0')


@pytest.mark.parametrize('task', list(MISSING))
def test_missing_data_is_one_line_naming_the_path(runs, task):
  returncode, _, stderr, _, root = runs[f'missing_{task}']
  assert returncode != 0
  assert 'Traceback' not in stderr
  error = stderr.strip().splitlines()[-1]
  assert error.startswith('error: ')
  assert str(root / 'missing' / MISSING[task]).rstrip('/') in error
  if task == 'text':
    assert 'python -m lra_ponet.data prepare --task=text' in error


def test_prepare_retrieval_exits_with_the_release_url():
  process = subprocess.run(
      [sys.executable, '-m', 'lra_ponet.data', 'prepare', '--task=retrieval'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert process.returncode != 0
  assert process.stderr.strip().splitlines()[-1].startswith(
      'error: retrieval: the data exists only in the LRA release: download '
      'https://storage.googleapis.com/long-range-arena/lra_release.gz')

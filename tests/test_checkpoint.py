"""Checkpoints, exact resume, clean stops and data parallelism, end to end.

Also what must not end or corrupt a run: a damaged checkpoint, a second run in
the workdir, a failed save, several processes. Each run is a real CLI run in a
subprocess (so it can be killed, interrupted, given four CPU devices or run as
two processes) on tiny generated ListOps, except where a writer is patched.
The subprocesses share a persistent compilation cache to keep the file near
two minutes on two cores.
"""

import contextlib
import errno
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from lra_ponet import tasks
from lra_ponet import checkpoint
from lra_ponet import optim
from lra_ponet import parallel
from lra_ponet import steps
from lra_ponet import stopping
from lra_ponet import train
from lra_ponet import workdir_lock
from lra_ponet.errors import UserError
from lra_ponet.tasks import listops_generator

TRAIN_STEPS = 24
# Checkpoints at 8, 16 and 24 fall between evaluations (6, 12, 18, 24), so a
# resume must restore the running train-metric window too.
OVERRIDES = dict(train_steps=TRAIN_STEPS, eval_every=6, checkpoint_every=8,
                 log_every=2, warmup_steps=4, max_len=32, padded_len=32,
                 batch_size=4, eval_batch_size=4, **{
                     'model.num_layers': 1, 'model.dim': 16,
                     'model.num_heads': 2, 'model.mlp_dim': 32,
                     'model.ponet.segment_num': 4})

# Runs the CLI; from step SLOW_FROM_STEP on, each training batch takes
# SLOW_SECONDS, so that a test can signal the run at a known point.
DRIVER = textwrap.dedent('''
    import os, sys, time
    from absl import app
    from lra_ponet import input_pipeline, run

    slow_from = int(os.environ['SLOW_FROM_STEP'])
    seconds = float(os.environ['SLOW_SECONDS'])
    train_batches = input_pipeline.train_batches

    def slow_batches(split, batch_size, seed, start_step=0):
      batches = train_batches(split, batch_size, seed, start_step=start_step)
      for step, batch in enumerate(batches, start=start_step + 1):
        if step == slow_from:
          print('SLOW', flush=True)
        if step >= slow_from:
          time.sleep(seconds)
        yield batch

    input_pipeline.train_batches = slow_batches
    app.run(run.main, flags_parser=run.parse_flags)
''')


def device_count_flags(count):
  """The suite's XLA_FLAGS (conftest.py) with `count` CPU devices."""
  return (f'{os.environ["XLA_FLAGS"]} '
          f'--xla_force_host_platform_device_count={count}')


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """Tiny ListOps, a private data cache and a shared compilation cache."""
  root = tmp_path_factory.mktemp('checkpoint')
  listops_generator.generate_listops(
      root / 'data' / 'listops-1000', seed=0, num_train=64, num_val=12,
      num_test=12, workers=1, progress=False)
  return {**os.environ,
          'LRA_PONET_CACHE': str(root / 'cache'),
          'JAX_COMPILATION_CACHE_DIR': str(root / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'XLA_FLAGS': device_count_flags(1),
          'DATA_DIR': str(root / 'data')}


def cli_args(env, workdir, **changes):
  overrides = {**OVERRIDES, 'data_dir': env['DATA_DIR'], **changes}
  return (['--task=listops', '--model=ponet', f'--workdir={workdir}']
          + [f'--config.{name}={value}' for name, value in overrides.items()])


def run_cli(env, workdir, **changes):
  return subprocess.run(
      [sys.executable, '-m', 'lra_ponet.run', *cli_args(env, workdir,
                                                        **changes)],
      env=env, capture_output=True, text=True, timeout=300, check=False)


@contextlib.contextmanager
def slow_run(env, workdir, slow_from, seconds, log):
  """The CLI slowed from a step on, yielded once that step is near.

  Killed on leaving, should a failing test have left it running.
  """
  process = subprocess.Popen(
      [sys.executable, '-c', DRIVER, *cli_args(env, workdir)],
      env={**env, 'SLOW_FROM_STEP': str(slow_from),
           'SLOW_SECONDS': str(seconds)},
      stdout=subprocess.PIPE, stderr=log, text=True)
  try:
    if not any(line == 'SLOW\n' for line in process.stdout):
      process.wait()
      pytest.fail(f'the run ended (rc {process.returncode}) before step '
                  f'{slow_from}:\n{pathlib.Path(log.name).read_text()}')
    yield process
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()


def wait_for(condition, what, seconds=120):
  deadline = time.monotonic() + seconds
  while not condition():
    if time.monotonic() > deadline:
      pytest.fail(f'timed out waiting for {what}')
    time.sleep(0.05)


def metrics(workdir):
  """metrics.jsonl without the speeds, which differ from run to run."""
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [{name: value for name, value in json.loads(line).items()
           if name != 'steps_per_second'} for line in lines]


def evaluated_steps(workdir):
  if not (pathlib.Path(workdir) / 'metrics.jsonl').exists():
    return []
  return [record['step'] for record in metrics(workdir)]


def results(workdir):
  stored = json.loads((pathlib.Path(workdir) / 'results.json').read_text())
  return {name: stored[name] for name in (
      'best_val_accuracy', 'best_step', 'test_accuracy', 'test_loss')}


def final_arrays(workdir):
  """Every array of the last checkpoint (state and best model), as numpy.

  Restored onto this process's one device whatever devices saved them.
  """
  step_dir = pathlib.Path(workdir) / checkpoint.CHECKPOINTS / str(TRAIN_STEPS)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  checkpointer = ocp.StandardCheckpointer()
  arrays = []
  for item in ('state', 'best_model'):
    path = (step_dir / item).absolute()
    target = jax.tree.map(
        lambda saved: jax.ShapeDtypeStruct(saved.shape, saved.dtype,
                                           sharding=device),
        checkpointer.metadata(path).item_metadata)
    for leaf in jax.tree.leaves(checkpointer.restore(path, target)):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      arrays.append(np.asarray(leaf))
  return arrays


def steps_saved(workdir):
  return sorted(int(path.name) for path in
                (pathlib.Path(workdir) / checkpoint.CHECKPOINTS).iterdir()
                if path.name.isdigit())


def assert_same_run(workdir, reference):
  assert metrics(workdir) == metrics(reference)
  assert results(workdir) == results(reference)
  for got, want in zip(final_arrays(workdir), final_arrays(reference),
                       strict=True):
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope='module')
def reference(env, tmp_path_factory):
  """An uninterrupted run on one device."""
  workdir = tmp_path_factory.mktemp('reference')
  done = run_cli(env, workdir)
  assert done.returncode == 0, done.stderr
  assert 'test accuracy' in done.stdout
  assert steps_saved(workdir) == [8, 16, 24]
  assert evaluated_steps(workdir) == [6, 12, 18, 24]
  return workdir


@pytest.mark.smoke
def test_killed_run_resumes_to_the_same_result(env, reference, tmp_path):
  workdir = tmp_path / 'run'
  with open(tmp_path / 'killed.log', 'w', encoding='utf-8') as log:
    # Stalls before step 15: after the checkpoint at 8 and the evaluation at
    # 12, whose metrics line the resume must drop and write again.
    with slow_run(env, workdir, slow_from=15, seconds=600,
                  log=log) as process:
      wait_for(lambda: evaluated_steps(workdir) == [6, 12],
               'the step-12 metrics')
      process.send_signal(signal.SIGKILL)
      process.wait()
  assert steps_saved(workdir) == [8]

  resumed = run_cli(env, workdir)
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resuming from step 8 of 24' in resumed.stdout
  assert_same_run(workdir, reference)


def test_sigint_saves_exits_130_and_resumes(env, reference, tmp_path):
  workdir = tmp_path / 'run'
  with open(tmp_path / 'interrupted.log', 'w', encoding='utf-8') as log:
    with slow_run(env, workdir, slow_from=10, seconds=0.3,
                  log=log) as process:
      process.send_signal(signal.SIGINT)
      assert process.wait(timeout=120) == 130
  lines = (tmp_path / 'interrupted.log').read_text().splitlines()
  stopped = [line for line in lines if line.startswith('stopped by SIGINT')]
  assert len(stopped) == 1, lines
  step = int(stopped[0].split('at step ')[1].split(';')[0])
  assert steps_saved(workdir)[-1] == step
  assert f'--workdir={workdir}' in stopped[0]

  resumed = run_cli(env, workdir)
  assert resumed.returncode == 0, resumed.stderr
  assert f'Resuming from step {step} of 24' in resumed.stdout
  assert_same_run(workdir, reference)


def test_four_devices_match_one_device(env, reference, tmp_path):
  four = run_cli({**env, 'XLA_FLAGS': device_count_flags(4)},
                 tmp_path / 'four')
  assert four.returncode == 0, four.stderr
  assert 'on 4 x cpu' in four.stdout
  got, want = metrics(tmp_path / 'four'), metrics(reference)
  assert evaluated_steps(tmp_path / 'four') == [6, 12, 18, 24]
  # Losses, not the learning rate: that depends on the step alone.
  for name in ('train_loss', 'val_loss'):
    np.testing.assert_allclose([record[name] for record in got],
                               [record[name] for record in want], rtol=1e-5)
  assert results(tmp_path / 'four')['test_loss'] == pytest.approx(
      results(reference)['test_loss'], rel=1e-5)
  for got_array, want_array in zip(final_arrays(tmp_path / 'four'),
                                   final_arrays(reference), strict=True):
    np.testing.assert_allclose(got_array, want_array, rtol=1e-4, atol=1e-6)


def test_batch_not_divisible_by_devices_is_refused():
  config = tasks.get_config('listops')
  config.batch_size = 6
  with pytest.raises(UserError, match=r'config.batch_size \(6\) must be '
                     r'divisible by the number of devices \(4\)'):
    parallel.check_divisible(config, types.SimpleNamespace(size=4))


def poison_at(step):
  """A make_train_step whose parameters turn NaN before training step `step`."""
  make_train_step = steps.make_train_step

  def make_poisoned(graphdef, mask_zero_tokens):
    train_step = make_train_step(graphdef, mask_zero_tokens)

    def poisoned(state, batch):
      hit = state[1]['step'][...] == step - 1  # Optimizer steps done so far.
      state[0] = jax.tree.map(
          lambda x: jax.numpy.where(hit, np.nan, x)
          if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x,
          state[0])
      return train_step(state, batch)

    return poisoned

  return make_poisoned


def tiny_config(env, **changes):
  config = tasks.get_config('listops')
  config.data_dir = env['DATA_DIR']
  for name, value in {**OVERRIDES, **changes}.items():
    *parents, leaf = name.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    env, tmp_path, monkeypatch):
  monkeypatch.setenv('LRA_PONET_CACHE', env['LRA_PONET_CACHE'])
  monkeypatch.setattr(steps, 'make_train_step', poison_at(12))
  # Metrics are fetched at 10 (a checkpoint) and 15: the NaN of step 12 is
  # caught at 15, before the checkpoint of step 15 could be written.
  config = tiny_config(env, log_every=20, eval_every=20, train_steps=20,
                       checkpoint_every=5)
  with pytest.raises(stopping.NonFiniteError,
                     match=r'non-finite training loss, gradient or updated '
                     r'parameters at step 12 .*the last good checkpoint, step '
                     r'10, is kept'):
    train.train_and_evaluate(config, tmp_path)
  assert steps_saved(tmp_path) == [5, 10]
  _assert_latest_is_finite(config, tmp_path, step=10)


def _assert_latest_is_finite(config, workdir, step):
  _, _, state = steps.create_train_state(config, tasks.get_task('listops').INFO)
  saved = checkpoint.Checkpoints(workdir, keep=3)
  latest, state, _, progress = saved.restore_latest(state, state[0])
  saved.close()
  assert latest == step and progress['window']['steps'] == step
  for leaf in jax.tree.leaves(state):
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
      assert np.isfinite(leaf).all()


def test_nan_parameters_after_a_finite_step_are_caught_before_saving(
    env, tmp_path, monkeypatch):
  # Update 9 (step 10, a checkpoint step) runs at a NaN learning rate: its
  # loss and gradient are finite, the parameters it writes are not.
  monkeypatch.setenv('LRA_PONET_CACHE', env['LRA_PONET_CACHE'])
  schedule = optim.learning_rate_schedule
  monkeypatch.setattr(optim, 'learning_rate_schedule', lambda config: (
      lambda k: jax.numpy.where(k == 9, np.nan, schedule(config)(k))))
  config = tiny_config(env, log_every=5, eval_every=20, train_steps=20,
                       checkpoint_every=5)
  with pytest.raises(stopping.NonFiniteError,
                     match=r'at step 10 \(loss [0-9.]+, gradient norm '
                     r'[0-9.]+, parameters not finite\).*last good '
                     r'checkpoint, step 5, is kept'):
    train.train_and_evaluate(config, tmp_path)
  assert steps_saved(tmp_path) == [5]
  _assert_latest_is_finite(config, tmp_path, step=5)


class FakeClock:
  """Stands in for train's `time` module: each call advances by `tick`."""

  def __init__(self):
    self.now, self.tick, self.calls = 0.0, 1.0, []

  def _advance(self):
    self.now += self.tick
    self.calls.append(self.now)
    return self.now

  def time(self):
    return self._advance()

  def perf_counter(self):
    return self._advance()


def test_timing_adds_up_over_resumes_and_a_finished_rerun_changes_nothing(
    env, tmp_path, monkeypatch):
  monkeypatch.setenv('LRA_PONET_CACHE', env['LRA_PONET_CACHE'])
  clock = FakeClock()
  monkeypatch.setattr(train, 'time', clock)

  def stop_at_4(stops, step, checkpoints):
    del checkpoints
    if step == 4 and clock.tick == 1.0:
      stops.signum = signal.SIGTERM
    return stops.signum is not None

  monkeypatch.setattr(stopping.StopRequests, 'requested', stop_at_4)
  config = tiny_config(env, log_every=1, eval_every=4, train_steps=8,
                       checkpoint_every=4)
  with pytest.raises(stopping.Interrupted):
    train.train_and_evaluate(config, tmp_path)
  # Every clock call here is one tick: the first invocation's wall time runs
  # from its first call to its last (the save at step 4).
  first_wall = clock.calls[-1] - clock.calls[0]
  clock.tick, resumed_from = 3.0, len(clock.calls)
  done = train.train_and_evaluate(config, tmp_path)
  second_wall = clock.calls[-1] - clock.calls[resumed_from]
  assert done['wall_seconds'] == first_wall + second_wall
  # Steps 2-4 and 6-8 are timed (each invocation's first interval compiles),
  # one tick per step: 3 steps in 3 s, then 3 steps in 9 s.
  assert done['steps_per_second'] == pytest.approx(6 / 12)
  stored = (tmp_path / 'results.json').read_bytes()
  assert train.train_and_evaluate(config, tmp_path) == json.loads(stored)
  assert (tmp_path / 'results.json').read_bytes() == stored


def test_test_accuracy_uses_the_best_validation_parameters(
    env, tmp_path, monkeypatch):
  # 12 test examples in batches of 5: the last batch holds 2.
  monkeypatch.setenv('LRA_PONET_CACHE', env['LRA_PONET_CACHE'])
  evaluate, calls = steps.evaluate, []

  def validation_peaks_at_step_4(eval_step, state, split, batch_size, put):
    calls.append(batch_size)
    if len(calls) <= 4:  # Validation at steps 2, 4, 6, 8; then test.
      return {'loss': 1.0, 'accuracy': [0.5, 0.9, 0.2, 0.1][len(calls) - 1]}
    return evaluate(eval_step, state, split, batch_size, put)

  monkeypatch.setattr(steps, 'evaluate', validation_peaks_at_step_4)
  config = tiny_config(env, eval_every=2, train_steps=8, checkpoint_every=4,
                       eval_batch_size=5)
  done = train.train_and_evaluate(config, tmp_path)
  assert (done['best_step'], done['best_val_accuracy']) == (4, 0.9)

  info = tasks.get_task('listops').INFO
  _, eval_graphdef, state = steps.create_train_state(config, info)
  saved = checkpoint.Checkpoints(tmp_path, keep=3)
  state, _, _ = saved.restore(4, state, state[0])
  saved.close()
  model, _ = nnx.merge(eval_graphdef, state)
  test = tasks.get_task('listops').load(config).test
  assert len(test.labels) == 12
  inputs = jax.numpy.asarray(test.inputs, jax.numpy.int32)
  logits = np.asarray(model(inputs, inputs != 0))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels = np.asarray(test.labels)
  assert done['test_accuracy'] == pytest.approx(
      (logits.argmax(-1) == labels).mean(), abs=1e-9)
  assert done['test_loss'] == pytest.approx(
      -log_probs[np.arange(12), labels].mean(), rel=1e-5)


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path):
  config = {'learning_rate': 1e-4, 'log_every': 10, 'model': {'dim': 64}}
  checkpoint.prepare_workdir(tmp_path, config, overwrite=False,
                             is_writer=True)
  (tmp_path / checkpoint.CHECKPOINTS / '8').mkdir(parents=True)
  (tmp_path / 'metrics.jsonl').write_text('{"step": 6}\n')
  # Logging and checkpoint settings may change on resume.
  checkpoint.prepare_workdir(tmp_path, {**config, 'log_every': 5},
                             overwrite=False, is_writer=True)

  changed = {**config, 'model': {'dim': 32}}
  with pytest.raises(UserError, match=r'holds a run with a different config '
                     r'\(model.dim: 64 -> 32\).*--overwrite'):
    checkpoint.prepare_workdir(tmp_path, changed, overwrite=False,
                               is_writer=True)
  assert (tmp_path / checkpoint.CHECKPOINTS / '8').exists()

  checkpoint.prepare_workdir(tmp_path, changed, overwrite=True,
                             is_writer=True)
  assert not (tmp_path / checkpoint.CHECKPOINTS).exists()
  assert not (tmp_path / 'metrics.jsonl').exists()
  assert json.loads((tmp_path / 'config.json').read_text()) == changed
  assert not list(tmp_path.glob('.*partial'))


def copy_of(reference, tmp_path):
  """The reference run's workdir without its results, to be resumed."""
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  (workdir / 'results.json').unlink()
  return workdir


def truncate(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def overwrite_with_garbage(path):
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


# One damage per item of the checkpoint: its array index, its JSON, its data.
DAMAGES = {'truncated': ('state/manifest.ocdbt', truncate),
           'missing': ('progress/metadata', pathlib.Path.unlink),
           'garbage': ('best_model/d/*', overwrite_with_garbage)}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_unreadable_latest_checkpoint_is_skipped(env, reference, tmp_path,
                                                 damage):
  workdir = copy_of(reference, tmp_path)
  pattern, damage_file = DAMAGES[damage]
  (path,) = (workdir / checkpoint.CHECKPOINTS / str(TRAIN_STEPS)).glob(
      pattern)
  damage_file(path)

  resumed = run_cli(env, workdir)
  assert resumed.returncode == 0, resumed.stderr
  skipped = [line for line in resumed.stderr.splitlines()
             if line.startswith('skipped checkpoint')]
  assert len(skipped) == 1, resumed.stderr
  assert 'Traceback' not in resumed.stderr
  assert skipped[0].startswith('skipped checkpoint step 24, unreadable (')
  assert skipped[0].endswith('; resuming from step 16')
  assert 'Resuming from step 16 of 24' in resumed.stdout
  assert (workdir / checkpoint.UNREADABLE / '24').is_dir()
  assert steps_saved(workdir) == [8, 16, 24]
  assert_same_run(workdir, reference)


def test_no_readable_checkpoint_is_refused_and_nothing_moved(
    env, reference, tmp_path):
  workdir = copy_of(reference, tmp_path)
  for step in steps_saved(workdir):
    (workdir / checkpoint.CHECKPOINTS / str(step) / 'progress'
     / 'metadata').unlink()
  refused = run_cli(env, workdir)
  assert refused.returncode == 1
  assert refused.stderr.startswith(
      f'error: no checkpoint in {workdir / checkpoint.CHECKPOINTS} can be '
      'restored (step 24: FileNotFoundError')
  assert '--overwrite' in refused.stderr
  assert steps_saved(workdir) == [8, 16, 24]
  assert not (workdir / checkpoint.UNREADABLE).exists()


HOLD_LOCK = textwrap.dedent('''
    import sys, time
    from lra_ponet import workdir_lock
    with workdir_lock.hold(sys.argv[1]):
      print('HELD', flush=True)
      time.sleep(600)
''')


def test_second_run_in_a_workdir_is_refused_at_once(env, tmp_path):
  workdir = tmp_path / 'run'
  holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(workdir)],
                            env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == 'HELD\n'
    started = time.monotonic()
    refused = run_cli(env, workdir)
    assert time.monotonic() - started < 60  # No training, no compilation.
  finally:
    holder.kill()
    holder.wait()
  assert refused.returncode == 1
  assert refused.stderr == (
      f'error: {workdir} is in use by the run of pid {holder.pid} on '
      f'{socket.gethostname()}; wait for it to end or stop it, or choose '
      'another --workdir\n')
  assert sorted(path.name for path in workdir.iterdir()) == ['lock']


def test_lock_left_by_a_killed_run_does_not_block_a_resume(env, reference,
                                                          tmp_path):
  workdir = copy_of(reference, tmp_path)
  ended = subprocess.Popen([sys.executable, '-c', ''])
  ended.wait()
  (workdir / 'lock').write_text(
      f'pid {ended.pid} on {socket.gethostname()}\n')
  resumed = run_cli(env, workdir)
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resuming from step 24 of 24' in resumed.stdout
  assert results(workdir) == results(reference)


def test_workdir_of_a_run_that_failed_at_once_is_not_left(tmp_path):
  with pytest.raises(UserError):
    with workdir_lock.hold(tmp_path / 'new'):
      assert (tmp_path / 'new' / workdir_lock.LOCK_FILE).exists()
      raise UserError('bad config')
  assert not (tmp_path / 'new').exists()
  with workdir_lock.hold(tmp_path / 'used'):
    (tmp_path / 'used' / 'config.json').write_text('{}')
  assert sorted(path.name for path in (tmp_path / 'used').iterdir()) == [
      'config.json', workdir_lock.LOCK_FILE]


# `python -m lra_ponet.run` whose JSON writer finds the disk full at its
# second checkpoint, after writing half its file.
DISK_FULL_AT_SECOND_SAVE = textwrap.dedent('''
    import errno, json, os, runpy
    import orbax.checkpoint as ocp

    saves = []

    async def save_fn(self, item, directory):
      saves.append(directory)
      text = json.dumps(item)
      if len(saves) < 2:
        (directory / 'metadata').write_text(text)
        return
      (directory / 'metadata').write_text(text[:len(text) // 2])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ocp.handlers.JsonCheckpointHandler._save_fn = save_fn
    runpy.run_module('lra_ponet.run', run_name='__main__', alter_sys=True)
''')


def test_disk_full_during_a_save_keeps_the_last_checkpoint(env, reference,
                                                           tmp_path):
  failed = subprocess.run(
      [sys.executable, '-c', DISK_FULL_AT_SECOND_SAVE,
       *cli_args(env, tmp_path)],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert failed.returncode == 1, failed.stderr
  assert 'Traceback' not in failed.stderr
  # Saves come at steps 8, 16 and 24: the one of step 16 failed.
  assert failed.stderr.splitlines()[-1] == (
      'error: could not save the checkpoint of step 16 in '
      f'{tmp_path / checkpoint.CHECKPOINTS} (OSError: [Errno 28] No space '
      'left on device); the last complete checkpoint, step 8, is intact; fix '
      'the cause (e.g. free disk space), then rerun the same command to '
      'resume from it')
  assert steps_saved(tmp_path) == [8]
  # The half-written step is left in orbax's temporary folder only.
  assert [path.name for path in (tmp_path / checkpoint.CHECKPOINTS).iterdir()
          if not path.name.isdigit()] == ['16.orbax-checkpoint-tmp']
  assert metrics(tmp_path) == metrics(reference)[:2]
  # What a resume sees (the resume itself is tested with a real failure).
  saved = checkpoint.Checkpoints(tmp_path, keep=3)
  assert saved.latest_step() == 8
  saved.close()


# `python -m lra_ponet.run` in which no file may grow past 16 KiB: a real
# failed write, inside TensorStore, for the arrays of a checkpoint.
FILE_SIZE_LIMITED = textwrap.dedent('''
    import resource, runpy
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
    runpy.run_module('lra_ponet.run', run_name='__main__', alter_sys=True)
''')


def test_failed_checkpoint_write_ends_the_run_in_one_line(env, reference,
                                                          tmp_path):
  workdir = copy_of(reference, tmp_path)
  shutil.rmtree(workdir / checkpoint.CHECKPOINTS / str(TRAIN_STEPS))
  failed = subprocess.run(
      [sys.executable, '-c', FILE_SIZE_LIMITED, *cli_args(env, workdir)],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert failed.returncode == 1, failed.stderr
  assert 'Traceback' not in failed.stderr
  last = failed.stderr.splitlines()[-1]
  assert last.startswith('error: could not save the checkpoint of step 24 '
                         f'in {workdir / checkpoint.CHECKPOINTS} (')
  assert 'File too large' in last
  assert last.endswith('the last complete checkpoint, step 16, is intact; '
                       'fix the cause (e.g. free disk space), then rerun the '
                       'same command to resume from it')
  assert steps_saved(workdir) == [8, 16]
  assert metrics(workdir) == metrics(reference)

  resumed = run_cli(env, workdir)
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resuming from step 16 of 24' in resumed.stdout
  assert not list((workdir / checkpoint.CHECKPOINTS).glob('*tmp*'))
  assert_same_run(workdir, reference)


def test_failed_file_write_keeps_the_previous_file(tmp_path, monkeypatch):
  path = tmp_path / 'results.json'
  path.write_text('previous\n')

  def disk_full(descriptor):
    del descriptor
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'fsync', disk_full)
  with pytest.raises(checkpoint.SaveError,
                     match=rf'^could not write {path} \(No space left on '
                     r'device\); the previous version of it is intact; '):
    checkpoint.write_text_atomically(path, 'new\n')
  assert path.read_text() == 'previous\n'
  assert sorted(tmp_path.iterdir()) == [path]


# `python -m lra_ponet.run` that reports on stderr every file it opens for
# writing, renames or removes, so a test can see which process wrote what.
WRITES_REPORTED = textwrap.dedent('''
    import runpy, sys

    def report(event, args):
      if event == 'open' and isinstance(args[0], str) and (
          (args[1] or 'r') != 'r' or args[2] & 0o3):
        print('WROTE', args[0], file=sys.stderr)
      elif event in ('os.rename', 'os.remove', 'os.unlink', 'shutil.rmtree'):
        print('WROTE', args[1] if event == 'os.rename' else args[0],
              file=sys.stderr)

    sys.addaudithook(report)
    runpy.run_module('lra_ponet.run', run_name='__main__', alter_sys=True)
''')


def free_port():
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def test_two_processes_match_one_and_only_process_0_writes(env, reference,
                                                           tmp_path):
  workdir = tmp_path / 'run'
  coordinator = {'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{free_port()}',
                 'JAX_NUM_PROCESSES': '2',
                 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}
  processes = [subprocess.Popen(
      [sys.executable, '-c', WRITES_REPORTED, '--distributed',
       *cli_args(env, workdir)],
      env={**env, **coordinator, 'JAX_PROCESS_ID': str(index)},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for index in range(2)]
  try:
    outputs = [process.communicate(timeout=300) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr
  assert 'on 2 x cpu' in outputs[0][0]

  got, want = metrics(workdir), metrics(reference)
  assert [record['step'] for record in got] == [6, 12, 18, 24]
  for name in ('train_loss', 'val_loss', 'learning_rate'):
    np.testing.assert_allclose([record[name] for record in got],
                               [record[name] for record in want], rtol=1e-5)
  assert steps_saved(workdir) == [8, 16, 24]

  def written(stderr):
    """The files a process wrote in the workdir, checkpoints aside."""
    paths = {pathlib.Path(line.split(' ', 1)[1]).absolute()
             for line in stderr.splitlines() if line.startswith('WROTE ')}
    return {path.relative_to(workdir.absolute()).parts[0] for path in paths
            if path.is_relative_to(workdir.absolute())} - {'checkpoints'}

  assert written(outputs[0][1]) >= {'results.json', 'metrics.jsonl',
                                    'config.json', 'lock'}
  assert written(outputs[1][1]) == set()

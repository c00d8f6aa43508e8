"""The training loop: train, log, evaluate, keep the best, save; then test.

`train_and_evaluate` sets up (`_set_up`), resumes (`_resume`), runs the loop
(`_train`) and tests the best parameters (`_test_and_write`). The state is
replicated and each batch split over all devices (see `parallel`); the loop's
bookkeeping is one `progress.Progress`, saved in every checkpoint, so a run
resumes exactly (see `checkpoint`) and stops cleanly (see `stopping`).
"""

import contextlib
import dataclasses
import json
import pathlib
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from lra_ponet import tasks
from lra_ponet import checkpoint
from lra_ponet import input_pipeline
from lra_ponet import models
from lra_ponet import parallel
from lra_ponet import progress as progress_lib
from lra_ponet import stamp
from lra_ponet import steps
from lra_ponet import stopping
from lra_ponet import tensorboard as tensorboard_lib
from lra_ponet import validation


@dataclasses.dataclass(frozen=True)
class _Run:
  """What one invocation of the loop works with; built by `_set_up`."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  data: Any  # The task's loaded splits.
  is_writer: bool  # Process 0, the one that writes files.
  mask_zero_tokens: bool
  num_params: int
  train_step: Callable
  eval_step: Callable
  put: Callable  # Places a batch on the devices.
  checkpoints: checkpoint.Checkpoints
  metric_writer: tensorboard_lib.Writer | None
  # stamp.versions() on starting: the code that runs, even if the checkout
  # changes during a long run.
  versions: dict

  def close(self):
    self.checkpoints.close()
    if self.metric_writer:
      self.metric_writer.close()


def train_and_evaluate(config, workdir, *, overwrite: bool = False,
                       tensorboard: bool = False) -> dict:
  """Trains, evaluates on validation every eval_every steps, tests the best.

  Writes config.json, metrics.jsonl (one line per evaluation), checkpoints/
  and results.json into workdir and returns the results. If workdir holds
  checkpoints of the same config the run resumes from the latest and ends as
  the uninterrupted run would have; a workdir of another config is refused
  unless `overwrite`, which starts afresh; a finished run's stored results
  are returned untouched. With `tensorboard`, the records of metrics.jsonl
  also go to TensorBoard event files in workdir/tensorboard. Raises
  stopping.NonFiniteError at a NaN or infinite loss, gradient or updated
  parameter, and stopping.Interrupted on SIGINT or SIGTERM once a checkpoint
  is saved.
  """
  start_time = time.time()
  run, state = _set_up(config, pathlib.Path(workdir), overwrite=overwrite,
                       tensorboard=tensorboard)
  try:
    start, state, best_model, progress = _resume(run, state)
    finished = _finished_results(run.workdir, start, config)
    if finished:
      return finished
    wall_before = progress.timing['wall_seconds']

    def wall_seconds():  # Summed over every invocation of the run.
      return wall_before + time.time() - start_time

    if run.is_writer:
      # Drops the lines an interrupted run wrote after its last checkpoint.
      _write_metrics(run.workdir, progress.records)
    state, best_model = _train(run, state, best_model, progress, start,
                               wall_seconds)
  finally:
    run.close()
  state[0] = best_model
  return _test_and_write(run, state, progress, wall_seconds)


def _set_up(config, workdir, *, overwrite: bool, tensorboard: bool):
  """Checks the config, prepares workdir, loads data; (run, initial state)."""
  task = tasks.get_task(config.task)
  mask_zero_tokens = _check_run(config, task.INFO, tensorboard)
  mesh = parallel.data_mesh()
  parallel.check_divisible(config, mesh)
  is_writer = jax.process_index() == 0
  checkpoint.prepare_workdir(workdir, config.to_dict(), overwrite=overwrite,
                             is_writer=is_writer)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('lra_ponet: workdir prepared')

  data = task.load(config)
  print(f'Data: {data.source}' + (f'; {data.notes}' if data.notes else ''))
  graphdef, eval_graphdef, state = steps.create_train_state(config, task.INFO)
  num_params = models.count_params(nnx.merge(graphdef, state)[0])
  replicated = parallel.replicated(mesh)
  batch_sharded = parallel.batch_sharded(mesh)
  train_step = jax.jit(steps.make_train_step(graphdef, mask_zero_tokens),
                       in_shardings=(replicated, batch_sharded),
                       out_shardings=replicated, donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(eval_graphdef, mask_zero_tokens),
                      in_shardings=(replicated, batch_sharded),
                      out_shardings=replicated)
  state = parallel.replicate(state, mesh)
  run = _Run(
      config=config, workdir=workdir, data=data, is_writer=is_writer,
      mask_zero_tokens=mask_zero_tokens, num_params=num_params,
      train_step=train_step, eval_step=eval_step,
      put=lambda batch: parallel.put_batch(batch, batch_sharded),
      checkpoints=checkpoint.Checkpoints(workdir, config.checkpoint_keep),
      metric_writer=(tensorboard_lib.Writer(workdir)
                     if tensorboard and is_writer else None),
      versions=stamp.versions())
  return run, state


def _check_run(config, info, tensorboard: bool) -> bool:
  """Refuses a run that cannot work; returns whether token 0 is masked."""
  validation.validate_config(config)
  if tensorboard:
    tensorboard_lib.check_available()
  return steps.masks_zero_tokens(config, info)


def _resume(run, state):
  """(start step, state, best_model, progress): the latest checkpoint's, or
  those of a fresh run."""
  best_model = _copy(state[0])
  restored = run.checkpoints.restore_latest(state, best_model)
  if not restored:
    return 0, state, best_model, progress_lib.Progress()
  start, state, best_model, saved = restored
  print(f'Resuming from step {start} of {run.config.train_steps} '
        f'({run.checkpoints.directory / str(start)})')
  return start, state, best_model, progress_lib.Progress.from_json(saved)


def _train(run, state, best_model, progress, start: int, wall_seconds):
  """Steps start + 1 .. train_steps; returns (state, best_model).

  Metrics stay on the devices until a step logs, evaluates or saves: the
  fetch is the loop's only host sync.
  """
  config = run.config
  batches = input_pipeline.prefetch(
      input_pipeline.train_batches(run.data.train, config.batch_size,
                                   config.seed, start_step=start), run.put)
  pending = []
  tick = time.perf_counter()
  with _progress_bar(run, start) as bar, stopping.StopRequests() as stops, \
      contextlib.closing(batches):
    for step in range(start + 1, config.train_steps + 1):
      state, metrics = run.train_step(state, next(batches))
      pending.append(metrics)
      stop = stops.requested(step, run.checkpoints)
      last = step == config.train_steps
      evaluating = step % config.eval_every == 0 or last
      saving = step % config.checkpoint_every == 0 or last or stop
      if step % config.log_every and not (evaluating or saving):
        continue
      learning_rate = _log(run, progress, pending, step, start, tick, bar)
      pending = []
      if evaluating:
        best_model = _evaluate(run, state, best_model, progress, step,
                               learning_rate, bar)
      if saving:
        progress.timing['wall_seconds'] = wall_seconds()
        run.checkpoints.save(step, state, best_model, progress.to_json())
      if stop:
        raise _interrupted(run, stops.signum, step)
      tick = time.perf_counter()
  return state, best_model


def _progress_bar(run, start: int):
  config = run.config
  return tqdm(total=config.train_steps, initial=start, unit='step',
              dynamic_ncols=True, disable=not run.is_writer,
              desc=f'{config.task}/{config.model.name}')


def _log(run, progress, pending, step: int, start: int, tick: float,
         bar) -> float:
  """Adds the pending steps' metrics to progress; their last learning rate.

  Non-finite values are caught here, before anything is evaluated or saved.
  """
  first = step - len(pending) + 1
  fetched_metrics = jax.device_get(pending)
  for index, fetched in enumerate(fetched_metrics, start=first):
    stopping.check_finite(fetched, index, run.checkpoints)
    progress.add_step(float(fetched['loss']), float(fetched['accuracy']))
  now = time.perf_counter()
  # The first interval includes compilation; it is not a training speed.
  if first - 1 > start:
    progress.add_timed(now - tick, len(pending))
  bar.update(len(pending))
  loss, accuracy = progress.window_means()
  bar.set_postfix(loss=f'{loss:.4f}', acc=f'{accuracy:.3f}',
                  steps_per_s=f'{progress.steps_per_second():.2f}')
  return float(fetched_metrics[-1]['learning_rate'])


def _evaluate(run, state, best_model, progress, step: int,
              learning_rate: float, bar):
  """Records a validation pass; returns the best model so far."""
  result = steps.evaluate(run.eval_step, state, run.data.validation,
                          run.config.eval_batch_size, run.put)
  improved = progress.add_evaluation(step, result, learning_rate)
  if run.is_writer:
    _write_metrics(run.workdir, progress.records)
  if run.metric_writer:
    run.metric_writer.write(progress.records[-1])
  if improved:
    best_model = _copy(state[0])
  best = progress.best
  bar.write(f'step {step}: val_loss {result["loss"]:.4f} '
            f'val_acc {result["accuracy"]:.4f} (best '
            f'{best["accuracy"]:.4f} at step {best["step"]})')
  return best_model


def _interrupted(run, signum: int, step: int) -> stopping.Interrupted:
  return stopping.Interrupted(
      f'stopped by {signal.Signals(signum).name} at step {step}; checkpoint '
      f'saved in {run.checkpoints.directory / str(step)}; resume with the '
      f'same command and --workdir={run.workdir}', signum)


def _test_and_write(run, state, progress, wall_seconds) -> dict:
  """Tests `state` (the best parameters); writes and returns the results."""
  config = run.config
  test = steps.evaluate(run.eval_step, state, run.data.test,
                        config.eval_batch_size, run.put)
  results = {
      'task': config.task,
      'model': config.model.name,
      'num_params': run.num_params,
      'best_val_accuracy': progress.best['accuracy'],
      'best_step': progress.best['step'],
      'test_accuracy': test['accuracy'],
      'test_loss': test['loss'],
      'train_steps': config.train_steps,
      'steps_per_second': progress.steps_per_second(),
      'wall_seconds': wall_seconds(),
      'device': stamp.device(),
      **run.versions,
      'data_source': run.data.source,
      'data_notes': run.data.notes,
      'mask_zero_tokens': run.mask_zero_tokens,
      'mean_over': config.model.mean_over,
      'config': config.to_dict(),
  }
  if run.is_writer:
    write_json(run.workdir / 'results.json', results)
  return results


def write_json(path, payload):
  """Writes JSON atomically: a reader sees the old file or the new one."""
  checkpoint.write_text_atomically(
      path, json.dumps(payload, indent=2, sort_keys=True) + '\n')


def _finished_results(workdir, start: int, config):
  """The stored results of a run that already finished, or None."""
  path = workdir / 'results.json'
  if start < config.train_steps or not path.exists():
    return None
  print(f'{workdir} holds a finished run; its results.json is unchanged')
  return json.loads(path.read_text(encoding='utf-8'))


def _write_metrics(workdir, records):
  checkpoint.write_text_atomically(
      workdir / 'metrics.jsonl',
      ''.join(json.dumps(record) + '\n' for record in records))


def _copy(tree):
  """New buffers: the training step donates (deletes) the state's."""
  return jax.tree.map(jnp.copy, tree)


def summary(results: dict, workdir) -> str:
  """The two lines that close a run."""
  return (f'{results["task"]} / {results["model"]}: '
          f'test accuracy {results["test_accuracy"]:.4f} with the parameters '
          f'of step {results["best_step"]} (best validation accuracy '
          f'{results["best_val_accuracy"]:.4f}); '
          f'{results["num_params"]:,} parameters, '
          f'{results["steps_per_second"]:.2f} steps/s on {results["device"]}, '
          f'{results["wall_seconds"]:.0f} s in all.\n'
          f'Data: {results["data_source"]}. Results: {workdir}/results.json')

"""The run's workdir: its config, atomic files and orbax checkpoints.

A checkpoint `<workdir>/checkpoints/<step>/` holds three items: `state` (model
and optimizer, RNG counts and schedule position included), `best_model` (the
model state with the best validation accuracy so far, kept apart from the
training state) and `progress` (JSON bookkeeping: the metrics records, the
best accuracy and its step, the running train-metric sums since the last
evaluation, the run's timing summed over invocations). Together they let a
resumed run continue exactly where the saved one was. Orbax writes each step
into a temporary folder and renames it when complete, so a kill, or a write
that fails (a full disk), leaves only finished checkpoints. A finished one
that cannot be read back (a file truncated, deleted or overwritten since) is
set aside and the run resumes from the newest one that can.
"""

import contextlib
import json
import logging
import os
import pathlib
import shutil
import sys
import threading
import traceback
import warnings

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from lra_ponet import config_lib
from lra_ponet.errors import UserError

CHECKPOINTS = 'checkpoints'
# Where checkpoints that could not be restored are moved, for inspection.
UNREADABLE = 'unreadable_checkpoints'
# Files of a run besides its config and checkpoints; --overwrite removes them.
RUN_FILES = ('metrics.jsonl', 'results.json')


class SaveError(UserError):
  """A file or checkpoint could not be written (a full disk, say).

  What the run had saved before is intact, so it can be resumed.
  """


def _first_line(error: Exception) -> str:
  line = (str(error).strip().splitlines() or [''])[0]
  # Orbax appends a many-line dump of the TensorStore spec to read errors.
  line = line.split(' See full TensorStore details')[0]
  return f'{type(error).__name__}: {line}'


def write_text_atomically(path, text: str):
  """A reader, or a kill or failed write at any moment, sees the old file or
  the new one; a failed write raises SaveError."""
  path = pathlib.Path(path)
  partial = path.with_name(f'.{path.name}.partial')
  try:
    with open(partial, 'w', encoding='utf-8') as file:
      file.write(text)
      file.flush()
      # Without it a machine crash could leave the renamed file empty.
      os.fsync(file.fileno())
    os.replace(partial, path)
  except OSError as error:
    partial.unlink(missing_ok=True)
    raise SaveError(f'could not write {path} ({error.strerror or error}); '
                    'the previous version of it is intact; fix the cause '
                    '(e.g. free disk space), then rerun the same command to '
                    'resume from the last checkpoint') from error


def prepare_workdir(workdir: pathlib.Path, config_dict: dict, *,
                    overwrite: bool, is_writer: bool):
  """Refuses a workdir that holds a run of another config, unless overwrite.

  With `overwrite` the previous run's files and checkpoints are deleted and
  the run starts from scratch. Only the writer process (process 0) changes
  files; every process checks.
  """
  config_path = workdir / 'config.json'
  if config_path.exists() and not overwrite:
    try:
      saved = json.loads(config_path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as error:
      raise UserError(f'{config_path} is not valid JSON ({error}); pass '
                      '--overwrite to start a new run there') from None
    # Both in the current layout: a config without an added field reads
    # as the runs saved before it.
    differences = config_lib.differences(config_lib.migrate(saved),
                                         config_lib.migrate(config_dict))
    if differences:
      raise UserError(f'{workdir} holds a run with a different config '
                      f'({"; ".join(differences)}); rerun with its settings '
                      'to resume it, choose another --workdir, or pass '
                      '--overwrite to discard it')
  if not is_writer:
    return
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    if overwrite:
      shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
      shutil.rmtree(workdir / UNREADABLE, ignore_errors=True)
      for name in RUN_FILES:
        (workdir / name).unlink(missing_ok=True)
    write_text_atomically(config_path,
                          json.dumps(config_dict, indent=2, sort_keys=True)
                          + '\n')
  except OSError as error:
    raise UserError(f'cannot use {workdir} as the workdir: '
                    f'{error.strerror or error} ({error.filename}); choose '
                    'another --workdir') from None


@contextlib.contextmanager
def _quiet_orbax_failure():
  """Lets a failed orbax save or restore be reported in one line.

  Orbax logs the traceback of a failed write from each writer thread, and
  the threads still writing other items fail and log later, some after the
  call has returned; so their error logs are dropped, for good once a call
  failed, and the threads are waited for. TensorStore completes the abandoned
  reads and writes into orbax's closed event loops, during the call and
  later, and leaves coroutines it never awaited: those unraisable errors and
  warnings are dropped too, and so are asyncio's reports of orbax's tasks
  whose exception nobody retrieved (made when a task is garbage-collected,
  at any time after the call).
  """
  logger = logging.getLogger('absl')
  asyncio_logger = logging.getLogger('asyncio')

  def only_others(record):
    return record.levelno < logging.ERROR or 'orbax' not in record.pathname

  def not_orbax_tasks(record):
    return 'orbax' not in record.getMessage() and not (
        record.exc_info and 'orbax' in ''.join(
            traceback.format_tb(record.exc_info[2])))

  logger.addFilter(only_others)
  asyncio_logger.addFilter(not_orbax_tasks)
  unraisablehook = sys.unraisablehook
  sys.unraisablehook = _without_closed_loop_errors(unraisablehook)
  try:
    yield
  except Exception:
    warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                            category=RuntimeWarning)
    for thread in threading.enumerate():
      if (type(thread).__module__.startswith('orbax')
          and thread is not threading.current_thread()):
        thread.join(timeout=60)
    raise
  sys.unraisablehook = unraisablehook
  logger.removeFilter(only_others)
  asyncio_logger.removeFilter(not_orbax_tasks)


def _without_closed_loop_errors(hook):
  def filtered(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      hook(unraisable)
  return filtered


def _abstract(tree):
  """Shapes, dtypes and shardings of `tree`: what a restore fills in."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


class Checkpoints:
  """Saves and restores (state, best_model, progress) under one workdir."""

  def __init__(self, workdir: pathlib.Path, keep: int):
    self.directory = workdir / CHECKPOINTS
    self._unreadable = workdir / UNREADABLE
    # Synchronous: when save() returns the step is on disk and the training
    # step may donate the state's buffers.
    self._manager = ocp.CheckpointManager(
        self.directory.absolute(),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, best_model, progress: dict):
    """Saves a step; SaveError if it cannot, the previous steps intact.

    A failed save leaves only orbax's temporary folder, which is never taken
    for a checkpoint and is deleted when the run is resumed.
    """
    try:
      with _quiet_orbax_failure():
        self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            best_model=ocp.args.StandardSave(best_model),
            progress=ocp.args.JsonSave(progress)))
    # TensorStore reports failed writes as ValueError, orbax as Exception.
    except Exception as error:  # pylint: disable=broad-exception-caught
      latest = self.latest_step()
      kept, then = (
          (f'the last complete checkpoint, step {latest}, is intact',
           'resume from it') if latest is not None
          else ('no checkpoint had been saved yet', 'start again'))
      raise SaveError(
          f'could not save the checkpoint of step {step} in '
          f'{self.directory} ({_first_line(error)}); {kept}; fix the cause '
          f'(e.g. free disk space), then rerun the same command to {then}'
      ) from error

  def restore(self, step: int, state, best_model):
    """(state, best_model, progress) saved at `step`; see restore_latest."""
    with _quiet_orbax_failure():
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(state)),
          best_model=ocp.args.StandardRestore(_abstract(best_model)),
          progress=ocp.args.JsonRestore()))
    return restored['state'], restored['best_model'], restored['progress']

  def restore_latest(self, state, best_model):
    """(step, state, best_model, progress) of the newest readable step, or None.

    `state` and `best_model` give the structure and the shardings to restore
    into (e.g. freshly initialised ones); their values are not used. Newer
    steps that fail to restore while an older one restores are corrupt: each
    is reported in one line and moved to `unreadable_checkpoints/`, so that
    the run saves that step afresh. If none restores, nothing is moved and
    UserError names the failures (the code or config may have changed).
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = (step, *self.restore(step, state, best_model))
      # Orbax and TensorStore raise many types for a damaged checkpoint.
      except Exception as error:  # pylint: disable=broad-exception-caught
        failures.append((step, _first_line(error)))
        continue
      self._set_aside(failures, step)
      return restored
    if failures:
      raise UserError(
          f'no checkpoint in {self.directory} can be restored ('
          + '; '.join(f'step {step}: {why}' for step, why in failures)
          + '); pass --overwrite to start afresh')
    return None

  def _set_aside(self, failures, restored_step: int):
    """Moves the unreadable steps out of the checkpoint folder."""
    for step, why in failures:
      print(f'skipped checkpoint step {step}, unreadable ({why}); moved to '
            f'{self._unreadable / str(step)}; resuming from step '
            f'{restored_step}', file=sys.stderr, flush=True)
      if jax.process_index() == 0:
        destination = self._unreadable / str(step)
        shutil.rmtree(destination, ignore_errors=True)
        self._unreadable.mkdir(exist_ok=True)
        shutil.move(self.directory / str(step), destination)
    if failures:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('lra_ponet: checkpoints set aside')
      self._manager.reload()

  def reached_preemption(self, step: int) -> bool:
    """Whether all processes agreed to stop at `step` for a preemption.

    Multi-process runs only: JAX's preemption service catches SIGTERM on any
    host and picks a step at which every host saves.
    """
    return self._manager.reached_preemption(step)

  def close(self):
    self._manager.close()

"""How a run stops early: a non-finite value, or SIGINT and SIGTERM."""

import math
import signal
import sys
import threading

import jax

from lra_ponet.errors import UserError


class NonFiniteError(UserError):
  """A loss, gradient or updated parameter became NaN or infinite.

  The state of that step was not saved.
  """


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after it saved a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # The shell's convention: 130 for Ctrl-C.


class StopRequests:
  """SIGINT (Ctrl-C) and SIGTERM ask the loop to checkpoint and stop.

  The handler only records the request; the loop acts on it between steps,
  because an exception raised mid-step could leave the donated state half
  updated. A second signal aborts at once, without a checkpoint. In runs of
  several processes JAX's preemption service owns SIGTERM and picks a step at
  which every process stops, so no handler is installed there.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum
    print(f'\n{signal.Signals(signum).name}: saving a checkpoint after this '
          'step, then stopping (send it again to abort without saving)',
          file=sys.stderr, flush=True)

  def requested(self, step: int, checkpoints) -> bool:
    if (self.signum is None and jax.process_count() > 1
        and checkpoints.reached_preemption(step)):
      self.signum = signal.SIGTERM
    return self.signum is not None


def check_finite(fetched: dict, step: int, checkpoints):
  """Raises NonFiniteError if step's fetched metrics are not all finite."""
  loss, grad_norm = float(fetched['loss']), float(fetched['grad_norm'])
  if (math.isfinite(loss) and math.isfinite(grad_norm)
      and fetched['params_finite']):
    return
  latest = checkpoints.latest_step()
  kept = (f'the last good checkpoint, step {latest}, is kept in '
          f'{checkpoints.directory / str(latest)}' if latest is not None
          else 'no checkpoint had been saved yet')
  params = 'finite' if fetched['params_finite'] else 'not finite'
  raise NonFiniteError(
      f'non-finite training loss, gradient or updated parameters at step '
      f'{step} (loss {loss}, gradient norm {grad_norm}, parameters '
      f'{params}); the run stopped and {kept}; a lower learning_rate or '
      'a grad_clip_norm may help (in a new --workdir)')

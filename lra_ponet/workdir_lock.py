"""One run at a time per workdir.

Two runs writing one workdir (a second terminal, a job scheduled twice) would
interleave their checkpoints and metrics. The run holds an exclusive `flock`
on `<workdir>/lock`; the kernel drops it when the holder exits or is killed,
so a lock file left by a killed run never blocks a resume. The file's text
(pid and host of the holder) only names the holder in the refusal.
"""

import contextlib
import fcntl
import os
import pathlib
import socket
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from lra_ponet.errors import UserError

LOCK_FILE = 'lock'


def _holder(path: pathlib.Path) -> str:
  try:
    text = path.read_text(encoding='utf-8', errors='replace').strip()
  except OSError:
    text = ''
  return text or 'another process'


def _acquire(workdir: pathlib.Path):
  """(descriptor holding the lock or None, refusal message or None)."""
  path = workdir / LOCK_FILE
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:
    # The same line as checkpoint.prepare_workdir's, which a run without the
    # lock (a direct train_and_evaluate call) reaches instead.
    return None, (f'cannot use {workdir} as the workdir: '
                  f'{error.strerror or error} ({error.filename}); choose '
                  'another --workdir')
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(descriptor)
    return None, (f'{workdir} is in use by the run of {_holder(path)}; wait '
                  'for it to end or stop it, or choose another --workdir')
  except OSError as error:  # A file system without locks (some FUSE mounts).
    os.close(descriptor)
    print(f'warning: cannot lock {path} ({error.strerror}); make sure no '
          'other run uses this workdir', file=sys.stderr)
    return None, None
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor,
            f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
  return descriptor, None


@contextlib.contextmanager
def hold(workdir):
  """Holds the workdir's lock inside the block; UserError if it is taken.

  In a run of several processes, process 0 holds it for all of them (they
  share the workdir) and tells every process whether it got it, so that all
  of them stop when it is refused. A workdir made here that holds nothing
  else at the end (the run failed at once, e.g. on a bad config) is removed.
  """
  workdir = pathlib.Path(workdir)
  made = not workdir.exists()
  descriptor, refusal = None, None
  if jax.process_index() == 0:
    descriptor, refusal = _acquire(workdir)
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(
        np.int32(refusal is not None))
    if refused and refusal is None:
      refusal = (f'process 0 could not lock {workdir / LOCK_FILE}; see its '
                 'error')
  if refusal:
    raise UserError(refusal)
  try:
    yield
  finally:
    if descriptor is not None:
      if made and os.listdir(workdir) == [LOCK_FILE]:
        os.unlink(workdir / LOCK_FILE)
        with contextlib.suppress(OSError):  # Another run made a file since.
          workdir.rmdir()
      os.close(descriptor)  # Releases the lock.

"""Keeps freed host memory mapped, so a CPU step reuses its buffers.

glibc's malloc serves the threads of a process from several arenas, maps
every request above its threshold (at most 32 MiB) on its own and unmaps it
when freed, and gives the free top of its heap back to the kernel. XLA's CPU
runtime frees a step's buffers when the step ends, so each step maps its
large buffers afresh and the kernel zeroes them page by page on first touch:
in a ListOps training run with huge pages a third of the CPU time was the
kernel clearing pages. `retain_freed_memory` sets malloc to one arena, no
separate maps and no trimming below 2 GiB (`mallopt`), so that the next step
finds its buffers already mapped. It changes where buffers live, not what is
computed: results stay bit-identical. The price is that the process keeps its
peak heap until it ends.

The trainer and the evaluator apply it to themselves before jax starts its
threads; the harness starts its cells (the official code's too, in
benchmarks/official_cpu.py) with the same settings as GLIBC_TUNABLES, which
its rows record. `LRA_PONET_HOST_MEMORY=system`, or a GLIBC_TUNABLES that
sets any `glibc.malloc` field, leaves malloc as it is.
"""

import ctypes
import ctypes.util
import os
import platform

from lra_ponet.errors import UserError

ENV = 'LRA_PONET_HOST_MEMORY'
RETAINED = 'retained'
SYSTEM = 'system'
# mallopt's parameter numbers (glibc malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 2**31 - 1))
# The same settings as GLIBC_TUNABLES, for a process started afresh.
TUNABLES = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
            f'glibc.malloc.trim_threshold={2**31 - 1}')
_applied = None


def _glibc():
  """The process's C library if it is glibc, else None."""
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  libc = ctypes.CDLL(ctypes.util.find_library('c') or None)
  return libc if hasattr(libc, 'mallopt') else None


def wanted(environ=None) -> bool:
  """Whether the environment leaves the choice to the suite."""
  environ = os.environ if environ is None else environ
  choice = environ.get(ENV, RETAINED)
  if choice not in (RETAINED, SYSTEM):
    raise UserError(f'{ENV}={choice!r}: use {RETAINED} or {SYSTEM}')
  return (choice == RETAINED
          and 'glibc.malloc.' not in environ.get('GLIBC_TUNABLES', ''))


def child_tunables(environ=None) -> str:
  """The GLIBC_TUNABLES to start a child process with."""
  environ = os.environ if environ is None else environ
  own = environ.get('GLIBC_TUNABLES', '')
  if not wanted(environ):
    return own
  return f'{own}:{TUNABLES}' if own else TUNABLES


def retain_freed_memory() -> str:
  """Applies the settings once where wanted and possible; returns the mode."""
  global _applied
  if _applied is None:
    libc = _glibc() if wanted() else None
    _applied = libc is not None and all(libc.mallopt(param, value) == 1
                                        for param, value in SETTINGS)
  return mode()


def mode(environ=None) -> str:
  """What this process runs with, as results record it (`host_memory`):
  `retained` where it applied the settings or was started with them (a
  harness cell), else `system`."""
  environ = os.environ if environ is None else environ
  started_with = TUNABLES in environ.get('GLIBC_TUNABLES', '')
  return RETAINED if _applied or started_with else SYSTEM

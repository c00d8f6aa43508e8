"""What made a result: the device, the libraries' versions, the code's.

Every result carries the stamp (results.json, each record of
evaluations.jsonl, each bench CSV row), so that a number pasted elsewhere
says what made it:

  device              '<count> x <device kind> (<platform>)'; the bench CSV
                      has its parts: device_count, device_kind, platform
  jax_version, jaxlib_version, flax_version, optax_version, numpy_version
  git_commit          HEAD of the git checkout the code ran from
  git_clean           whether the code had no uncommitted edits (untracked
                      files and results/ not counted)
  xla_flags           the XLA_FLAGS the process ran with
  host_memory         `retained` or `system` (lra_ponet.host_memory)
  host_cpu            the host's CPU model and its logical cores, e.g.
                      'AMD EPYC, 2 cores': the device of a CPU result, and
                      what feeds an accelerator

Outside a git checkout (an installed wheel, no git) both git fields are None:
null in JSON, an empty CSV cell. Files written before a field existed lack
it; the report shows the commit as unknown.
"""

import importlib
import os
import pathlib
import platform
import subprocess

import jax

from lra_ponet import host_memory

LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
# The checkout holding the lra_ponet package, if it is one.
ROOT = pathlib.Path(__file__).resolve().parents[1]


def device(devices=None, platform=None) -> str:
  """'<count> x <device kind> (<platform>)' of jax's devices, or those given."""
  fields = device_fields(devices, platform)
  return (f'{fields["device_count"]} x {fields["device_kind"]} '
          f'({fields["platform"]})')


def device_fields(devices=None, platform=None) -> dict:
  """The device as the bench CSV's columns."""
  devices = devices or jax.devices()
  return {'device_kind': devices[0].device_kind,
          'device_count': len(devices),
          'platform': platform or jax.default_backend()}


def versions() -> dict:
  """`<library>_version` of each of LIBRARIES, git_commit and git_clean,
  the XLA_FLAGS the process runs with (`xla_flags`), its malloc settings
  (`host_memory`: `retained` or `system`, see host_memory) and the host's
  CPU (`host_cpu`)."""
  stamp = {f'{name}_version': importlib.import_module(name).__version__
           for name in LIBRARIES}
  stamp.update(code_version())
  stamp['xla_flags'] = os.environ.get('XLA_FLAGS', '')
  stamp['host_memory'] = host_memory.mode()
  stamp['host_cpu'] = host_cpu()
  return stamp


def host_cpu() -> str:
  """'<CPU model>, <n> cores' of this host; the model from /proc/cpuinfo
  where there is one (Linux), else the platform's processor name."""
  model = ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as info:
      for line in info:
        key, _, value = line.partition(':')
        # x86 names it 'model name', some ARM kernels 'Model'.
        if key.strip() in ('model name', 'Model') and value.strip():
          model = value.strip()
          break
  except OSError:
    pass
  model = model or platform.processor() or 'unknown CPU'
  return f'{model}, {os.cpu_count()} cores'


def _git(*args) -> str:
  # No optional locks: a read must not touch the index others are using.
  return subprocess.run(['git', *args], cwd=ROOT, capture_output=True,
                        text=True, check=True,
                        env=dict(os.environ, GIT_OPTIONAL_LOCKS='0')).stdout


def code_version() -> dict:
  """git_commit and git_clean of ROOT; both None where it is no checkout."""
  unknown = {'git_commit': None, 'git_clean': None}
  try:
    top, commit = _git('rev-parse', '--show-toplevel', 'HEAD').splitlines()
    if pathlib.Path(top).resolve() != ROOT:
      return unknown  # Installed inside another repository (its virtualenv).
    # Results the suite itself appends do not make the code dirty.
    edits = _git('status', '--porcelain', '--untracked-files=no', '--', '.',
                 ':(exclude)results')
  except (OSError, subprocess.CalledProcessError, ValueError):
    return unknown
  return {'git_commit': commit, 'git_clean': not edits.strip()}

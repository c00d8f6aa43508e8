"""Prints the newest CPython on this machine newer than the one running this.

Looks at pythonX.Y on PATH and at pyenv's versions; prints nothing when none
is newer. Free-threaded builds are left out (not every wheel exists for
them).
"""

import glob
import os
import pathlib
import re
import subprocess
import sys


def candidates():
  for folder in os.environ.get('PATH', '').split(os.pathsep):
    yield from glob.glob(os.path.join(folder, 'python3.[0-9]*'))
  root = os.environ.get('PYENV_ROOT', str(pathlib.Path.home() / '.pyenv'))
  yield from glob.glob(os.path.join(root, 'versions', '3.*', 'bin', 'python3'))


def version_of(executable):
  """(major, minor) of a working, GIL-enabled CPython, or None."""
  if not re.search(r'python3(\.\d+)?$', executable):
    return None
  try:
    out = subprocess.run(
        [executable, '-c', 'import sys, sysconfig; print(*sys.version_info'
         '[:2], int(bool(sysconfig.get_config_var("Py_GIL_DISABLED"))))'],
        capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  major, minor, free_threaded = map(int, out.split())
  return None if free_threaded else (major, minor)


def main():
  best, best_version = None, sys.version_info[:2]
  for executable in candidates():
    version = version_of(executable)
    if version and version > best_version:
      best, best_version = executable, version
  if best:
    print(best)


if __name__ == '__main__':
  main()

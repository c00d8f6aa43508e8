"""The suite's default XLA flags on CPUs, set by its commands before jax starts.

jaxlib 0.10 and 0.12 hand dots and the element-wise work around them to
YNNPACK fusions on CPUs. In the suite's training steps those run slower than
XLA's own emitters with Eigen's dots: on the 2-core CPU machine (Text, batch
1, 4,096 tokens) FNet's step took 48 ms with them and 31 ms without, PoNet's
60 and 46 ms (README, "Faster than the official code"). So every command of
the suite (`run`, `evaluate`, `bench`, whose cells inherit it) adds
`--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusion) to XLA_FLAGS,
unless XLA_FLAGS already sets that flag or LRA_PONET_XLA_DEFAULTS=0. XLA
aborts on a flag it does not know, so the flag is first tried in a
subprocess, once per jaxlib version (the answer is kept in the cache
directory). The flags a result ran with are in its stamp (`xla_flags`).
"""

import json
import os
import subprocess
import sys
from importlib import metadata

from lra_ponet import input_pipeline

FLAG_NAME = 'xla_cpu_experimental_ynn_fusion_type'
CPU_DEFAULTS = (f'--{FLAG_NAME}=',)


def _accepted(flags) -> bool:
  """Whether this jaxlib starts with `flags` (asked once, then cached)."""
  version = metadata.version('jaxlib')
  path = input_pipeline.cache_dir() / 'xla_flags.json'
  try:
    known = json.loads(path.read_text())
  except (OSError, ValueError):
    known = {}
  key = f'{version} {" ".join(flags)}'
  if key not in known:
    probe = subprocess.run(
        [sys.executable, '-c', 'import jax; jax.devices("cpu")'],
        env=dict(os.environ, XLA_FLAGS=' '.join(flags),
                 LRA_PONET_XLA_DEFAULTS='0'),
        capture_output=True, check=False, timeout=120)
    known[key] = probe.returncode == 0
    try:
      path.write_text(json.dumps(known, indent=1, sort_keys=True))
    except OSError:
      pass  # A read-only cache only costs the probe next time.
  return known[key]


def set_cpu_defaults():
  """Adds CPU_DEFAULTS to XLA_FLAGS where this jaxlib knows them."""
  current = os.environ.get('XLA_FLAGS', '')
  if os.environ.get('LRA_PONET_XLA_DEFAULTS') == '0' or FLAG_NAME in current:
    return
  if _accepted(CPU_DEFAULTS):
    os.environ['XLA_FLAGS'] = ' '.join([current, *CPU_DEFAULTS]).strip()

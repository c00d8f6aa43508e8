"""Shared fixtures: an isolated cache and tiny ListOps data in release format.

The suite runs on the CPU whatever accelerator the machine has: its tolerances,
device counts and memory figures are the CPU's. Set before JAX is imported, the
variables reach every subprocess too.
"""

import os
import subprocess
import sys

# Tiny models run a few steps, so most of a test's time is XLA compiling.
# Without LLVM's optimisations it compiles about twice as fast (the padding
# tests of test_models.py: 52 s instead of 111 s on two cores), and with
# XLA's elemental emitters in place of its MLIR fusion emitters about twice
# as fast again (a tiny PoNet training step: 0.9 s instead of 2.1 s); the
# results differ from optimised code by float rounding only.
FAST_COMPILE = ('--xla_backend_optimization_level=0',
                '--xla_llvm_disable_expensive_passes=true',
                '--xla_cpu_use_fusion_emitters=false')


def _xla_accepts(flags) -> bool:
  # XLA aborts the process on a flag it does not know (jaxlib 0.12 has no
  # fusion-emitter switch), so each set is tried in a subprocess.
  probe = subprocess.run(
      [sys.executable, '-c', 'import jax; jax.devices()'],
      env=dict(os.environ, XLA_FLAGS=' '.join(flags)), capture_output=True,
      check=False)
  return probe.returncode == 0


def _set_fast_compile_flags():
  """Adds to XLA_FLAGS the FAST_COMPILE flags this jaxlib knows, once.

  pytest-xdist's workers and the tests' subprocesses inherit the result.
  """
  if os.environ.get('LRA_PONET_TEST_FAST_COMPILE') == 'set':
    return
  flags = list(FAST_COMPILE)
  if not _xla_accepts(flags):
    flags = [flag for flag in FAST_COMPILE if _xla_accepts([flag])]
  os.environ['XLA_FLAGS'] = ' '.join(
      [os.environ.get('XLA_FLAGS', ''), *flags]).strip()
  os.environ['LRA_PONET_TEST_FAST_COMPILE'] = 'set'


os.environ['JAX_PLATFORMS'] = 'cpu'
_set_fast_compile_flags()
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv('LRA_PONET_CACHE',
                     str(tmp_path_factory.getbasetemp() / 'cache'))


@pytest.fixture(scope='session')
def tiny_listops_dir(tmp_path_factory):
  """A release-style folder (`listops-1000/basic_*.tsv`) of generated data."""
  from lra_ponet.tasks import listops_generator
  root = tmp_path_factory.mktemp('lra_release')
  listops_generator.generate_listops(root / 'listops-1000', seed=0,
                                     num_train=64, num_val=16, num_test=16,
                                     workers=1, progress=False)
  return root


def run_cli(*args, module='lra_ponet.run', cache=None, timeout=300):
  """Runs a CLI module in a subprocess; returns the CompletedProcess."""
  env = dict(os.environ)
  if cache:
    env['LRA_PONET_CACHE'] = str(cache)
  return subprocess.run([sys.executable, '-m', module, *map(str, args)],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


TINY_LISTOPS = ('--config.max_len=256', '--config.padded_len=256',
                '--config.batch_size=4', '--config.eval_batch_size=8',
                '--config.train_steps=4', '--config.eval_every=2',
                '--config.warmup_steps=2', '--config.model.num_layers=1',
                '--config.model.dim=16', '--config.model.mlp_dim=32')

# Each mixer's own sizes scaled to sequences of about 16 tokens, so that a
# tiny test exercises its sparse pattern, pooling or projection rather than a
# window that covers the whole input (and compiles fast).
SHORT_MIXER_SETTINGS = {
    'bigbird': dict(block_size=2, num_rand_blocks=1),
    'cluster_former': dict(window=4, chunk_size=4, num_clusters=4),
    'linformer': dict(k=8),
    'longformer': dict(window_size=4),
    'lstr': dict(stages='4x1,8x1'),
    'nystromformer': dict(num_landmarks=4, conv_kernel_size=3),
    'performer': dict(num_features=32),
    'poolingformer': dict(window1=4, window2=8, pool_size=2),
    'pyramidion': dict(chunk_size=8),
    'reformer': dict(chunk_length=4),
    's4d': dict(state_dim=16),
}


def tiny_model_config(name, length=14, short=False, **overrides):
  """A 2-layer, 16-wide model config for sequences of `length` tokens.

  `short`: the mixer's own sizes scaled to such lengths (SHORT_MIXER_SETTINGS).
  """
  import ml_collections  # pylint: disable=import-outside-toplevel
  from lra_ponet import models  # pylint: disable=import-outside-toplevel
  from lra_ponet.configs import base  # pylint: disable=import-outside-toplevel
  model = base.model_config(num_layers=2, dim=16, num_heads=2, mlp_dim=32,
                            segment_num=3, pooling='mean')
  model.update(overrides)
  config = ml_collections.ConfigDict(dict(max_len=length, padded_len=length,
                                          model=model))
  model = models.configure_mixer(config, name).model
  if short and name in SHORT_MIXER_SETTINGS:
    model[name].update(SHORT_MIXER_SETTINGS[name])
  return model


def torch_one_cycle(k, total, pct_start, start, middle, end):
  """PyTorch OneCycleLR.get_lr (linear, three_phase=False) at last_epoch=k.

  Written from its source: for lr, start = max_lr / div_factor, middle =
  max_lr, end = start / final_div_factor; for momentum, max -> base -> max.
  """
  phases = [(float(pct_start * total) - 1, start, middle),
            (total - 1, middle, end)]
  start_step = 0.0
  for index, (end_step, low, high) in enumerate(phases):
    if k <= end_step or index == len(phases) - 1:
      pct = (k - start_step) / (end_step - start_step)
      return (high - low) * pct + low
    start_step = end_step
  raise AssertionError('unreachable')

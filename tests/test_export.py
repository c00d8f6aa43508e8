"""Every mixer's training step lowers for CUDA and TPU, with neither here.

`python -m lra_ponet.bench --export_platforms=...` exports each cell's real
step (jax.export); a missing lowering is a named failure and a non-zero
exit. cuDNN attention cannot lower without cuDNN, so its arguments are
checked here against the XLA implementation of the same call.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import run_cli
from lra_ponet import models
from lra_ponet.baselines import attention
from lra_ponet.baselines import transformer
from lra_ponet.bench import export

pytestmark = pytest.mark.smoke

TINY = ('--task=listops', '--lengths=64', '--batch_size=2',
        '--config.model.num_layers=1', '--config.model.dim=16',
        '--config.model.mlp_dim=32')


def export_lines(stdout):
  """(model label, platform) -> the line's status word."""
  lines = re.findall(r'^\[ *\d+\] (.+?) +L=64 +B=2 +\w+ +(\w+) +(\w+)',
                     stdout, re.MULTILINE)
  return {(name, platform): status for name, platform, status in lines}


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_every_mixer_lowers_for_cuda_and_tpu(dtype):
  attentions = 'xla,cudnn' if dtype == 'bfloat16' else 'xla'
  process = run_cli('--export_platforms=cuda,tpu', f'--dtype={dtype}',
                    f'--models={",".join(models.MIXERS)}',
                    f'--attention={attentions}', *TINY,
                    module='lra_ponet.bench')
  assert process.returncode == 0, process.stdout[-3000:] + process.stderr
  lines = export_lines(process.stdout)
  for name in models.MIXERS:
    label = 'transformer (xla)' if name == 'transformer' else name
    assert lines[label, 'cuda'] == lines[label, 'tpu'] == 'ok', name
  cells = len(models.MIXERS) + (dtype == 'bfloat16')
  assert len(lines) == 2 * cells
  if dtype == 'bfloat16':
    assert lines['transformer (cudnn)', 'cuda'] == 'skipped'
    assert 'cuda skipped: cuDNN attention lowers only where cuDNN is ' \
        'installed' in process.stdout
    assert 'tpu  skipped: cuDNN attention exists on NVIDIA GPUs only' in (
        process.stdout)
  skipped = 2 if dtype == 'bfloat16' else 0
  assert process.stdout.rstrip().endswith(
      f'Done: {2 * cells - skipped} lowered, {skipped} skipped, 0 failed, '
      f'of {cells} cells x cuda, tpu')


def test_a_missing_lowering_names_its_op(monkeypatch, capsys):
  # The Schur decomposition has a CPU lowering only.
  schur_step = jax.jit(lambda x_NxN: jax.lax.linalg.schur(x_NxN)[0].sum())
  monkeypatch.setattr(export, 'cell_step', lambda cell: (
      schur_step, (jax.ShapeDtypeStruct((4, 4), jnp.float32),)))
  cell = {'attention': '', 'length': 4, 'batch_size': 1, 'dtype': 'float32'}
  statuses = export.run([('schur', cell)], ['cpu', 'cuda', 'tpu'])
  assert statuses == {'ok': 1, 'error': 2}
  out = capsys.readouterr().out
  for platform in ('cuda', 'tpu'):
    assert (f"{platform:<4} error: NotImplementedError: MLIR translation rule "
            f"for primitive 'schur' not found for platform {platform}") in out


def test_unknown_platform_is_one_line():
  process = run_cli('--export_platforms=gpu', *TINY, module='lra_ponet.bench')
  assert process.returncode == 1
  assert process.stderr.strip().splitlines()[-1] == (
      "error: --export_platforms: unknown platform 'gpu'; use one or more "
      'of cuda, rocm, tpu, cpu')


def test_cudnn_arguments_mean_the_xla_attention_with_padding_at_the_end():
  batch, length, heads, width = 2, 6, 2, 4
  keys = jax.random.split(jax.random.key(0), 3)
  query, key, value = (
      jax.random.normal(k, (batch, length, heads, width), jnp.bfloat16)
      for k in keys)
  mask_BxL = jnp.arange(length)[None] < jnp.array([[6], [3]])
  arguments = transformer.cudnn_arguments(query, key, value, mask_BxL)
  # BTNH: batch, length, heads, head width; the dtype is kept for cuDNN.
  for name in ('query', 'key', 'value'):
    assert arguments[name].shape == (batch, length, heads, width)
    assert arguments[name].dtype == jnp.bfloat16
  assert arguments['key_value_seq_lengths'].dtype == jnp.int32
  np.testing.assert_array_equal(arguments['key_value_seq_lengths'], [6, 3])
  assert arguments['implementation'] == 'cudnn'
  # The same call on XLA equals the suite's masked attention.
  fused = jax.nn.dot_product_attention(**dict(arguments,
                                              implementation='xla'))
  dense = attention.dense_attention(query, key, value, mask_BxL[:, None],
                                    nnx.Dropout(0.0, rngs=nnx.Rngs(0)))
  np.testing.assert_allclose(np.asarray(fused, np.float32),
                             np.asarray(dense, np.float32), atol=2e-2)

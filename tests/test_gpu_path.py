"""The GPU measurement path, run on the CPU with a stand-in device.

The cell's step compiles and runs on the CPU; the memory counters, the
device's name and its peak rates come from a fake device object shaped like
jax's (device_kind, memory_stats()), as an H100 or H200 reports them.
"""

import pytest

from lra_ponet import stamp
from lra_ponet.bench import child
from lra_ponet.bench import schema
from lra_ponet.bench import sweep

pytestmark = pytest.mark.smoke

GIB = 2**30


class StandIn:
  """A jax device as far as the harness reads one."""

  def __init__(self, kind, stats=None):
    self.device_kind = kind
    self._stats = stats

  def memory_stats(self):
    if isinstance(self._stats, Exception):
      raise self._stats
    return self._stats


class NoCounters:
  device_kind = 'cpu'


def tiny_cell(**fields):
  cell = {'task': 'listops', 'preset': 'ponet', 'model': 'ponet',
          'attention': '', 'length': 32, 'batch_size': 1,
          'dtype': 'float32', 'steps': 2, 'warmup': 2,
          'memory_cap_bytes': None,
          'overrides': {'model.num_layers': '1', 'model.dim': '16',
                        'model.mlp_dim': '32'}}
  cell.update(fields)
  return cell


@pytest.mark.parametrize('device, expected', [
    (StandIn('NVIDIA H100 80GB HBM3', {'bytes_limit': 80 * GIB,
                                       'peak_bytes_in_use': 5}),
     {'bytes_limit': 80 * GIB, 'peak_bytes_in_use': 5}),
    (StandIn('cpu', None), {}),  # jax's CPU device: memory_stats() is None.
    (StandIn('TPU v4', NotImplementedError('no stats')), {}),
    (NoCounters(), {}),
])
def test_memory_stats_of_any_device(device, expected):
  assert child.memory_stats(device) == expected


@pytest.mark.parametrize('kind, gb_per_s', [('NVIDIA H100 80GB HBM3', 3350.0),
                                            ('NVIDIA H200', 4800.0)])
def test_a_cell_on_a_stand_in_gpu_reads_its_memory_and_peaks(kind, gb_per_s):
  device = StandIn(kind, {'bytes_limit': 80 * GIB,
                          'peak_bytes_in_use': 3 * 2**20})
  result = child.measure(tiny_cell(), device)
  assert result['status'] == 'ok'
  assert (result['bytes_limit'], result['memory_cap_bytes'],
          result['peak_bytes_in_use']) == (80 * GIB, 80 * GIB, 3 * 2**20)
  assert (result['peak_tflops_per_s'], result['peak_gb_per_s']) == (
      67.0, gb_per_s)
  assert result['tflops_fraction'] == pytest.approx(
      result['flops_per_step'] * result['steps_per_s'] / 1e12 / 67.0)
  assert result['bandwidth_fraction'] == pytest.approx(
      result['bytes_per_step'] * result['steps_per_s'] / 1e9 / gb_per_s)
  line = sweep.describe(result)
  assert 'of peak FLOP/s' in line and 'peak 3.0 MiB' in line


def test_a_plan_beyond_the_device_memory_is_an_oom_row():
  device = StandIn('NVIDIA H100 80GB HBM3', {'bytes_limit': 1024,
                                             'peak_bytes_in_use': 0})
  cell = tiny_cell()
  result = child.measure(cell, device)
  assert result['status'] == 'OOM' and 'ms_median' not in result
  assert result['reason'].startswith('compiled plan 0.00 GiB exceeds the '
                                     'memory cap 0.00 GiB')
  row = schema.row_for(cell, result, {'device_kind': device.device_kind})
  assert (row['status'], row['bytes_limit'], row['memory_cap_bytes']) == (
      'OOM', 1024, 1024)


def test_a_device_without_counters_is_capped_by_the_host_memory():
  result = child.measure(tiny_cell(), NoCounters())
  assert result['status'] == 'ok'
  assert result['bytes_limit'] is None and result['peak_bytes_in_use'] is None
  assert result['memory_cap_bytes'] == child.host_memory_bytes()
  assert 'peak_gb_per_s' not in result  # No datasheet for the kind 'cpu'.


def test_each_cell_process_allocates_only_what_it_needs(monkeypatch):
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'true')
  monkeypatch.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/x')
  env = sweep.child_env()
  assert env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  assert env['XLA_FLAGS'] == '--xla_dump_to=/tmp/x'  # The rest passes on.


def test_the_device_is_named_with_its_count_and_platform():
  gpus = [StandIn('NVIDIA H200')] * 8
  assert stamp.device(gpus, 'gpu') == '8 x NVIDIA H200 (gpu)'
  assert stamp.device_fields(gpus, 'gpu') == {
      'device_kind': 'NVIDIA H200', 'device_count': 8, 'platform': 'gpu'}

"""The child: compiles and times one cell in this process.

`python -m lra_ponet.bench --cell=<json>` runs `run_cell_here`, `--probe`
runs `probe_here`; the parent (`sweep`) reads what they print after MARKER.
"""

import json
import math
import os
import re
import time

import jax
import numpy as np
from flax import nnx

from lra_ponet import config_lib
from lra_ponet import tasks
from lra_ponet import models
from lra_ponet import stamp
from lra_ponet import steps
from lra_ponet.bench import peaks

# The child prints its results on stdout as JSON after this marker: once after
# compiling (so a TIMEOUT still records the compile figures) and once at the
# end.
MARKER = 'BENCH_CELL '
OOM_PATTERN = re.compile(
    r'RESOURCE_EXHAUSTED|resource exhausted|out of memory', re.IGNORECASE)


def cell_config(cell):
  """The task config with the overrides, the cell's model, length, batch and
  dtype."""
  config = tasks.get_config(cell['task'], cell['preset'], cell['model'])
  config_lib.apply_overrides(config, cell.get('overrides', {}))
  if cell['model'] == 'transformer':
    config.model.transformer.attention = cell['attention'] or 'xla'
  config.model.dtype = cell['dtype']
  config.max_len = config.padded_len = cell['length']
  config.batch_size = cell['batch_size']
  # The cells feed no padding (ids from 1, a full mask), whatever the preset.
  config.official_pixel_quirks = False
  return config


def _emit(fields):
  print(MARKER + json.dumps(fields), flush=True)


def _first(analysis):
  """cost_analysis() is a dict or, on older jax, a list of one dict."""
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis or {}


def memory_plan(compiled) -> dict:
  stats = compiled.memory_analysis()
  parts = {name: int(getattr(stats, f'{name}_size_in_bytes', 0) or 0)
           for name in ('argument', 'output', 'alias', 'temp',
                        'generated_code')}
  plan = {f'plan_{name}_bytes': size for name, size in parts.items()}
  plan['plan_total_bytes'] = (parts['argument'] + parts['output']
                              - parts['alias'] + parts['temp']
                              + parts['generated_code'])
  xla_peak = getattr(stats, 'peak_memory_in_bytes', None)
  plan['plan_xla_peak_bytes'] = int(xla_peak) if xla_peak else None
  return plan


def host_memory_bytes() -> int:
  return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def is_oom(message: str) -> bool:
  return bool(OOM_PATTERN.search(message))


def flat_step(train_step, state):
  """`train_step` as a function of the state's leaves (a list of arrays)."""
  treedef = jax.tree.structure(state)

  def step(leaves, batch):
    new_state, metrics = train_step(jax.tree.unflatten(treedef, leaves),
                                    batch)
    return jax.tree.leaves(new_state), metrics

  return step


def random_batch(cell, info):
  """Random ids of the task's vocabulary and labels, the same every run."""
  shape = (cell['batch_size'], 2, cell['length']) if info.paired else (
      cell['batch_size'], cell['length'])
  rng = np.random.default_rng(0)
  # Ids from 1 up: id 0 is padding, and the cell measures a full mask.
  return jax.device_put({
      'inputs': rng.integers(1, info.vocab_size, shape, dtype=np.int32),
      'label': rng.integers(0, info.num_classes, cell['batch_size'],
                            dtype=np.int32)})


def compile_step(graphdef, state, batch):
  """(compiled step, flat state, its compile time, cost and memory plan)."""
  step = jax.jit(flat_step(steps.make_train_step(graphdef,
                                                 mask_zero_tokens=True),
                            state), donate_argnums=0)
  # The state as a flat list of arrays: a call then costs no Python walk
  # over the Variables (about 0.1 ms per leaf here, which would charge a
  # model for the number of its parameter tensors).
  state = jax.tree.leaves(state)
  tick = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  fields = {'compile_s': time.perf_counter() - tick}
  cost = _first(compiled.cost_analysis())
  fields['flops_per_step'] = cost.get('flops')
  fields['bytes_per_step'] = cost.get('bytes accessed')
  fields.update(memory_plan(compiled))
  return compiled, state, fields


def time_steps(compiled, state, batch, warmup: int, steps: int) -> list:
  """Milliseconds of each timed step, after the warm-up steps."""
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
  times_ms = []
  for _ in range(steps):
    tick = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times_ms.append((time.perf_counter() - tick) * 1e3)
  return times_ms


def memory_stats(device) -> dict:
  """The device's allocator counters; empty where it keeps none (CPU)."""
  read = getattr(device, 'memory_stats', None)
  try:
    return (read() if read else None) or {}
  except (NotImplementedError, RuntimeError):  # A backend without them.
    return {}


def measure(cell, device=None) -> dict:
  """Compiles and times one cell in this process; emits partial results.

  `device` (default: jax's first) is where the memory figures and the
  device kind are read; the step runs on jax's default device.
  """
  device = device or jax.devices()[0]
  config = cell_config(cell)
  info = tasks.get_task(cell['task']).INFO
  graphdef, _, state = steps.create_train_state(config, info)
  result = {'num_params': models.count_params(nnx.merge(graphdef, state)[0])}
  batch = random_batch(cell, info)
  compiled, state, compiled_fields = compile_step(graphdef, state, batch)
  result.update(compiled_fields)

  result['bytes_limit'] = memory_stats(device).get('bytes_limit')
  cap = cell['memory_cap_bytes'] or result['bytes_limit'] or (
      host_memory_bytes())
  result['memory_cap_bytes'] = cap
  _emit(result)
  if result['plan_total_bytes'] > cap:
    result['status'] = 'OOM'
    plan_gib = result['plan_total_bytes'] / 2**30
    result['reason'] = (f'compiled plan {plan_gib:.2f} GiB exceeds the memory '
                        f'cap {cap / 2**30:.2f} GiB')
    return result

  times_ms = time_steps(compiled, state, batch, cell['warmup'], cell['steps'])
  median_ms = float(np.median(times_ms))
  steps_per_s = 1e3 / median_ms
  result.update(
      status='ok', reason='', ms_median=median_ms, ms_min=min(times_ms),
      ms_max=max(times_ms), steps_per_s=steps_per_s,
      tokens_per_s=math.prod(batch['inputs'].shape) * steps_per_s,
      peak_bytes_in_use=memory_stats(device).get('peak_bytes_in_use'))
  result.update(peaks.achieved(result, cell['dtype'], device.device_kind))
  return result


def error_line(error) -> str:
  """'<Type>: <first line of its message>', at most 300 characters."""
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0] if message else ""}'[:300]


def run_cell_here(cell_json: str):
  """The child's entry: measures, prints the result line, never raises."""
  try:
    result = measure(json.loads(cell_json))
  except Exception as error:  # pylint: disable=broad-except
    result = {'status': 'OOM' if is_oom(str(error)) else 'error',
              'reason': error_line(error)}
  _emit(result)


def probe_here():
  _emit(dict(stamp.device_fields(), **stamp.versions()))

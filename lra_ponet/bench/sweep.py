"""The parent: runs every cell of a sweep, each in a fresh subprocess.

A cell's subprocess starts with the device's peak memory counter at zero, and
its crash, out-of-memory or timeout ends that cell only: the row records it
and the sweep goes on.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from lra_ponet import host_memory
from lra_ponet.bench import child
from lra_ponet.bench import schema
from lra_ponet.errors import UserError

STOPPING = ('OOM', 'TIMEOUT')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every cell of a sweep shares: the command's flags of these names."""
  task: str
  preset: str
  dtype: str
  steps: int
  warmup: int
  cell_timeout: float
  memory_cap_gb: float | None
  tokens_per_batch: int | None
  until_oom: bool
  max_length: int
  run_after_failure: bool
  results_dir: str
  sweep_id: str | None
  # --config.FIELD=VALUE: field -> text, applied to each cell that has it.
  overrides: dict = dataclasses.field(default_factory=dict)


def child_env():
  # The measured peak must be what the step needed, not a preallocated pool.
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  tunables = host_memory.child_tunables()
  if tunables:
    env['GLIBC_TUNABLES'] = tunables
  return env


def parse_output(stdout: str) -> dict:
  fields = {}
  for line in stdout.splitlines():
    if line.startswith(child.MARKER):
      fields.update(json.loads(line[len(child.MARKER):]))
  return fields


def last_meaningful_line(stderr: str) -> str:
  """The last line of stderr that is not traceback scaffolding."""
  for line in reversed(stderr.splitlines()):
    line = line.strip()
    if line and not line.startswith(('File ', 'Traceback', '---', '^',
                                     'The above exception',
                                     'During handling', 'For simplicity')):
      return line[:300]
  return ''


def run_child(args, timeout: float):
  """Runs `python -m lra_ponet.bench ARGS`; returns (fields, stderr, rc).

  rc is None when the child ran past `timeout` and was killed. Output goes to
  files, so what a killed child printed before its end is still read.
  """
  command = [sys.executable, '-m', 'lra_ponet.bench', *args]
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    process = subprocess.Popen(command, stdout=out, stderr=err,
                               env=child_env(), text=True)
    try:
      rc = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      rc = None
    out.seek(0)
    err.seek(0)
    return parse_output(out.read()), err.read(), rc


def run_cell(cell, timeout: float) -> dict:
  """Measures one cell in a fresh subprocess; always returns a row's fields."""
  tick = time.perf_counter()
  fields, stderr, rc = run_child([f'--cell={json.dumps(cell)}'], timeout)
  fields['wall_s'] = time.perf_counter() - tick
  if rc is None:
    fields.update(status='TIMEOUT',
                  reason=f'past the {timeout:g} s cell budget')
  elif 'status' not in fields:
    if rc == -9 or child.is_oom(stderr):
      # A SIGKILL we did not send is most likely the host's OOM killer.
      fields.update(status='OOM', reason=last_meaningful_line(stderr)
                    or 'killed by SIGKILL (likely out of host memory)')
    else:
      fields.update(status='error', reason=last_meaningful_line(stderr)
                    or f'the cell exited with status {rc} and no message')
  return fields


def probe_device() -> dict:
  """The stamp of a subprocess (`lra_ponet.stamp`): device, versions, code."""
  fields, stderr, rc = run_child(['--probe'], timeout=300)
  if rc != 0 or 'device_kind' not in fields:
    raise UserError(f'could not start jax to read the device: '
                    f'{last_meaningful_line(stderr)}')
  return fields


def label(model: str, attention: str) -> str:
  return f'{model} ({attention})' if attention else model


def batch_for(length: int, batch_size: int, tokens_per_batch) -> int:
  if not tokens_per_batch:
    return batch_size
  if tokens_per_batch % length:
    raise UserError(f'--tokens_per_batch={tokens_per_batch} is not a multiple '
                    f'of length {length}')
  return tokens_per_batch // length


def make_cell(settings, model, attention, length, batch_size):
  return {'task': settings.task, 'preset': settings.preset, 'model': model,
          'attention': attention, 'length': length, 'batch_size': batch_size,
          'dtype': settings.dtype, 'steps': settings.steps,
          'warmup': settings.warmup, 'overrides': settings.overrides,
          'memory_cap_bytes': (int(settings.memory_cap_gb * 2**30)
                               if settings.memory_cap_gb else None)}


def describe(fields) -> str:
  if fields['status'] != 'ok':
    text = f'{fields["status"]}: {fields["reason"]}'
  else:
    text = (f'ok {fields["ms_median"]:,.1f} ms/step '
            f'({fields["steps_per_s"]:,.2f} steps/s)')
    if fields.get('gb_per_s') is not None:
      text += (f', {fields.get("tflops_per_s") or 0:.3g} TFLOP/s '
               f'{fields["gb_per_s"]:,.1f} GB/s')
    if fields.get('bandwidth_fraction') is not None:
      text += (f' ({fields.get("tflops_fraction") or 0:.1%} of peak FLOP/s, '
               f'{fields["bandwidth_fraction"]:.1%} of peak bandwidth)')
  if fields.get('plan_total_bytes') is not None:
    text += f', plan {fields["plan_total_bytes"] / 2**20:,.1f} MiB'
  if fields.get('peak_bytes_in_use') is not None:
    text += f', peak {fields["peak_bytes_in_use"] / 2**20:,.1f} MiB'
  if fields.get('compile_s') is not None:
    text += f', compile {fields["compile_s"]:.1f} s'
  return text


def stopped_in(rows) -> dict:
  """label -> (status, shortest length) of models that ran out already."""
  stopped = {}
  for row in sorted(rows, key=lambda row: int(row['length'])):
    name = label(row['model'], row['attention'])
    if row['status'] in STOPPING and name not in stopped:
      stopped[name] = (row['status'], int(row['length']))
  return stopped


def lengths_to_run(settings, lengths, stopped, mixers):
  """The listed lengths, then doublings while a model is still going."""
  yield from lengths
  if not settings.until_oom:
    return
  length = lengths[-1] * 2
  while (length <= settings.max_length
         and any(label(*mixer) not in stopped for mixer in mixers)
         and (not settings.tokens_per_batch
              or length <= settings.tokens_per_batch)):
    yield length
    length *= 2


def shared_fields(settings, device_stamp) -> dict:
  """The fields every row of this sweep shares: its id and the stamp."""
  started = datetime.datetime.now(datetime.timezone.utc)
  return dict(
      device_stamp, sweep_id=(settings.sweep_id
                              or f'{started:%Y%m%dT%H%M%SZ}-{os.getpid()}'),
      cell_timeout_s=settings.cell_timeout,
      glibc_tunables=child_env().get('GLIBC_TUNABLES', ''),
      tokens_per_batch=settings.tokens_per_batch or 0)


def setting_of(settings, device_stamp, batch_size) -> dict:
  """What a continued sweep must share with the rows it continues."""
  setting = {'device_kind': device_stamp['device_kind'],
             'task': settings.task, 'preset': settings.preset,
             'dtype': settings.dtype,
             'tokens_per_batch': settings.tokens_per_batch or 0,
             'steps': settings.steps, 'warmup': settings.warmup}
  if not settings.tokens_per_batch:
    setting['batch_size'] = batch_size
  return setting


def announce(settings, shared, batch_size, path):
  print(f'Sweep {shared["sweep_id"]} on {shared["device_count"]} x '
        f'{shared["device_kind"]}: {settings.task} config, {settings.dtype}, '
        + (f'{settings.tokens_per_batch:,} tokens per batch'
           if settings.tokens_per_batch else f'batch {batch_size}')
        + f'; rows go to {path}', flush=True)


def measure_or_skip(settings, cell, stopped, doubling) -> dict:
  """The cell's fields; a model in `stopped` is not run, and may join it."""
  name = label(cell['model'], cell['attention'])
  if name in stopped:
    status, at = stopped[name]
    return {'status': status, 'reason': f'not run: {status} at length {at:,}'}
  fields = run_cell(cell, settings.cell_timeout)
  failed = fields['status'] in STOPPING or (
      doubling and fields['status'] != 'ok')
  if failed and not settings.run_after_failure:
    stopped[name] = (fields['status'], cell['length'])
  return fields


def run(settings, lengths, mixers, batch_size, device_stamp):
  """Runs every cell, appending each row as soon as it is known."""
  shared = shared_fields(settings, device_stamp)
  path = pathlib.Path(settings.results_dir) / (
      f'bench_{schema.slug(device_stamp["device_kind"])}.csv')
  stream, writer = schema.open_csv(path)
  with stream:
    # label -> (status, length) once a model stops being run.
    stopped = {} if settings.run_after_failure else stopped_in(
        schema.earlier_rows(path, shared['sweep_id'],
                            setting_of(settings, device_stamp, batch_size)))
    announce(settings, shared, batch_size, path)
    count = 0
    for length in lengths_to_run(settings, lengths, stopped, mixers):
      batch = batch_for(length, batch_size, settings.tokens_per_batch)
      for model, attention in mixers:
        cell = make_cell(settings, model, attention, length, batch)
        count += 1
        # The line starts before the cell runs: a cell may take minutes.
        print(f'[{count:>3}] {label(model, attention):<19} L={length:<7,} '
              f'B={batch:<4} ', end='', flush=True)
        fields = measure_or_skip(settings, cell, stopped,
                                 doubling=length > lengths[-1])
        writer.writerow(schema.row_for(cell, fields, shared))
        stream.flush()
        print(describe(fields), flush=True)
  return path

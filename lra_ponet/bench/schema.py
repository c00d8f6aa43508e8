r"""The bench CSV: its columns, and writing and reading it.

Every cell appends one row to `<results_dir>/bench_<device kind>.csv` (header
written once; a rerun appends, never overwrites). Columns:

  sweep_id            one sweep: a `python -m lra_ponet.bench` command (its
                      UTC start time and pid), or the --sweep_id several share
  date                UTC time the cell finished
  task, preset        the config: `tasks.get_config(task, preset)`
  model               the token mixer (lra_ponet.models.MIXERS)
  framework           lra_ponet (this suite), or official: the official
                      PoNet LRA code under PyTorch, timed by
                      benchmarks/official_cpu.py (its preset `official`);
                      rows written before this column existed are the
                      suite's
  attention           Transformer only: xla (explicit L x L softmax) or cudnn
  length              sequence length L (max_len = padded_len = L)
  batch_size          examples per step
  tokens_per_batch    N of a constant-tokens sweep (batch = N / L); 0 if fixed
  dtype               compute dtype; parameters stay float32
  segment_num         PoNet only: kept from the task config, not rescaled
  segment_len         PoNet only: L // segment_num + 1 at this length
  num_params          trainable parameters
  status              ok, OOM, TIMEOUT or error
  reason              one line for a failed cell, empty when ok
  compile_s           seconds to lower and compile the step
  ms_median, ms_min, ms_max   per timed step, each ended by block_until_ready
  steps_per_s         1000 / ms_median
  tokens_per_s        batch_size * length * steps_per_s, times 2 for the
                      paired task (retrieval: two documents per example)
  flops_per_step      `compiled.cost_analysis()` FLOPs of one step
  tflops_per_s        flops_per_step * steps_per_s / 1e12 (achieved)
  bytes_per_step      `compiled.cost_analysis()` bytes accessed of one step
                      (XLA's count of operand and result bytes per op)
  gb_per_s            bytes_per_step * steps_per_s / 1e9 (achieved)
  peak_tflops_per_s, peak_gb_per_s   the device's peak FLOP rate for the
                      dtype and its memory bandwidth, from `peaks.PEAKS` by
                      device kind (datasheet figures); empty for an unknown
                      device
  tflops_fraction, bandwidth_fraction   achieved / peak: a cell far below
                      both is bound by overhead, not by arithmetic or memory
  peak_bytes_in_use   measured: `device.memory_stats()` after the timed steps;
                      empty where the device has no memory_stats (CPU)
  bytes_limit         the device's memory, from the same memory_stats
  plan_total_bytes    XLA's compiled memory plan (`memory_analysis()`, every
                      backend): argument + output - alias + temp + generated
                      code bytes, what the step's buffers need at once. This
                      is the "compiled plan" of the tables.
  plan_argument_bytes, plan_output_bytes, plan_alias_bytes, plan_temp_bytes,
  plan_generated_code_bytes   its parts (donated state: outputs alias inputs)
  plan_xla_peak_bytes XLA's own `peak_memory_in_bytes`, as reported; its
                      meaning is backend-defined (on CPU it leaves out the
                      temp buffer), so the tables do not use it
  memory_cap_bytes    a plan above this is recorded as OOM without running:
                      --memory_cap_gb, else the device's bytes_limit, else the
                      host's RAM
  steps, warmup       timed and warm-up steps
  cell_timeout_s      the cell's time budget, compile included
  wall_s              seconds the cell's subprocess ran
  device_kind, device_count, platform, jax_version, jaxlib_version,
  flax_version, optax_version, numpy_version, git_commit, git_clean
                      the stamp (`lra_ponet.stamp`); rows written before
                      optax_version, numpy_version and git_clean existed
                      have them empty, and their git_commit ends in "+dirty"
                      where the code had local edits
  xla_flags           the XLA_FLAGS the cells ran with; empty for none, and
                      in rows written before this column
  glibc_tunables      the GLIBC_TUNABLES the cells ran with (e.g.
                      glibc.malloc.hugetlb=1: huge pages for malloc's large
                      buffers, faster at some sizes and slower at others,
                      README "Faster CPU runs"); empty for none, and in rows
                      written before this column
  host_cpu            the host's CPU model and logical cores (the device of
                      a CPU row); empty in rows written before this column
  overrides           the sweep's --config.FIELD=VALUE overrides as JSON
                      (field: text), each applied to the cells whose config
                      has the field; `{}` when none (empty in older rows)
  config_json         the cell's full config

XLA counts the body of a loop once in cost_analysis(): a model that loops
(on a CPU, PoNet runs its mixer over chunks of examples in a `lax.map` when
the batch holds more than ponet.CHUNK_TOKENS tokens) has more FLOPs and
bytes than recorded.
The report reads a CSV of fewer columns too (written before the cost
columns or the stamp's newer fields existed; those cells stay empty), but a
sweep appends only to a file of today's columns.
"""

import csv
import datetime
import json
import pathlib
import re

from lra_ponet.bench import child
from lra_ponet.errors import UserError

COLUMNS = (
    'sweep_id', 'date', 'task', 'preset', 'model', 'framework', 'attention',
    'length',
    'batch_size', 'tokens_per_batch', 'dtype', 'segment_num', 'segment_len',
    'num_params', 'status', 'reason', 'compile_s', 'ms_median', 'ms_min',
    'ms_max', 'steps_per_s', 'tokens_per_s', 'flops_per_step',
    'tflops_per_s', 'bytes_per_step', 'gb_per_s', 'peak_tflops_per_s',
    'peak_gb_per_s', 'tflops_fraction', 'bandwidth_fraction',
    'peak_bytes_in_use', 'bytes_limit', 'plan_total_bytes',
    'plan_argument_bytes', 'plan_output_bytes', 'plan_alias_bytes',
    'plan_temp_bytes', 'plan_generated_code_bytes', 'plan_xla_peak_bytes',
    'memory_cap_bytes', 'steps', 'warmup', 'cell_timeout_s', 'wall_s',
    'device_kind', 'device_count', 'platform', 'jax_version',
    'jaxlib_version', 'flax_version', 'optax_version', 'numpy_version',
    'git_commit', 'git_clean', 'xla_flags', 'glibc_tunables', 'host_cpu',
    'overrides', 'config_json')


def slug(text: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def row_for(cell, fields, shared):
  """A CSV row: the cell, its measured fields and the sweep's shared fields."""
  config = child.cell_config(cell)
  is_ponet = cell['model'] == 'ponet'
  row = dict(shared, **fields)
  row.update(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      task=cell['task'], preset=cell['preset'], model=cell['model'],
      framework='lra_ponet', attention=cell['attention'],
      length=cell['length'], batch_size=cell['batch_size'],
      dtype=cell['dtype'],
      segment_num=config.model.ponet.segment_num if is_ponet else None,
      segment_len=(cell['length'] // config.model.ponet.segment_num + 1
                   if is_ponet else None),
      steps=cell['steps'], warmup=cell['warmup'],
      overrides=json.dumps(cell.get('overrides', {}), sort_keys=True),
      config_json=json.dumps(config.to_dict(), sort_keys=True))
  return {column: row.get(column) for column in COLUMNS}


def open_csv(path: pathlib.Path):
  """Opens the CSV for appending; refuses a file with other columns."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists() and path.stat().st_size:
    with open(path, newline='', encoding='utf-8') as existing:
      header = next(csv.reader(existing), [])
    if tuple(header) != COLUMNS:
      raise UserError(f'{path} was written with other columns; move it aside '
                      'so that this sweep starts a new file')
    new = False
  else:
    new = True
  stream = open(path, 'a', newline='', encoding='utf-8')
  writer = csv.DictWriter(stream, fieldnames=COLUMNS)
  if new:
    writer.writeheader()
    stream.flush()
  return stream, writer


def earlier_rows(path: pathlib.Path, sweep_id: str, setting: dict):
  """The rows of `sweep_id` already in the CSV; refuses other settings."""
  if not path.exists():
    return []
  with open(path, newline='', encoding='utf-8') as stream:
    # The official code's rows of a comparison share the id, not the setting.
    rows = [row for row in csv.DictReader(stream)
            if row['sweep_id'] == sweep_id
            and row.get('framework') in (None, '', 'lra_ponet')]
  for row in rows:
    differ = [name for name, value in setting.items()
              if row[name] != str(value)]
    if differ:
      raise UserError(f'sweep {sweep_id} in {path} was run with other '
                      f'settings (differing: {", ".join(differ)}); choose a '
                      'new --sweep_id')
  return rows

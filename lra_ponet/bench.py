r"""Speed and memory of one training step per (model, sequence length) cell.

  python -m lra_ponet.bench --task=text --models=ponet,transformer,fnet \
      --lengths=512,1024,2048,4096,8192,16384 --batch_size=32
  python -m lra_ponet.bench --task=text --dtype=bfloat16 --attention=xla,cudnn
  python -m lra_ponet.bench --task=text --tokens_per_batch=131072
  python -m lra_ponet.bench --task=text --until_oom --max_length=262144

The method is spec/bench.md. A cell is one full training step (forward,
backward, AdamW update) of `steps.make_train_step`, jitted with the state
donated and compiled ahead of time, on random token ids of the task's
vocabulary with every position real (no padding). Each cell runs in a fresh
subprocess (`--cell=<json>`, internal), so the device's peak memory counter
starts at zero and a crash or out-of-memory ends that cell only. A failed cell
is a result: OOM, TIMEOUT (past --cell_timeout) or error with a one-line
reason, and the sweep goes on. A model that ran out of memory or time is not
run at longer lengths (its rows say "not run"; cost only grows with length)
unless --run_after_failure. --until_oom keeps doubling the length past the
list until every model has stopped or --max_length is reached. --sweep_id
splits one sweep over several commands (benchmarks/gpu_all.sh does, for
machines that limit a command's time).

Every cell appends one row to `<results_dir>/bench_<device kind>.csv` (header
written once; a rerun appends, never overwrites). Columns:

  sweep_id            one sweep: an invocation of this command (UTC start
                      time and pid), or the --sweep_id several share
  date                UTC time the cell finished
  task, preset        the config: `tasks.get_config(task, preset)`
  model               the token mixer (lra_ponet.models.MIXERS)
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
                      dtype and its memory bandwidth, from PEAKS by device
                      kind (paper figures); empty for an unknown device
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
  flax_version, git_commit   the stamp (commit "+dirty" with local edits
                      to the code, results/ not counted)
  config_json         the cell's full config

XLA counts the body of a loop once in cost_analysis(): a model that loops
(on a CPU, PoNet runs its mixer over chunks of examples in a `lax.map` when
the batch holds more than ponet.CHUNK_TOKENS tokens) has more FLOPs and
bytes than recorded.
A CSV written before the cost columns existed is rewritten once with them
added (empty in the old rows); nothing else in it changes.
"""

import csv
import datetime
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import flax
import jax
import jaxlib
import numpy as np
from absl import app
from absl import flags
from flax import nnx

import tasks
from baselines import transformer
from configs import base
from lra_ponet import models
from lra_ponet import steps
from lra_ponet import validation
from lra_ponet import errors
from lra_ponet.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags; defined on running it, so importing has no effect.

  (report and plot also have --results_dir; importing all three in one
  process, as the tests do, must not define a flag twice.)
  """
  flags.DEFINE_enum('task', 'text' if 'text' in tasks.TASKS else 'listops',
                    list(tasks.TASKS), 'The task whose config is measured.')
  flags.DEFINE_enum('preset', 'ponet', list(base.PRESETS),
                    'The config preset (ponet: the PoNet paper setting).')
  flags.DEFINE_list('models', ['ponet', 'transformer', 'fnet'],
                    'Token mixers to measure.')
  flags.DEFINE_list('lengths',
                    ['512', '1024', '2048', '4096', '8192', '16384'],
                    'Sequence lengths.')
  flags.DEFINE_integer('batch_size', None,
                       'Examples per step; default: the task config\'s.')
  flags.DEFINE_integer('tokens_per_batch', None,
                       'Constant-tokens sweep: batch = this / length.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    'Compute dtype.')
  flags.DEFINE_list('attention', ['xla'],
                    'Transformer attention implementations, each its own row: '
                    'xla and/or cudnn (GPU, bfloat16).')
  flags.DEFINE_boolean('until_oom', False,
                       'Keep doubling the length past the list until every '
                       'model has run out of memory or time.')
  flags.DEFINE_integer('max_length', 1 << 20,
                       'With --until_oom: the longest length tried.')
  flags.DEFINE_integer('steps', 10, 'Timed steps per cell.')
  flags.DEFINE_integer('warmup', 2, 'Warm-up steps per cell (at least 2).')
  flags.DEFINE_float('cell_timeout', 600.0,
                     'Seconds per cell, compile included; past it: TIMEOUT.')
  flags.DEFINE_float('memory_cap_gb', None,
                     'A compiled plan above this many GiB is recorded as OOM '
                     'without running; default: the device memory, on CPU '
                     'the host RAM.')
  flags.DEFINE_boolean('run_after_failure', False,
                       'Also run a model at lengths beyond one where it ran '
                       'out of memory or time.')
  flags.DEFINE_string('results_dir', 'results', 'Where the CSV files go.')
  flags.DEFINE_string('sweep_id', None,
                      'Continue the sweep of this id (letters, digits, _.-), '
                      'so that one sweep can span several commands: its '
                      'rows share the id, and a model that ran out of memory '
                      'or time in it is not run again at longer lengths. '
                      'Default: a new id from the UTC time and pid.')
  flags.DEFINE_string('cell', None, 'Internal: run one cell (JSON) and print '
                      'its result.')
  flags.DEFINE_boolean('probe', False, 'Internal: print the device stamp.')


COLUMNS = (
    'sweep_id', 'date', 'task', 'preset', 'model', 'attention', 'length',
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
    'jaxlib_version', 'flax_version', 'git_commit', 'config_json')
# The child prints its results on stdout as JSON after this marker: once after
# compiling (so a TIMEOUT still records the compile figures) and once at the
# end.
MARKER = 'BENCH_CELL '
OOM_PATTERN = re.compile(
    r'RESOURCE_EXHAUSTED|resource exhausted|out of memory', re.IGNORECASE)
STOPPING = ('OOM', 'TIMEOUT')
# Paper peaks per device kind (spec/bench.md): HBM bandwidth in GB/s and
# dense TFLOP/s per dtype (float32 without tensor cores). H100 and H200 share
# the compute die. A device kind is matched by these words in its name.
PEAKS = (
    (('h100',), {'gb_per_s': 3350.0,
                 'tflops_per_s': {'float32': 67.0, 'bfloat16': 990.0}}),
    (('h200',), {'gb_per_s': 4800.0,
                 'tflops_per_s': {'float32': 67.0, 'bfloat16': 990.0}}),
)


# ---------------------------------------------------------------- the cell --

def cell_config(cell):
  """The task config with the cell's model, length, batch and dtype."""
  config = tasks.get_config(cell['task'], cell['preset'], cell['model'])
  config.model.attention = cell['attention'] or 'xla'
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


def device_peaks(device_kind: str, dtype: str) -> dict:
  """The peak rates of a known device kind; empty when unknown."""
  name = device_kind.lower()
  for words, peaks in PEAKS:
    if all(word in name for word in words):
      return {'peak_gb_per_s': peaks['gb_per_s'],
              'peak_tflops_per_s': peaks['tflops_per_s'].get(dtype)}
  return {}


def achieved(result, dtype: str, device_kind: str) -> dict:
  """Achieved rates from the step's cost and speed; fractions of the peaks."""
  rates = {}
  steps_per_s = result.get('steps_per_s')
  if not steps_per_s:
    return rates
  if result.get('flops_per_step'):
    rates['tflops_per_s'] = result['flops_per_step'] * steps_per_s / 1e12
  if result.get('bytes_per_step'):
    rates['gb_per_s'] = result['bytes_per_step'] * steps_per_s / 1e9
  peaks = device_peaks(device_kind, dtype)
  rates.update(peaks)
  for rate, peak, fraction in (
      ('tflops_per_s', 'peak_tflops_per_s', 'tflops_fraction'),
      ('gb_per_s', 'peak_gb_per_s', 'bandwidth_fraction')):
    if rates.get(rate) and peaks.get(peak):
      rates[fraction] = rates[rate] / peaks[peak]
  return rates


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


def measure(cell) -> dict:
  """Compiles and times one cell in this process; emits partial results."""
  config = cell_config(cell)
  info = tasks.get_task(cell['task']).INFO
  graphdef, _, state = steps.create_train_state(config, info)
  result = {'num_params': models.count_params(nnx.merge(graphdef, state)[0])}
  shape = (cell['batch_size'], 2, cell['length']) if info.paired else (
      cell['batch_size'], cell['length'])
  rng = np.random.default_rng(0)
  # Ids from 1 up: id 0 is padding, and the cell measures a full mask.
  batch = jax.device_put({
      'inputs': rng.integers(1, info.vocab_size, shape, dtype=np.int32),
      'label': rng.integers(0, info.num_classes, cell['batch_size'],
                            dtype=np.int32)})
  step = jax.jit(flat_step(steps.make_train_step(graphdef,
                                                 mask_zero_tokens=True),
                            state), donate_argnums=0)
  # The state as a flat list of arrays: a call then costs no Python walk
  # over the Variables (about 0.1 ms per leaf here, which would charge a
  # model for the number of its parameter tensors).
  state = jax.tree.leaves(state)
  tick = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  result['compile_s'] = time.perf_counter() - tick
  cost = _first(compiled.cost_analysis())
  result['flops_per_step'] = cost.get('flops')
  result['bytes_per_step'] = cost.get('bytes accessed')
  result.update(memory_plan(compiled))

  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  result['bytes_limit'] = stats.get('bytes_limit')
  cap = cell['memory_cap_bytes'] or stats.get('bytes_limit') or (
      host_memory_bytes())
  result['memory_cap_bytes'] = cap
  _emit(result)
  if result['plan_total_bytes'] > cap:
    result['status'] = 'OOM'
    plan_gib = result['plan_total_bytes'] / 2**30
    result['reason'] = (f'compiled plan {plan_gib:.2f} GiB exceeds the memory '
                        f'cap {cap / 2**30:.2f} GiB')
    return result

  for _ in range(cell['warmup']):
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
  times_ms = []
  for _ in range(cell['steps']):
    tick = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times_ms.append((time.perf_counter() - tick) * 1e3)
  median_ms = float(np.median(times_ms))
  steps_per_s = 1e3 / median_ms
  result.update(
      status='ok', reason='', ms_median=median_ms, ms_min=min(times_ms),
      ms_max=max(times_ms), steps_per_s=steps_per_s,
      tokens_per_s=math.prod(shape) * steps_per_s,
      peak_bytes_in_use=(device.memory_stats() or {}).get(
          'peak_bytes_in_use'))
  result.update(achieved(result, cell['dtype'], device.device_kind))
  return result


def run_cell_here(cell_json: str):
  """The child's entry: measures, prints the result line, never raises."""
  try:
    result = measure(json.loads(cell_json))
  except Exception as error:  # pylint: disable=broad-except
    message = str(error).strip().splitlines()
    line = f'{type(error).__name__}: {message[0] if message else ""}'
    result = {'status': 'OOM' if is_oom(str(error)) else 'error',
              'reason': line[:300]}
  _emit(result)


def probe_here():
  _emit({'device_kind': jax.devices()[0].device_kind,
         'device_count': jax.device_count(),
         'platform': jax.default_backend(),
         'jax_version': jax.__version__,
         'jaxlib_version': jaxlib.__version__,
         'flax_version': flax.__version__})


# -------------------------------------------------------------- the sweep --

def child_env():
  # The measured peak must be what the step needed, not a preallocated pool.
  return dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')


def parse_output(stdout: str) -> dict:
  fields = {}
  for line in stdout.splitlines():
    if line.startswith(MARKER):
      fields.update(json.loads(line[len(MARKER):]))
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
    if rc == -9 or is_oom(stderr):
      # A SIGKILL we did not send is most likely the host's OOM killer.
      fields.update(status='OOM', reason=last_meaningful_line(stderr)
                    or 'killed by SIGKILL (likely out of host memory)')
    else:
      fields.update(status='error', reason=last_meaningful_line(stderr)
                    or f'the cell exited with status {rc} and no message')
  return fields


def probe_device() -> dict:
  fields, stderr, rc = run_child(['--probe'], timeout=300)
  if rc != 0 or 'device_kind' not in fields:
    raise UserError(f'could not start jax to read the device: '
                    f'{last_meaningful_line(stderr)}')
  return fields


def slug(text: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def git_commit() -> str:
  root = pathlib.Path(__file__).resolve().parent.parent
  # No optional locks: a read must not touch the index others are using.
  env = dict(os.environ, GIT_OPTIONAL_LOCKS='0')
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, env=env,
                            capture_output=True, text=True, check=True)
    # Results the harness itself appends to do not make the code dirty.
    dirty = subprocess.run(
        ['git', 'status', '--porcelain', '--untracked-files=no', '--', '.',
         ':(exclude)results'], cwd=root,
        env=env, capture_output=True, text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return ''
  return commit.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def parse_lengths(values) -> list:
  lengths = []
  for value in values:
    try:
      length = int(value)
    except ValueError:
      raise UserError(f'--lengths: {value!r} is not a whole number') from None
    if length < 1:
      raise UserError(f'--lengths: {length} is not a positive length')
    lengths.append(length)
  if not lengths:
    raise UserError('--lengths is empty; give e.g. --lengths=512,1024')
  # Ascending: a model stops after the first length it cannot do.
  return sorted(set(lengths))


def model_variants(model_names, attentions):
  """(model, attention) per table row; only the Transformer has attention."""
  for name in model_names:
    models.mixer_class(name)
    if name == 'transformer':
      yield from ((name, attention) for attention in attentions)
    else:
      yield name, ''


def label(model: str, attention: str) -> str:
  return f'{model} ({attention})' if attention else model


def batch_for(length: int, batch_size: int, tokens_per_batch) -> int:
  if not tokens_per_batch:
    return batch_size
  if tokens_per_batch % length:
    raise UserError(f'--tokens_per_batch={tokens_per_batch} is not a multiple '
                    f'of length {length}')
  return tokens_per_batch // length


def check_flags():
  """Every mistake in the flags, found before jax starts or any cell runs.

  Returns the lengths, the (model, attention) pairs and the batch size.
  """
  lengths = parse_lengths(FLAGS.lengths)
  for attention in FLAGS.attention:
    if attention not in transformer.IMPLEMENTATIONS:
      raise UserError(f'--attention: unknown {attention!r}; use '
                      f'{" and/or ".join(transformer.IMPLEMENTATIONS)}')
  mixers = list(model_variants(FLAGS.models, FLAGS.attention))
  if not mixers:
    raise UserError('--models is empty; give e.g. --models=ponet,transformer')
  if FLAGS.steps < 1:
    raise UserError(f'--steps must be at least 1, got {FLAGS.steps}')
  if FLAGS.warmup < 2:
    raise UserError(f'--warmup must be at least 2 (spec/bench.md), got '
                    f'{FLAGS.warmup}')
  if FLAGS.cell_timeout <= 0:
    raise UserError(f'--cell_timeout must be positive, got '
                    f'{FLAGS.cell_timeout}')
  if FLAGS.memory_cap_gb is not None and FLAGS.memory_cap_gb <= 0:
    raise UserError(f'--memory_cap_gb must be positive, got '
                    f'{FLAGS.memory_cap_gb}')
  if FLAGS.batch_size is not None and FLAGS.tokens_per_batch is not None:
    raise UserError('give --batch_size or --tokens_per_batch, not both')
  if FLAGS.tokens_per_batch is not None and FLAGS.tokens_per_batch < 1:
    raise UserError(f'--tokens_per_batch must be positive, got '
                    f'{FLAGS.tokens_per_batch}')
  if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
    raise UserError(f'--batch_size must be positive, got {FLAGS.batch_size}')
  if FLAGS.until_oom and FLAGS.max_length < max(lengths):
    raise UserError(f'--max_length ({FLAGS.max_length}) is below the longest '
                    f'of --lengths ({max(lengths)})')
  if FLAGS.sweep_id is not None and not re.fullmatch(r'[\w.-]+',
                                                     FLAGS.sweep_id):
    raise UserError(f'--sweep_id={FLAGS.sweep_id!r}: use letters, digits, '
                    '_ . and - only')
  if 'cudnn' in FLAGS.attention and FLAGS.dtype != 'bfloat16':
    raise UserError('--attention=cudnn runs in bfloat16 only; add '
                    '--dtype=bfloat16')
  batch_size = FLAGS.batch_size or tasks.get_config(
      FLAGS.task, FLAGS.preset).batch_size
  for length in lengths:
    batch_for(length, batch_size, FLAGS.tokens_per_batch)
  for model, attention in mixers:
    validation.validate_config(cell_config(make_cell(
        model, attention, lengths[0], batch_size)))
  return lengths, mixers, batch_size


def check_device(mixers, stamp):
  if any(attention == 'cudnn' for _, attention in mixers) and (
      stamp['platform'] != 'gpu'):
    raise UserError(f'--attention=cudnn needs an NVIDIA GPU, but the device '
                    f'is {stamp["device_kind"]} ({stamp["platform"]})')


def make_cell(model, attention, length, batch_size):
  return {'task': FLAGS.task, 'preset': FLAGS.preset, 'model': model,
          'attention': attention, 'length': length, 'batch_size': batch_size,
          'dtype': FLAGS.dtype, 'steps': FLAGS.steps, 'warmup': FLAGS.warmup,
          'memory_cap_bytes': (int(FLAGS.memory_cap_gb * 2**30)
                               if FLAGS.memory_cap_gb else None)}


def row_for(cell, fields, sweep):
  """A CSV row: the cell, its measured fields and the stamp."""
  config = cell_config(cell)
  is_ponet = cell['model'] == 'ponet'
  row = dict(sweep, **fields)
  row.update(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      task=cell['task'], preset=cell['preset'], model=cell['model'],
      attention=cell['attention'], length=cell['length'],
      batch_size=cell['batch_size'], dtype=cell['dtype'],
      segment_num=config.model.segment_num if is_ponet else None,
      segment_len=(cell['length'] // config.model.segment_num + 1
                   if is_ponet else None),
      steps=cell['steps'], warmup=cell['warmup'],
      config_json=json.dumps(config.to_dict(), sort_keys=True))
  return {column: row.get(column) for column in COLUMNS}


def add_columns(path: pathlib.Path, header):
  """Rewrites a CSV of older columns with today's; old rows keep every value.

  Written beside it and renamed over it, so an interruption loses nothing.
  """
  with open(path, newline='', encoding='utf-8') as existing:
    rows = list(csv.DictReader(existing))
  partial = path.with_name(path.name + '.partial')
  with open(partial, 'w', newline='', encoding='utf-8') as stream:
    writer = csv.DictWriter(stream, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(partial, path)
  print(f'{path}: added the columns '
        f'{", ".join(c for c in COLUMNS if c not in header)} (empty in its '
        f'{len(rows)} earlier rows)', flush=True)


def open_csv(path: pathlib.Path):
  """Opens the CSV for appending; refuses a file with other columns.

  A file whose columns are a subset of today's (written by an earlier
  version) first gets the new columns.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists() and path.stat().st_size:
    with open(path, newline='', encoding='utf-8') as existing:
      header = next(csv.reader(existing), [])
    if tuple(header) != COLUMNS and header and set(header) < set(COLUMNS):
      add_columns(path, header)
    elif tuple(header) != COLUMNS:
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


def earlier_rows(path: pathlib.Path, sweep_id: str, setting: dict):
  """The rows of `sweep_id` already in the CSV; refuses other settings."""
  if not path.exists():
    return []
  with open(path, newline='', encoding='utf-8') as stream:
    rows = [row for row in csv.DictReader(stream)
            if row['sweep_id'] == sweep_id]
  for row in rows:
    differ = [name for name, value in setting.items()
              if row[name] != str(value)]
    if differ:
      raise UserError(f'sweep {sweep_id} in {path} was run with other '
                      f'settings (differing: {", ".join(differ)}); choose a '
                      'new --sweep_id')
  return rows


def stopped_in(rows) -> dict:
  """label -> (status, shortest length) of models that ran out already."""
  stopped = {}
  for row in sorted(rows, key=lambda row: int(row['length'])):
    name = label(row['model'], row['attention'])
    if row['status'] in STOPPING and name not in stopped:
      stopped[name] = (row['status'], int(row['length']))
  return stopped


def lengths_to_run(lengths, stopped, mixers, tokens_per_batch):
  """The listed lengths, then doublings while a model is still going."""
  yield from lengths
  if not FLAGS.until_oom:
    return
  length = lengths[-1] * 2
  while (length <= FLAGS.max_length
         and any(label(*mixer) not in stopped for mixer in mixers)
         and (not tokens_per_batch or length <= tokens_per_batch)):
    yield length
    length *= 2


def sweep(lengths, mixers, batch_size, stamp):
  """Runs every cell, appending each row as soon as it is known."""
  started = datetime.datetime.now(datetime.timezone.utc)
  sweep_fields = dict(
      stamp, sweep_id=(FLAGS.sweep_id
                       or f'{started:%Y%m%dT%H%M%SZ}-{os.getpid()}'),
      git_commit=git_commit(), cell_timeout_s=FLAGS.cell_timeout,
      tokens_per_batch=FLAGS.tokens_per_batch or 0)
  setting = {'device_kind': stamp['device_kind'], 'task': FLAGS.task,
             'preset': FLAGS.preset, 'dtype': FLAGS.dtype,
             'tokens_per_batch': FLAGS.tokens_per_batch or 0,
             'steps': FLAGS.steps, 'warmup': FLAGS.warmup}
  if not FLAGS.tokens_per_batch:
    setting['batch_size'] = batch_size
  path = pathlib.Path(FLAGS.results_dir) / (
      f'bench_{slug(stamp["device_kind"])}.csv')
  stream, writer = open_csv(path)
  with stream:
    # label -> (status, length) once a model stops being run.
    stopped = {} if FLAGS.run_after_failure else stopped_in(
        earlier_rows(path, sweep_fields['sweep_id'], setting))
    print(f'Sweep {sweep_fields["sweep_id"]} on {stamp["device_count"]} x '
          f'{stamp["device_kind"]}: {FLAGS.task} config, {FLAGS.dtype}, '
          + (f'{FLAGS.tokens_per_batch:,} tokens per batch'
             if FLAGS.tokens_per_batch else f'batch {batch_size}')
          + f'; rows go to {path}', flush=True)
    count = 0
    for length in lengths_to_run(lengths, stopped, mixers,
                                 FLAGS.tokens_per_batch):
      batch = batch_for(length, batch_size, FLAGS.tokens_per_batch)
      doubling = length > lengths[-1]
      for model, attention in mixers:
        name = label(model, attention)
        cell = make_cell(model, attention, length, batch)
        count += 1
        # The line starts before the cell runs: a cell may take minutes.
        print(f'[{count:>3}] {name:<19} L={length:<7,} B={batch:<4} ', end='',
              flush=True)
        if name in stopped:
          status, at = stopped[name]
          fields = {'status': status,
                    'reason': f'not run: {status} at length {at:,}'}
        else:
          fields = run_cell(cell, FLAGS.cell_timeout)
          failed = fields['status'] in STOPPING or (
              doubling and fields['status'] != 'ok')
          if failed and not FLAGS.run_after_failure:
            stopped[name] = (fields['status'], length)
        writer.writerow(row_for(cell, fields, sweep_fields))
        stream.flush()
        print(describe(fields), flush=True)
  return path


def main(argv):
  del argv
  try:
    if FLAGS.cell:
      run_cell_here(FLAGS.cell)
      return
    if FLAGS.probe:
      probe_here()
      return
    lengths, mixers, batch_size = check_flags()
    stamp = probe_device()
    check_device(mixers, stamp)
    path = sweep(lengths, mixers, batch_size, stamp)
  except UserError as error:
    sys.exit(f'error: {error}')
  print(f'Done: {path}. Tables: python -m lra_ponet.report; plots: '
        'python -m lra_ponet.plot')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

r"""Speed and memory of one training step per (model, sequence length) cell.

  python -m lra_ponet.bench --task=text --models=ponet,transformer,fnet \
      --lengths=512,1024,2048,4096,8192,16384 --batch_size=32
  python -m lra_ponet.bench --task=text --dtype=bfloat16 --attention=xla,cudnn
  python -m lra_ponet.bench --task=text --tokens_per_batch=131072
  python -m lra_ponet.bench --task=text --until_oom --max_length=262144
  python -m lra_ponet.bench --task=listops --preset=lra --models=ponet,fnet \
      --config.model.dim=128 --config.model.ponet.segment_num=32
  python -m lra_ponet.bench --task=text --export_platforms=cuda,tpu

A cell is one full training step (forward, backward, AdamW update) of
`steps.make_train_step`, jitted with the state donated and compiled ahead of
time, on random token ids of the task's vocabulary with every position real
(no padding): --warmup untimed steps (at least 2: the first calls do one-off
work such as allocating the donated buffers), then --steps timed ones, each
ended by `jax.block_until_ready`; the median is reported with the min and
max. Each cell runs in a fresh
subprocess (`--cell=<json>`, internal), so the device's peak memory counter
starts at zero and a crash or out-of-memory ends that cell only. A failed cell
is a result: OOM, TIMEOUT (past --cell_timeout) or error with a one-line
reason, and the sweep goes on. A model that ran out of memory or time is not
run at longer lengths (its rows say "not run"; cost only grows with length)
unless --run_after_failure. --until_oom keeps doubling the length past the
list until every model has stopped or --max_length is reached. --sweep_id
splits one sweep over several commands (benchmarks/gpu_all.sh does, for
machines that limit a command's time).

`--preset` and `--config.FIELD=VALUE` overrides are those of
`lra_ponet.run`; a mixer's own field (`model.ponet.segment_num`) applies to
that mixer's cells, and each row records the overrides. The sweep's axes
(length, batch, dtype, attention) come from their flags instead.

With --export_platforms, nothing is timed: each cell's step is lowered for
those platforms (`lra_ponet/bench/export.py`), one line per cell and
platform, and the command fails if any cannot be.

Every cell appends one row to `<results_dir>/bench_<device kind>.csv` (header
written once; a rerun appends, never overwrites); `lra_ponet/bench/schema.py`
describes its columns.
"""

import dataclasses
import re
import sys

from absl import app
from absl import flags

from lra_ponet import tasks
from lra_ponet.baselines import transformer
from lra_ponet.configs import base
from lra_ponet import config_lib
from lra_ponet import errors
from lra_ponet import models
from lra_ponet import validation
from lra_ponet.bench import child
from lra_ponet.bench import export
from lra_ponet.bench import sweep
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
  flags.DEFINE_list('export_platforms', [],
                    'Lower each cell\'s training step for these platforms '
                    f'({", ".join(export.PLATFORMS)}) instead of timing it; '
                    'no such device is needed.')
  flags.DEFINE_string('cell', None, 'Internal: run one cell (JSON) and print '
                      'its result.')
  flags.DEFINE_boolean('probe', False, 'Internal: print the device stamp.')


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


def check_counts(lengths):
  """The numeric flags: each in its range, and no two that contradict."""
  if FLAGS.steps < 1:
    raise UserError(f'--steps must be at least 1, got {FLAGS.steps}')
  if FLAGS.warmup < 2:
    raise UserError('--warmup must be at least 2 (the first steps do '
                    f'one-off work), got {FLAGS.warmup}')
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


def check_flags(overrides=None):
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
  check_counts(lengths)
  check_overrides(overrides or {}, FLAGS.models)
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
    sweep.batch_for(length, batch_size, FLAGS.tokens_per_batch)
  for model, attention in mixers:
    # An export traces each step itself, and cuDNN's not at all off a GPU
    # (export.skip_reason); a sweep's cells are traced here first.
    validation.validate_config(child.cell_config(sweep.make_cell(
        settings_from_flags(overrides), model, attention, lengths[0],
        batch_size)), trace_step=not FLAGS.export_platforms)
  return lengths, mixers, batch_size


def settings_from_flags(overrides=None) -> sweep.Settings:
  return sweep.Settings(overrides=overrides or {}, **{
      field.name: FLAGS[field.name].value
      for field in dataclasses.fields(sweep.Settings)
      if field.name != 'overrides'})


# The sweep's axes: a cell sets them from --lengths, --batch_size, --dtype.
SWEPT_FIELDS = {'max_len': '--lengths', 'padded_len': '--lengths',
                'batch_size': '--batch_size', 'model.dtype': '--dtype',
                'model.transformer.attention': '--attention'}


def check_overrides(overrides, model_names):
  """Each override is a field of some measured model's config, not an axis."""
  configs = [tasks.get_config(FLAGS.task, FLAGS.preset, name)
             for name in model_names]
  for field in overrides:
    if field in SWEPT_FIELDS:
      raise UserError(f'--config.{field} is set by each cell; use '
                      f'{SWEPT_FIELDS[field]}')
    if all(config_lib.apply_overrides(config.copy_and_resolve_references(),
                                      {field: overrides[field]})
           for config in configs):
      raise UserError(config_lib.unknown_field_message(
          field, configs[0], set(config_lib.flatten(configs[0].to_dict()))))


def parse_flags(argv):
  """errors.parse_flags, with the --config.FIELD=VALUE overrides set aside.

  main() gets (argv, overrides): the overrides depend on each cell's model.
  """
  rest, overrides = config_lib.split_overrides(argv)
  return errors.parse_flags(rest), overrides


def check_device(mixers, device_stamp):
  if any(attention == 'cudnn' for _, attention in mixers) and (
      device_stamp['platform'] != 'gpu'):
    raise UserError(f'--attention=cudnn needs an NVIDIA GPU, but the device '
                    f'is {device_stamp["device_kind"]} '
                    f'({device_stamp["platform"]})')


def export_all(overrides):
  """--export_platforms: every cell lowered for every platform, or an exit."""
  export.check_platforms(FLAGS.export_platforms)
  lengths, mixers, batch_size = check_flags(overrides)
  settings = settings_from_flags(overrides)
  cells = [(sweep.label(model, attention),
            sweep.make_cell(settings, model, attention, length, batch_size))
           for length in lengths for model, attention in mixers]
  statuses = export.run(cells, FLAGS.export_platforms)
  summary = (f'{statuses["ok"]} lowered, {statuses["skipped"]} skipped, '
             f'{statuses["error"]} failed, of {len(cells)} cells x '
             f'{", ".join(FLAGS.export_platforms)}')
  if statuses['error']:
    raise UserError(f'{summary}; the lines above name each failing step and '
                    'its first error')
  print(f'Done: {summary}')


def main(parsed):
  overrides = parsed[1]
  try:
    if FLAGS.cell:
      child.run_cell_here(FLAGS.cell)
      return
    if FLAGS.probe:
      child.probe_here()
      return
    if FLAGS.export_platforms:
      export_all(overrides)
      return
    lengths, mixers, batch_size = check_flags(overrides)
    device_stamp = sweep.probe_device()
    check_device(mixers, device_stamp)
    path = sweep.run(settings_from_flags(overrides), lengths, mixers,
                     batch_size, device_stamp)
  except UserError as error:
    sys.exit(f'error: {error}')
  print(f'Done: {path}. Tables: python -m lra_ponet.report; plots: '
        'python -m lra_ponet.plot')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)

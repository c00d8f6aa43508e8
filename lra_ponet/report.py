r"""Markdown tables of the speed sweeps and of the accuracy runs.

  python -m lra_ponet.report
  python -m lra_ponet.report --results_dir=results --runs_dir=runs \
      --all_sweeps

For every `<results_dir>/bench_<device>.csv` written by `lra_ponet.bench`:
steps/s and memory per model and length, each with its multiplier against
the Transformer (xla) row of the same sweep, OOM and TIMEOUT as such, the
stamp under every table, then the published anchors (PoNet paper Table 2, LRA
Table 2), labelled as published. Written to `<results_dir>/report_<device>.md`.
By default each setting (task, preset, dtype, batch) shows its latest sweep;
--all_sweeps shows every one.

For every `<runs_dir>/**/results.json` written by `lra_ponet.run`: test
accuracy of the runs whose whole config but the seed is the same (a short
config hash names it), mean and spread over their seeds, with the data source
and the quirk switches, and the paper's Table 1 number beside a row only where
the config and data are the published ones (otherwise why not). Written to
`<results_dir>/accuracy.md`. Everything written is also printed.
"""

import hashlib
import json
import math
import pathlib
import sys

import pandas as pd
from absl import app
from absl import flags

import tasks
from lra_ponet import errors
from lra_ponet.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
  """Defined on running the command, so that importing has no effect."""
  flags.DEFINE_string('results_dir', 'results',
                      'Where the bench CSVs are and the reports go.')
  flags.DEFINE_string('runs_dir', 'runs',
                      'Searched recursively for results.json.')
  flags.DEFINE_boolean('all_sweeps', False,
                       'Every sweep, not only the latest of each setting.')


REFERENCE = 'transformer (xla)'
# What the tables read; a CSV without them is not a bench CSV.
NEEDED = ('sweep_id', 'date', 'task', 'preset', 'model', 'attention',
          'length', 'batch_size', 'tokens_per_batch', 'dtype', 'status',
          'reason', 'steps_per_s', 'peak_bytes_in_use', 'plan_total_bytes',
          'memory_cap_bytes', 'device_kind', 'platform', 'config_json')
LENGTHS_PUBLISHED = (512, 1024, 2048, 4096, 8192, 16384)
# PoNet paper Table 2 (spec/ponet.md section 9): one GPU, Text setting,
# batch 32; None is OOM.
PONET_TABLE2_STEPS = {
    'transformer': (45.1, 19.4, 6.3, 1.8, None, None),
    'fnet': (83.4, 61.3, 38.1, 21.4, 11.0, 5.4),
    'ponet': (50.4, 40.1, 27.8, 16.2, 8.7, 4.5),
}
PONET_TABLE2_GB = {
    'transformer': (1.4, 2.5, 6.7, 23.8, None, None),
    'fnet': (1.1, 1.2, 1.4, 1.7, 2.3, 3.8),
    'ponet': (1.1, 1.3, 1.7, 2.4, 3.6, 6.5),
}
# LRA paper Table 2 (spec/bench.md): Transformer on TPU v3, batch 32.
LRA_TABLE2 = {'length': (1024, 2048, 3072, 4096),
              'steps/s': (8.1, 4.9, 2.3, 1.4),
              'GB': (0.85, 2.65, 5.51, 9.48)}
TABLE1_TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder')
# PoNet paper Table 1, test accuracy % per TABLE1_TASKS; None is FAIL.
TABLE1 = {
    'Transformer (Xiong et al. setting)': (37.10, 65.02, 79.35, 38.20, 74.16),
    'FNet (re-implemented by the PoNet authors)': (37.40, 62.52, 76.94, 35.55,
                                                   None),
    'PoNet': (37.80, 69.82, 80.35, 46.88, 70.39),
    'Transformer (Tay et al., original LRA)': (36.37, 64.27, 57.46, 42.44,
                                               71.40),
}
TABLE1_AVERAGE = {
    'Transformer (Xiong et al. setting)': '58.77',
    'FNet (re-implemented by the PoNet authors)': '53.10 (4 tasks)',
    'PoNet': '61.05',
    'Transformer (Tay et al., original LRA)': '54.39',
}
# Which published row a run of ours is compared with: (model, preset) -> row.
TABLE1_ROW = {
    ('transformer', 'ponet'): 'Transformer (Xiong et al. setting)',
    ('transformer', 'lra'): 'Transformer (Tay et al., original LRA)',
    ('fnet', 'ponet'): 'FNet (re-implemented by the PoNet authors)',
    ('ponet', 'ponet'): 'PoNet',
}
CPU_NOTE = ('> Measured on a CPU shared with other work: only the ratios '
            '(the × columns) mean anything here; absolute times and memory '
            'hold only on a GPU (spec/bench.md).')


# ---------------------------------------------------------------- helpers --

def number(value) -> str:
  """Three significant digits (more left of the point), thousands separated."""
  if value >= 100:
    return f'{value:,.0f}'
  if value >= 10:
    return f'{value:.1f}'
  return f'{value:#.3g}'


def multiplier(value) -> str:
  return f'×{number(value)}'


def markdown_table(header, rows) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines)


def known(value) -> bool:
  return value is not None and not (isinstance(value, float)
                                    and math.isnan(value))


def row_label(model, attention) -> str:
  return f'{model} ({attention})' if known(attention) and attention else model


def memory_unit(values):
  """(name, divisor): GiB when the typical value reaches 1 GiB, else MiB."""
  values = [value for value in values if known(value)]
  typical = sorted(values)[len(values) // 2] if values else 0
  return ('GiB', 2**30) if typical >= 2**30 else ('MiB', 2**20)


# ---------------------------------------------------------- bench sweeps --

def load_bench(results_dir):
  """{device slug: DataFrame} of every bench CSV under results_dir."""
  frames = {}
  for path in sorted(pathlib.Path(results_dir).glob('bench_*.csv')):
    try:
      frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
      raise UserError(f'{path} is not a readable CSV: {error}') from None
    missing = [column for column in NEEDED if column not in frame.columns]
    if missing or frame.empty:
      raise UserError(f'{path} is not a bench CSV of lra_ponet.bench (no '
                      f'rows or missing {", ".join(missing)})')
    frame['attention'] = frame['attention'].fillna('')
    frame['label'] = [row_label(m, a) for m, a in
                      zip(frame['model'], frame['attention'])]
    frames[path.stem[len('bench_'):]] = frame
  return frames


def setting_of(frame) -> tuple:
  # A row's 'dtype' column must be read by key: `.dtype` is the Series'.
  first = frame.iloc[0]
  batch = (f'{int(first["tokens_per_batch"]):,} tokens per batch'
           if first['tokens_per_batch'] else
           f'batch {int(first["batch_size"])}')
  return first['task'], first['preset'], first['dtype'], batch


def select_sweeps(frame, all_sweeps: bool):
  """The sweeps to show, oldest first: each setting's latest unless all."""
  # A cell measured twice in one sweep (a continued sweep redoing a length)
  # counts once, at its latest measurement.
  sweeps = [group.drop_duplicates(['label', 'length'], keep='last')
            for _, group in frame.groupby('sweep_id', sort=False)]
  sweeps.sort(key=lambda group: group['date'].min())
  if all_sweeps:
    return sweeps
  latest = {setting_of(group): group for group in sweeps}
  return list(latest.values())


def ordered_labels(sweep):
  labels = list(dict.fromkeys(sweep['label']))
  references = [name for name in labels if name.startswith('transformer')]
  return references + [name for name in labels if name not in references]


def segments(sweep, segment_num) -> str:
  """PoNet's segment setting: segment_num is kept, so segment_len varies."""
  lengths = sorted(set(int(length) for length in sweep['length']))
  ends = [f'{length // segment_num + 1} at {length:,}'
          for length in (lengths[0], lengths[-1])]
  return (f'PoNet segment_num {segment_num} at every length (segment_len = '
          f'L // segment_num + 1: {" to ".join(dict.fromkeys(ends))})')


def stamp(sweep) -> str:
  """The spec/bench.md stamp of a sweep, one line."""
  # By key throughout: a row's `.dtype` would be the Series' own attribute.
  first = sweep.iloc[0]
  model = json.loads(first['config_json'])['model']
  commit = str(first['git_commit']) if known(first['git_commit']) else ''
  dates = sorted(sweep['date'])
  caps = sweep['memory_cap_bytes'].dropna()
  parts = [
      f'{int(first["device_count"])} x {first["device_kind"]} '
      f'({first["platform"]})',
      f'jax {first["jax_version"]}, jaxlib {first["jaxlib_version"]}, '
      f'flax {first["flax_version"]}',
      first['dtype'],
      setting_of(sweep)[3],
      f'{first["task"]} config, {first["preset"]} preset: '
      f'{model["num_layers"]} layers, dim {model["dim"]}, '
      f'{model["num_heads"]} heads, MLP {model["mlp_dim"]}, '
      f'{segments(sweep, model["segment_num"])}',
      f'{int(first["steps"])} timed steps after {int(first["warmup"])} '
      'warm-up, median',
      f'cell budget {first["cell_timeout_s"]:g} s',
      f'memory cap {caps.iloc[0] / 2**30:.3g} GiB' if len(caps) else '',
      f'git {commit[:12] or "unknown"}'
      + ('+dirty' if commit.endswith('+dirty') else ''),
      f'{dates[0][:16]} to {dates[-1][:16]} UTC',
      f'sweep {first["sweep_id"]}',
  ]
  return '*' + ' · '.join(part for part in parts if part) + '*'


def cell_lookup(sweep):
  return {(row.label, int(row.length)): row for row in sweep.itertuples()}


def value_table(sweep, column, scale=1.0, status_only=True):
  """Rows of `value (×multiplier)` per length; failures by their status.

  With status_only False a failed cell still shows its value when known
  (the compiled plan of an OOM or TIMEOUT cell), tagged with the status.
  """
  cells = cell_lookup(sweep)
  lengths = sorted(set(int(length) for length in sweep['length']))
  rows = []
  for name in ordered_labels(sweep):
    row = [name]
    for length in lengths:
      cell = cells.get((name, length))
      reference = cells.get((REFERENCE, length))
      if cell is None:
        row.append('—')
        continue
      value = getattr(cell, column)
      usable = known(value) and (cell.status == 'ok' or not status_only)
      if not usable:
        row.append(cell.status)
        continue
      text = number(value / scale)
      reference_value = (getattr(reference, column) if reference is not None
                         else None)
      if name != REFERENCE and known(reference_value) and (
          reference.status == 'ok' or not status_only):
        text += f' ({multiplier(value / reference_value)})'
      if cell.status != 'ok':
        text += f' {cell.status}'
      row.append(text)
    rows.append(row)
  header = ['model'] + [f'{length:,}' for length in lengths]
  return markdown_table(header, rows)


def maybe(value, text) -> str:
  """text(value), or an empty table cell where the value is missing."""
  return text(value) if known(value) else ''


def peak_fractions(cell) -> str:
  """`a% / b%` of the device's peak FLOP rate and bandwidth, if known."""
  fractions = [getattr(cell, name, None)
               for name in ('tflops_fraction', 'bandwidth_fraction')]
  if not any(known(value) for value in fractions):
    return ''
  return ' / '.join(f'{value:.1%}' if known(value) else '?'
                    for value in fractions)


def details_table(sweep) -> str:
  rows = []
  for name in ordered_labels(sweep):
    for cell in sweep[sweep['label'] == name].sort_values(
        'length').itertuples():
      rows.append([
          name, f'{int(cell.length):,}', int(cell.batch_size), cell.status,
          maybe(cell.ms_median,
                lambda v, c=cell: f'{number(v)} ({number(c.ms_min)}–'
                f'{number(c.ms_max)})'),
          maybe(cell.tokens_per_s, lambda v: f'{v:,.0f}'),
          maybe(cell.flops_per_step, lambda v: number(v / 1e9)),
          maybe(cell.tflops_per_s, lambda v: f'{v:.3g}'),
          # Columns that CSVs of earlier versions lack.
          maybe(getattr(cell, 'gb_per_s', None), lambda v: f'{v:.3g}'),
          peak_fractions(cell),
          maybe(cell.compile_s, lambda v: f'{v:.1f}'),
          maybe(cell.plan_total_bytes, lambda v: number(v / 2**20)),
          maybe(cell.peak_bytes_in_use, lambda v: number(v / 2**20)),
          cell.reason if known(cell.reason) else ''])
  header = ['model', 'length', 'batch', 'status',
            'ms/step median (min–max)', 'tokens/s', 'GFLOP/step',
            'achieved TFLOP/s', 'achieved GB/s',
            '% of peak FLOP/s, bandwidth', 'compile s', 'compiled plan MiB',
            'measured peak MiB', 'reason']
  return markdown_table(header, rows)


def sweep_section(sweep) -> str:
  task, preset, dtype, batch = setting_of(sweep)
  line = stamp(sweep)
  parts = [f'## {task} ({preset} preset), {dtype}, {batch}', '']
  parts += ['Training steps per second (median; higher is faster). × = this '
            f'row / the {REFERENCE} row at the same length.', '',
            value_table(sweep, 'steps_per_s'), '', line, '']
  if sweep['peak_bytes_in_use'].notna().any():
    unit, scale = memory_unit(sweep['peak_bytes_in_use'])
    parts += [f'Peak device memory, measured (`memory_stats()` '
              f'peak_bytes_in_use), {unit}. × = this row / the {REFERENCE} '
              'row.', '',
              value_table(sweep, 'peak_bytes_in_use', scale), '', line, '']
  unit, scale = memory_unit(sweep['plan_total_bytes'])
  parts += [f'Memory, XLA compiled plan (`memory_analysis()`: arguments + '
            f'outputs − aliased + temporaries), {unit}; deterministic, not a '
            f'measurement. × = this row / the {REFERENCE} row. A value tagged '
            'OOM or TIMEOUT is the plan of a cell that did not finish.', '',
            value_table(sweep, 'plan_total_bytes', scale, status_only=False),
            '', line, '', '<details><summary>Every cell</summary>', '',
            details_table(sweep), '', '</details>', '']
  return '\n'.join(parts)


def published_section() -> str:
  header = ['model'] + [f'{length:,}' for length in LENGTHS_PUBLISHED]

  def rows(table):
    out = []
    for model, values in table.items():
      reference = table['transformer']
      row = [model]
      for value, base in zip(values, reference):
        if value is None:
          row.append('OOM')
        elif base is None or model == 'transformer':
          row.append(f'{value:g}')
        else:
          row.append(f'{value:g} ({multiplier(value / base)})')
      out.append(row)
    return out

  lra_header = ['Transformer'] + [f'{n:,}' for n in LRA_TABLE2['length']]
  return '\n'.join([
      '## Published anchors (not measured here)', '',
      'Published (PoNet paper Table 2, one GPU, batch 32, Text setting): '
      'training steps per second; × = row / Transformer.', '',
      markdown_table(header, rows(PONET_TABLE2_STEPS)), '',
      'Published (PoNet paper Table 2, one GPU, batch 32, Text setting): '
      'peak memory, GB; × = row / Transformer.', '',
      markdown_table(header, rows(PONET_TABLE2_GB)), '',
      'Published (LRA paper Table 2, TPU v3, batch 32): Transformer.', '',
      markdown_table(lra_header, [
          ['steps/s'] + [f'{v:g}' for v in LRA_TABLE2['steps/s']],
          ['GB'] + [f'{v:g}' for v in LRA_TABLE2['GB']]]), ''])


def bench_report(device, frame, all_sweeps: bool) -> str:
  sweeps = select_sweeps(frame, all_sweeps)
  parts = [f'# Training-step speed and memory: {device}', '',
           'Made by `python -m lra_ponet.report` from '
           f'`bench_{device}.csv` (`python -m lra_ponet.bench`); method: '
           'spec/bench.md. One cell = one jitted training step (forward, '
           'backward, AdamW update) on random tokens with no padding, in its '
           'own process.', '']
  if (frame['platform'] == 'cpu').any():
    parts += [CPU_NOTE, '']
  parts += [sweep_section(sweep) for sweep in sweeps]
  parts.append(published_section())
  return '\n'.join(parts)


# ------------------------------------------------------------- accuracy --

# Config fields that do not change what a run computes, or that no published
# setting fixes: left out when a run is compared with the published setting.
NOT_COMPARED = frozenset({'seed', 'data_dir', 'data_seed', 'log_every',
                          'checkpoint_every', 'checkpoint_keep',
                          'eval_batch_size'})
PIXEL_TASKS = ('image', 'pathfinder')
# Tasks whose data here is never exactly the published runs' data, and why.
DATA_NOT_PUBLISHED = {
    'pathfinder': 'neither split order here is the published runs\' split '
                  'of the release images',
}


def flatten(tree, prefix=''):
  for name, value in tree.items():
    if isinstance(value, dict):
      yield from flatten(value, f'{prefix}{name}.')
    else:
      yield f'{prefix}{name}', value


def config_hash(config: dict) -> str:
  """Eight hex digits of the whole config except the seed."""
  rest = {name: value for name, value in config.items() if name != 'seed'}
  text = json.dumps(rest, sort_keys=True)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]


def load_runs(runs_dir):
  records = []
  for path in sorted(pathlib.Path(runs_dir).glob('**/results.json')):
    try:
      result = json.loads(path.read_text())
      config = result['config']
      records.append({
          'task': result['task'], 'model': result['model'],
          'preset': config.get('preset', ''),
          'seed': config.get('seed'),
          'config': config, 'config_hash': config_hash(config),
          'test': 100 * result['test_accuracy'],
          'val': 100 * result['best_val_accuracy'],
          'data_source': result.get('data_source', ''),
          'pixel_quirks': config.get('official_pixel_quirks', False),
          'mean_over': result.get('mean_over', ''),
          'train_steps': result['train_steps'],
          'device': result.get('device', ''),
          'data_notes': result.get('data_notes', '')})
    except (json.JSONDecodeError, KeyError, TypeError) as error:
      raise UserError(f'{path} is not a results.json of lra_ponet.run: '
                      f'{type(error).__name__} {error}') from None
  return pd.DataFrame(records)


def mean_spread(values) -> str:
  if len(values) < 2:
    return f'{values.mean():.2f}'
  return f'{values.mean():.2f} ± {values.std(ddof=1):.2f}'


def published_setting(task, model, preset) -> dict:
  """The config of the published run: the preset, with the paper's switches.

  The official PoNet and LRA code mask token 0, so on pixel tasks their
  numbers were made with black pixels as padding (official_pixel_quirks).
  """
  config = tasks.get_config(task, preset, model).to_dict()
  if task in PIXEL_TASKS:
    config['official_pixel_quirks'] = True
  return json.loads(json.dumps(config))  # Tuples become lists, as saved.


def differences(config: dict, published: dict) -> list[str]:
  ours, theirs = dict(flatten(config)), dict(flatten(published))
  return [f'{name} {ours.get(name, "absent")} (published '
          f'{theirs.get(name, "absent")})'
          for name in sorted(ours.keys() | theirs.keys())
          if name.rsplit('.', 1)[-1] not in NOT_COMPARED
          and ours.get(name, 'absent') != theirs.get(name, 'absent')]


def published_accuracy(task, model, config, data_source) -> str:
  """The Table 1 number, only beside a run of the published setting.

  Otherwise '—' and why not: another config (the first differing fields) or
  other data (generated instead of the LRA release).
  """
  row = TABLE1_ROW.get((model, config.get('preset')))
  if row is None or task not in TABLE1_TASKS:
    return '—'
  changed = differences(config, published_setting(task, model,
                                                  config['preset']))
  if changed:
    more = f'; {len(changed) - 3} more' if len(changed) > 3 else ''
    return f'— (not the published setting: {"; ".join(changed[:3])}{more})'
  if data_source.startswith('generated'):
    return '— (generated data, not the LRA release)'
  if task in DATA_NOT_PUBLISHED:
    return f'— ({DATA_NOT_PUBLISHED[task]})'
  value = TABLE1[row][TABLE1_TASKS.index(task)]
  return 'FAIL' if value is None else f'{value:.2f}'


def accuracy_rows(runs):
  keys = ['task', 'model', 'preset', 'config_hash', 'data_source',
          'data_notes', 'device']
  rows = []
  for key, group in runs.groupby(keys, sort=True):
    task, model, preset, digest, source, notes, device = key
    first = group.iloc[0]
    seeds = ', '.join(str(seed) for seed in sorted(group['seed']))
    rows.append([task, model, preset, digest, f'{first["train_steps"]:,}',
                 f'{len(group)} (seeds {seeds})',
                 mean_spread(group['test']), mean_spread(group['val']),
                 published_accuracy(task, model, first['config'], source),
                 source + (f'; {notes}' if notes else ''),
                 'on' if first['pixel_quirks'] else 'off',
                 first['mean_over'], device])
  return rows


def accuracy_report(runs_dir) -> str:
  runs = load_runs(runs_dir)
  parts = ['# LRA accuracy', '',
           f'Made by `python -m lra_ponet.report` from every '
           f'`{runs_dir}/**/results.json`.', '']
  if runs.empty:
    parts += [f'No runs found under {runs_dir}/ (looked for '
              f'{runs_dir}/**/results.json).', '']
  else:
    parts += ['Test accuracy (%) of the best-validation parameters: mean ± '
              'sample standard deviation over the seeds of runs whose whole '
              'config, the seed aside, is the same (config = the first 8 hex '
              'digits of its SHA-256). "Published" is the matching row of the '
              'PoNet paper Table 1 (the ponet preset Transformer against the '
              'Xiong et al. setting row, the lra preset against Tay et al.), '
              'shown only where the config is the published setting (the '
              'preset, with official_pixel_quirks on pixel tasks; seed, data '
              'paths, logging and checkpointing aside) and the data is the '
              'published runs\' (not generated; not Pathfinder, whose split '
              'differs); otherwise the cell says why not.', '',
              markdown_table(['task', 'model', 'preset', 'config',
                              'train steps', 'runs', 'test acc %',
                              'best val acc %', 'published (Table 1)',
                              'data source', 'official_pixel_quirks',
                              'mean_over', 'device'], accuracy_rows(runs)),
              '']
  header = ['model (published)', 'ListOps', 'Text', 'Retrieval', 'Image',
            'Pathfinder', 'avg']
  parts += ['Published (PoNet paper Table 1, test accuracy %):', '',
            markdown_table(header, [
                [row] + ['FAIL' if v is None else f'{v:.2f}' for v in values]
                + [TABLE1_AVERAGE[row]] for row, values in TABLE1.items()]),
            '']
  return '\n'.join(parts)


def write(path: pathlib.Path, text: str):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  print(text)
  print(f'(written to {path})\n')


def main(argv):
  del argv
  results_dir = pathlib.Path(FLAGS.results_dir)
  try:
    frames = load_bench(results_dir)
    accuracy = accuracy_report(FLAGS.runs_dir)
  except UserError as error:
    sys.exit(f'error: {error}')
  if not frames:
    print(f'No bench CSV under {results_dir}/; run python -m lra_ponet.bench '
          'first.\n')
  for device, frame in frames.items():
    write(results_dir / f'report_{device}.md',
          bench_report(device, frame, FLAGS.all_sweeps))
  write(results_dir / 'accuracy.md', accuracy)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

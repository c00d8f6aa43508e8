"""The speed and memory tables of the bench sweeps.

For every `<results_dir>/bench_<device>.csv` written by `lra_ponet.bench`:
steps/s and memory per model and length, each with its multiplier against
the Transformer (xla) row of the same sweep, OOM and TIMEOUT as such, the
stamp under every table, then the published anchors (`published`).
"""

import json

import numpy as np

from lra_ponet import stamp as stamp_lib
from lra_ponet.report import markdown
from lra_ponet.report import official
from lra_ponet.report import published

REFERENCE = 'transformer (xla)'
CPU_NOTE = ('> Measured on a CPU: only the ratios (the × columns) mean '
            'anything here; absolute step times depend on the machine and '
            'on what else ran on it.')


def fitted_slope(lengths, values):
  """Exponent k of cost ~ length^k by least squares in log-log; None if <2."""
  if len(set(lengths)) < 2:
    return None
  slope, _ = np.polyfit(np.log(lengths), np.log(values), 1)
  return float(slope)


def memory_unit(values):
  """(name, divisor): GiB when the typical value reaches 1 GiB, else MiB."""
  values = [value for value in values if markdown.known(value)]
  typical = sorted(values)[len(values) // 2] if values else 0
  return ('GiB', 2**30) if typical >= 2**30 else ('MiB', 2**20)


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


def segments(sweep) -> str:
  """PoNet's segments as the cells ran them (segment_num may follow L)."""
  ponet = sweep[(sweep['model'] == 'ponet')
                & sweep['segment_num'].notna()].sort_values('length')
  if ponet.empty:
    return 'no PoNet row'

  def spread(column) -> str:
    values = [f'{int(value):,}' for value in dict.fromkeys(ponet[column])]
    if len(values) == 1:
      return f'{values[0]} at every length'
    return (f'{values[0]} at {int(ponet["length"].iloc[0]):,} to '
            f'{values[-1]} at {int(ponet["length"].iloc[-1]):,}')

  return (f'PoNet segment_num {spread("segment_num")}, segment_len '
          f'(L // segment_num + 1) {spread("segment_len")}')


def stamp(sweep) -> str:
  """Device, versions, dtype, setting, commit and dates of a sweep, one line."""
  # By key throughout: a row's `.dtype` would be the Series' own attribute.
  first = sweep.iloc[0]
  model = json.loads(first['config_json'])['model']
  dates = sorted(sweep['date'])
  caps = sweep['memory_cap_bytes'].dropna()
  parts = [
      markdown.device(first),
      # The libraries a row records: older rows lack optax and numpy.
      ', '.join(f'{name} {first[f"{name}_version"]}'
                for name in stamp_lib.LIBRARIES
                if markdown.known(first.get(f'{name}_version'))),
      first['dtype'],
      setting_of(sweep)[3],
      f'{first["task"]} config, {first["preset"]} preset: '
      f'{model["num_layers"]} layers, dim {model["dim"]}, '
      f'{model["num_heads"]} heads, MLP {model["mlp_dim"]}, '
      f'{segments(sweep)}',
      f'{int(first["steps"])} timed steps after {int(first["warmup"])} '
      'warm-up, median',
      f'cell budget {first["cell_timeout_s"]:g} s',
      f'memory cap {caps.iloc[0] / 2**30:.3g} GiB' if len(caps) else '',
      'git ' + markdown.code_version(first.get('git_commit'),
                                     first.get('git_clean')),
      f'{dates[0][:16]} to {dates[-1][:16]} UTC',
      f'sweep {first["sweep_id"]}',
  ]
  return '*' + ' · '.join(part for part in parts if part) + '*'


def cell_lookup(sweep):
  return {(row.label, int(row.length)): row for row in sweep.itertuples()}


def value_table(sweep, column, scale=1.0, status_only=True) -> str:
  return markdown.markdown_table(
      *value_rows(sweep, column, scale, status_only))


def value_rows(sweep, column, scale=1.0, status_only=True):
  """(header, rows) of `value (×multiplier)` per length; failures by status.

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
      usable = markdown.known(value) and (cell.status == 'ok'
                                          or not status_only)
      if not usable:
        row.append(cell.status)
        continue
      text = markdown.number(value / scale)
      reference_value = (getattr(reference, column) if reference is not None
                         else None)
      if name != REFERENCE and markdown.known(reference_value) and (
          reference.status == 'ok' or not status_only):
        text += f' ({markdown.multiplier(value / reference_value)})'
      if cell.status != 'ok':
        text += f' {cell.status}'
      row.append(text)
    rows.append(row)
  header = ['model'] + [f'{length:,}' for length in lengths]
  return header, rows


def peak_fractions(cell) -> str:
  """`a% / b%` of the device's peak FLOP rate and bandwidth, if known."""
  fractions = [getattr(cell, name, None)
               for name in ('tflops_fraction', 'bandwidth_fraction')]
  if not any(markdown.known(value) for value in fractions):
    return ''
  return ' / '.join(f'{value:.1%}' if markdown.known(value) else '?'
                    for value in fractions)


def details_table(sweep) -> str:
  maybe, number = markdown.maybe, markdown.number
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
          cell.reason if markdown.known(cell.reason) else ''])
  header = ['model', 'length', 'batch', 'status',
            'ms/step median (min–max)', 'tokens/s', 'GFLOP/step',
            'achieved TFLOP/s', 'achieved GB/s',
            '% of peak FLOP/s, bandwidth', 'compile s', 'compiled plan MiB',
            'measured peak MiB', 'reason']
  return markdown.markdown_table(header, rows)


def table2_layout(sweep) -> list[str]:
  """PoNet paper Table 2's rows and layout from this sweep, published beside.

  Empty unless the sweep is of the Text task (Table 2's setting) and has at
  least one of Table 2's models. The paper's Performer and Nystromformer
  numbers are not transcribed; only those of its other three rows are.
  """
  present = [(label, name) for label, name in published.TABLE2_ROWS
             if (sweep['label'] == label).any()]
  if setting_of(sweep)[0] != 'text' or not present:
    return []
  cells = cell_lookup(sweep)
  lengths = sorted(set(int(length) for length in sweep['length']))
  measured = sweep['peak_bytes_in_use'].notna().any()
  memory = 'peak_bytes_in_use' if measured else 'plan_total_bytes'

  def ours(label, column, scale):
    row = []
    for length in lengths:
      cell = cells.get((label, length))
      value = None if cell is None else getattr(cell, column)
      if cell is None:
        row.append('—')
      elif cell.status != 'ok' or not markdown.known(value):
        row.append(cell.status)
      else:
        row.append(markdown.number(value / scale))
    return row

  def theirs(values):
    by_length = dict(zip(published.LENGTHS_PUBLISHED, values))
    return [('OOM' if by_length[length] is None else f'{by_length[length]:g}')
            if length in by_length else '—' for length in lengths]

  rows = []
  for metric, column, scale, table, published_metric in (
      ('steps/s', 'steps_per_s', 1, published.PONET_TABLE2_STEPS, 'steps/s'),
      ('GB' if measured else 'GB (compiled plan)', memory, 1e9,
       published.PONET_TABLE2_GB, 'GB (peak)')):
    for label, name in present:
      rows.append([f'{name} {metric}'] + ours(label, column, scale))
      values = table.get(label.split(' ')[0])  # 'transformer (xla)' -> ...
      if values:
        rows.append([f'{name} {published_metric}, published']
                    + theirs(values))
  header = ['length'] + [f'{length:,}' for length in lengths]
  return ['PoNet paper Table 2 layout: our rows of this sweep, each followed '
          'by the published one where the paper\'s number is transcribed '
          '(one GPU, batch 32; comparable only on a GPU at batch 32). '
          'GB = 10^9 bytes.', '',
          markdown.markdown_table(header, rows), '']


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
  parts += table2_layout(sweep)
  return '\n'.join(parts)


def bench_report(device, frame, all_sweeps: bool) -> str:
  suite, _ = official.split(frame)
  sweeps = select_sweeps(suite, all_sweeps) if len(suite) else []
  parts = [f'# Training-step speed and memory: {device}', '',
           'Made by `python -m lra_ponet.report` from '
           f'`bench_{device}.csv` (`python -m lra_ponet.bench`; method in its '
           'docstring). One cell = one jitted training step (forward, '
           'backward, AdamW update) on random tokens with no padding, in its '
           'own process.', '']
  if (frame['platform'] == 'cpu').any():
    parts += [CPU_NOTE, '']
  parts += [sweep_section(sweep) for sweep in sweeps]
  comparison = official.comparison_section(frame)
  if comparison:
    parts.append(comparison)
  parts.append(published.published_section())
  return '\n'.join(parts)


def sweep_tables(device, frame, all_sweeps: bool) -> list:
  """[(name, Table)]: steps/s and the memory plan of each sweep shown."""
  suite, _ = official.split(frame)
  tables = []
  for sweep in (select_sweeps(suite, all_sweeps) if len(suite) else []):
    task, preset, dtype, batch = setting_of(sweep)
    name = f'speed_{device}_{task}_{preset}_{dtype}_{batch}'.replace(' ', '')
    if all_sweeps:
      name += f'_{sweep.iloc[0]["sweep_id"]}'
    tables.append((name, markdown.Table(
        *value_rows(sweep, 'steps_per_s'),
        'Training steps per second, median; × = the row / the '
        f'{REFERENCE} row. ' + stamp(sweep))))
    unit, scale = memory_unit(sweep['plan_total_bytes'])
    tables.append((name.replace('speed_', 'memory_plan_', 1), markdown.Table(
        *value_rows(sweep, 'plan_total_bytes', scale, status_only=False),
        f'XLA compiled memory plan, {unit}; × = the row / the {REFERENCE} '
        'row. ' + stamp(sweep))))
  return tables

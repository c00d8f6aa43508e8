"""The generated tables of the Markdown pages, one function per block name.

Each block reads committed results under `<root>/results/` and returns
Markdown text and tables (`markdown.Table`, also written as LaTeX). A name
may take an argument after a colon: `runs:cpu_listops` is the table of the
runs under results/runs/cpu_listops/. `pages` puts them into the pages.
"""

import json
import os
import pathlib
import re

import numpy as np

from lra_ponet import config_lib
from lra_ponet import tasks
from lra_ponet.errors import UserError
from lra_ponet.report import accuracy
from lra_ponet.report import load
from lra_ponet.report import markdown
from lra_ponet.report import official
from lra_ponet.report import published
from lra_ponet.report import speed
from lra_ponet.report.markdown import Table

# A ListOps model has left the majority-class plateau (about 17%) once its
# validation accuracy passes this.
PLATEAU_EXIT = 0.20
TASK_NAMES = {'listops': 'ListOps', 'text': 'Text', 'retrieval': 'Retrieval',
              'image': 'Image', 'pathfinder': 'Pathfinder', 'pathx': 'Path-X'}


def _read_run(folder: pathlib.Path) -> dict:
  try:
    result = json.loads((folder / 'results.json').read_text())
    metrics = [json.loads(line) for line in
               (folder / 'metrics.jsonl').read_text().splitlines() if line]
    config = config_lib.migrate(result['config'])
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
    raise UserError(f'{folder} is not a run of lra_ponet.run ({error}); '
                    'copy its results.json and metrics.jsonl back') from None
  conditions = folder / 'conditions.txt'
  return dict(folder=folder, result=result, config=config, metrics=metrics,
              model=result['model'], seed=config.get('seed'),
              config_hash=load.config_hash(config),
              conditions=(conditions.read_text().strip()
                          if conditions.exists() else ''),
              **load.larger_test(folder / 'evaluations.jsonl'))


def read_runs(root, name) -> list[dict]:
  """The runs under results/runs/<name>/, Table 1's order, then by seed."""
  folder = pathlib.Path(root) / 'results' / 'runs' / name
  runs = [_read_run(path.parent)
          for path in sorted(folder.glob('*/results.json'))]
  if not runs:
    raise UserError(f'no runs under {folder}/ (looked for */results.json)')
  order = list(published.LISTOPS_ROW)
  runs.sort(key=lambda run: (order.index(run['model']) if run['model']
                             in order else len(order), run['model'],
                             run['seed']))
  return runs


def _published_differences(run) -> list[str]:
  task, model = run['result']['task'], run['model']
  return accuracy.differences(run['config'], accuracy.published_setting(
      task, model, run['config']['preset']))


def _published_cell(run) -> str:
  """The published ListOps number beside a run of the paper's setting."""
  row = published.LISTOPS_ROW.get(run['model'])
  if run['result']['task'] != 'listops' or row is None:
    return 'none'
  changed = _published_differences(run)
  if changed:
    return f'— ({"; ".join(changed[:2])})'
  value = f'{row[4][0]:.2f}'
  return value if row[2] == published.SETTING_PONET else (
      f'{value} ({row[1]}, {row[2]})')


def _breakout_step(run) -> str:
  for record in run['metrics']:
    if record.get('val_accuracy', 0) > PLATEAU_EXIT:
      return f'{record["step"]:,}'
  return 'not left'


def _link(folder, page_dir) -> str:
  return f'[{folder.name}]({os.path.relpath(folder, page_dir)}/)'


def _device_cell(result) -> str:
  return (f'{result["device"]}, {result["wall_seconds"] / 3600:.1f} h at '
          f'{result["steps_per_second"]:.2f} steps/s')


def _percent(value) -> str:
  return f'{100 * value:.2f}'


def _retest(run) -> str:
  if run['retest'] is None:
    return '—'
  return f'{run["retest"]:.2f} ({run["retest_examples"]:,})'


def _mean_row(group) -> list[str]:
  tests = np.array([100 * run['result']['test_accuracy'] for run in group])
  vals = np.array([100 * run['result']['best_val_accuracy'] for run in group])
  retests = [run['retest'] for run in group]
  sizes = {run['retest_examples'] for run in group}
  retest = ('—' if None in retests or len(sizes) != 1 else
            f'{accuracy.mean_spread(np.array(retests))} ({sizes.pop():,})')
  return [f'{group[0]["model"]}, mean ± sd', f'{len(group)} seeds', '',
          accuracy.mean_spread(tests), retest, accuracy.mean_spread(vals),
          '', _published_cell(group[0]), '', '', '', '']


def runs_block(root, page_dir, name):
  """Every run under results/runs/<name>/, with the mean of each group."""
  runs = read_runs(root, name)
  rows = []
  for index, run in enumerate(runs):
    result = run['result']
    rows.append([
        run['model'], str(run['seed']), f'{result["train_steps"]:,}',
        _percent(result['test_accuracy']), _retest(run),
        f'{_percent(result["best_val_accuracy"])} ({result["best_step"]:,})',
        _breakout_step(run), _published_cell(run), _device_cell(result),
        markdown.code_version(result.get('git_commit'),
                              result.get('git_clean')).replace(
                                  'unknown', 'not recorded'),
        run['conditions'], _link(run['folder'], page_dir)])
    group = [other for other in runs
             if other['config_hash'] == run['config_hash']]
    if len(group) > 1 and index == runs.index(group[-1]):
      rows.append(_mean_row(group))
  header = ['model', 'seed', 'steps', 'test acc %', 're-test acc % '
            '(examples)', 'best val acc % (step)', 'leaves the plateau '
            '(step)', 'published ListOps %', 'device, time', 'commit',
            'conditions', 'results']
  caption = (f'*From `results/runs/{name}/*/` (results.json, metrics.jsonl, '
             'evaluations.jsonl). Test accuracy of the best-validation '
             'parameters on the 2,000 test examples; re-test: the same '
             'parameters on a larger generated test split (`python -m '
             'lra_ponet.evaluate`); the plateau: the majority class, left '
             f'at the first validation above {PLATEAU_EXIT:.0%}. Published: '
             'PoNet Table 1 in the ponet preset\'s setting, else the '
             'setting named; — where the run\'s config is not that '
             'setting (first differences named).*')
  return [Table(header, rows, caption, published=('published ListOps %',))]


def _listops_full_runs(root):
  runs = read_runs(root, 'cpu_listops')
  return [run for run in runs if not _published_differences(run)]


def table1_listops_block(root, page_dir, argument):
  """The ListOps column of PoNet Table 1: our runs beside the published."""
  del page_dir, argument
  runs = _listops_full_runs(root)
  models = list(published.LISTOPS_ROW) + sorted(
      {run['model'] for run in runs} - set(published.LISTOPS_ROW))
  rows = []
  for model in models:
    group = [run for run in runs if run['model'] == model]
    row = published.LISTOPS_ROW.get(model)
    theirs = ([f'{row[4][0]:.2f}', f'{row[0]}: {row[1]}, {row[2]}']
              if row else ['none', 'no published run in this setting'])
    if not group:
      rows.append([model, 'not trained yet', '—', '—'] + theirs)
      continue
    tests = np.array([100 * run['result']['test_accuracy']
                      for run in group])
    retests = [run['retest'] for run in group]
    seeds = ', '.join(str(run['seed']) for run in group)
    rows.append([model, f'{len(group)} (seed{"s" * (len(group) > 1)} '
                 f'{seeds})', accuracy.mean_spread(tests),
                 '—' if None in retests else
                 accuracy.mean_spread(np.array(retests))] + theirs)
  header = ['model', 'runs here', 'test acc % (2,000)',
            're-test acc % (20,000)', 'published ListOps %',
            'published row: source, setting']
  devices = sorted({run['result']['device'] for run in runs})
  caption = ('*Our runs: ListOps in the paper\'s setting (ponet preset, '
             '5,000 steps, float32), data generated with the official '
             f'algorithm, on {", ".join(devices)}; mean ± sd over seeds '
             '(`results/runs/cpu_listops/`). Published numbers are the '
             'papers\', not measured here; their test set is the LRA '
             'release\'s.*')
  return [Table(header, rows, caption, published=('published ListOps %',))]


def published_block(root, page_dir, argument):
  del root, page_dir, argument
  return [published.table1_table()]


def _bench_frame(root, folder=''):
  results = pathlib.Path(root) / 'results' / folder
  frames = load.load_bench(results)
  if 'cpu' not in frames:
    raise UserError(f'no bench_cpu.csv under {results}/; run '
                    'python -m lra_ponet.bench there first')
  return frames['cpu']


def _latest_sweep(frame, task):
  suite, _ = official.split(frame)
  sweeps = [sweep for sweep in speed.select_sweeps(suite, False)
            if sweep.iloc[0]['task'] == task]
  if not sweeps:
    raise UserError(f'no {task} sweep in results/bench_cpu.csv')
  return sweeps[-1]


def _slope(sweep, label, column) -> str:
  cells = sweep[(sweep['label'] == label) & (sweep['status'] == 'ok')]
  slope = speed.fitted_slope(list(cells['length']), list(cells[column]))
  return '—' if slope is None else f'{slope:.2f}'


def speed_text_block(root, page_dir, models):
  """Steps/s of the latest Text sweep (argument: models to keep)."""
  del page_dir
  sweep = _latest_sweep(_bench_frame(root), 'text')
  header, rows = speed.value_rows(sweep, 'steps_per_s')
  rows = [row + [_slope(sweep, row[0], 'ms_median')] for row in rows]
  if models:
    keep = models.split(',')
    rows = [row for row in rows if row[0].split(' ')[0] in keep]
  caption = ('Training steps per second, median (× = the row / the '
             'Transformer (xla) row at the same length; slope = fitted '
             'exponent of ms per step against length). ' + speed.stamp(sweep))
  return [Table(header + ['slope'], rows, caption)]


def _plan_cell(cell) -> str:
  text = markdown.number(cell.plan_total_bytes / 2**20)
  return text if cell.status == 'ok' else f'{text} ({cell.status})'


def memory_block(root, page_dir, argument):
  """The compiled plan of the Text sweep and the ListOps step, per model."""
  del page_dir, argument
  frame = _bench_frame(root)
  text, listops = _latest_sweep(frame, 'text'), _latest_sweep(frame,
                                                              'listops')
  text_cells, listops_cells = speed.cell_lookup(text), speed.cell_lookup(
      listops)
  shortest, longest = int(text['length'].min()), int(text['length'].max())
  listops_length = int(listops['length'].iloc[0])
  rows = []
  for label in speed.ordered_labels(text):
    step = listops_cells.get((label, listops_length))
    rows.append([
        label, _plan_cell(text_cells[(label, shortest)]),
        _plan_cell(text_cells[(label, longest)]),
        _slope(text, label, 'plan_total_bytes'),
        '—' if step is None else (
            markdown.number(step.ms_median / 1000) if step.status == 'ok'
            else step.status),
        '—' if step is None else markdown.number(
            step.plan_total_bytes / 2**30)])
  header = ['model', f'plan {shortest:,} (MiB)', f'plan {longest:,} (MiB)',
            'memory slope', f'ListOps s/step ({listops_length:,})',
            'ListOps plan (GiB)']
  caption = ('XLA\'s compiled memory plan of the Text step (a cell whose '
             'plan exceeds the memory cap is OOM and did not run), the '
             'fitted exponent of the plan against length over the cells '
             'that ran, and the ListOps step. ' + speed.stamp(text) + ' '
             + speed.stamp(listops))
  return [Table(header, rows, caption)]


def official_block(root, page_dir, folder):
  """The official code's step beside the suite's, from results/<folder>/."""
  del page_dir
  frame = _bench_frame(root, folder)
  rows = official.comparison_rows(frame)
  if not rows:
    raise UserError(f'results/{folder}/bench_cpu.csv has no rows of '
                    'benchmarks/official_cpu.py')
  table = [[row['task'], row['batch'], f'{row["length"]:,}', row['model'],
            row['official']['text'], row['suite']['text'], row['ratio'],
            official.ponet_over_fnet(rows, row)] for row in rows]
  header = ['task', 'batch', 'length', 'model', 'official code, ms/step',
            'this suite, ms/step', 'suite / official', 'suite PoNet / FNet']
  caption = ('Median over rounds of each round\'s median step (range over '
             f'rounds), from `results/{folder}/bench_cpu.csv`. '
             + official.official_stamp(frame))
  return [Table(header, table, caption)]


def rounds_block(root, page_dir, argument):
  """Each round's median step, per variant: `rounds:FOLDER[:TASK]`.

  The variant of a sweep is its id without the round number at its end.
  """
  del page_dir
  folder, _, task = argument.partition(':')
  frame = _bench_frame(root, folder)
  if task:
    frame = frame[frame['task'] == task]
  frame = frame.sort_values('date')
  frame = frame.assign(variant=[re.sub(r'-\d+$', '', sweep)
                                for sweep in frame['sweep_id']])
  variants = list(dict.fromkeys(frame['variant']))
  rows = []
  for (label, length), cells in frame.groupby(['label', 'length'],
                                              sort=False):
    row = [label, f'{int(length):,}']
    for variant in variants:
      done = cells[(cells['variant'] == variant) & (cells['status'] == 'ok')]
      row.append(' and '.join(markdown.number(value)
                              for value in done['ms_median']) or '—')
    rows.append(row)
  first = frame.iloc[0]
  caption = (f'*Median ms per step of each round, in order, from '
             f'`results/{folder}/bench_cpu.csv` (sweeps '
             f'{", ".join(dict.fromkeys(frame["sweep_id"]))}) · '
             f'{markdown.device(first)} · '
             f'{first["task"]}, batch {int(first["batch_size"])}, '
             f'{first["dtype"]} · git '
             f'{markdown.code_version(first.get("git_commit"), first.get("git_clean"))}'
             f' · {min(frame["date"])[:10]}*')
  header = ['model', 'length'] + [f'`{variant}`' for variant in variants]
  return [Table(header, rows, caption)]


def presets_block(root, page_dir, argument):
  """The fields in which the two presets differ, per task."""
  del argument
  parts = []
  for task in tasks.TASKS:
    source = os.path.relpath(pathlib.Path(root) / 'configs' / f'{task}.py',
                             page_dir)
    ours = config_lib.flatten(tasks.get_config(task, 'ponet',
                                               'transformer').to_dict())
    lra = config_lib.flatten(tasks.get_config(task, 'lra',
                                              'transformer').to_dict())
    rows = [[f'`{name}`', _value(ours.get(name)), _value(lra.get(name))]
            for name in sorted(ours.keys() | lra.keys())
            if ours.get(name) != lra.get(name)]
    parts.append(f'### {TASK_NAMES[task]}')
    parts.append(Table(['field', 'ponet', 'lra'], rows, (
        f'*`--task={task} --model=transformer`; every other field is the '
        'same in both presets. ponet: the official PoNet LRA code '
        '(lxchtan/PoNet `examples/LRA/code`); lra: the task\'s Transformer '
        'config in google-research/long-range-arena @cd31e5c '
        '(`lra_benchmarks/*/configs/transformer_base.py`); '
        f'[`configs/{task}.py`]({source}) lists what still '
        'differs from each.*')))
  return parts


def _value(value) -> str:
  return 'absent' if value is None else f'`{value}`'


def status_block(root, page_dir, argument):
  """One paragraph: what has been measured here, and what not yet."""
  del page_dir, argument
  full = _listops_full_runs(root)
  counts = {}
  for run in full:
    counts[run['model']] = counts.get(run['model'], 0) + 1
  trained = ', '.join(f'{model} ({count} seed{"s" * (count > 1)})'
                      for model, count in counts.items())
  missing = [model for model in published.LISTOPS_ROW if model not in counts]
  every_run = load.load_runs(pathlib.Path(root) / 'results' / 'runs')
  untrained = [TASK_NAMES[task] for task in TASK_NAMES
               if task not in set(every_run['task'])]
  results = pathlib.Path(root) / 'results'
  frames = [frame for folder in sorted({path.parent for path in
                                        results.glob('**/bench_*.csv')})
            for frame in load.load_bench(folder).values()]
  accelerated = any((frame['platform'] != 'cpu').any()
                    for frame in frames)
  devices = ', '.join(sorted(set(every_run['device'])))
  date, commit = _newest_stamp(root, frames)
  not_yet = [
      '' if accelerated else 'any GPU or TPU figure',
      ('ListOps in the paper\'s setting for ' + ', '.join(missing))
      if missing else '',
      ('accuracy on ' + ', '.join(untrained)) if untrained else '']
  return [f'**Status** (the committed results as of {date}, commit '
          f'`{commit}`). Trained here, ListOps in the paper\'s setting: '
          f'{trained}, on {devices}. Not measured yet: '
          f'{"; ".join(filter(None, not_yet))}.']


def _newest_stamp(root, frames) -> tuple[str, str]:
  """(date, commit) of the newest bench row or re-test that has a commit."""
  stamps = [(row_date, commit) for frame in frames
            for row_date, commit in zip(frame['date'], frame['git_commit'])
            if markdown.known(commit)]
  for path in (pathlib.Path(root) / 'results' / 'runs').glob(
      '**/evaluations.jsonl'):
    for line in path.read_text().splitlines():
      record = json.loads(line)
      if record.get('git_commit'):
        stamps.append((record['date'], record['git_commit']))
  date, commit = max(stamps)
  return date[:10], str(commit)[:12].replace('+dirty', '')


def summary_block(root, page_dir, run):
  """The lines a run's command printed at its end: `summary:GROUP/RUN`."""
  del page_dir
  from lra_ponet import train  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(root) / 'results' / 'runs' / run
  try:
    result = json.loads((folder / 'results.json').read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise UserError(f'{folder}/results.json is not readable ({error})'
                    ) from None
  return [f'```\n{train.summary(result, f"runs/{run}")}\n```']


BLOCKS = {
    'summary': summary_block,
    'status': status_block,
    'table1-listops': table1_listops_block,
    'runs': runs_block,
    'published-table1': published_block,
    'speed-text': speed_text_block,
    'memory': memory_block,
    'official': official_block,
    'rounds': rounds_block,
    'presets': presets_block,
}


def render(name: str, root, page_dir) -> list:
  """The block `name` (or `name:argument`) as Markdown text and Tables."""
  base, _, argument = name.partition(':')
  if base not in BLOCKS:
    raise UserError(f'unknown report block {name!r}; use one of '
                    f'{", ".join(BLOCKS)}')
  return BLOCKS[base](root, page_dir, argument)

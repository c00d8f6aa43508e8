r"""Log-log plots of step time and memory against sequence length.

  python -m lra_ponet.plot
  python -m lra_ponet.plot --results_dir=results --all_sweeps
  python -m lra_ponet.plot --runs_dir=results/runs/cpu_listops

With --runs_dir it draws the learning curves of the training runs under that
folder instead (see `lra_ponet.curves`), `<results_dir>/curves_<task>.png`.

One PNG per sweep that `lra_ponet.report` shows:
`<results_dir>/bench_<device>_<task>_<dtype>_<batch>.png`, with the sweep id
appended under --all_sweeps. Left: ms per step (median). Right: memory, the
measured peak where the device reports one, else XLA's compiled plan (the
axis says which). One line per model; a cell that failed is a marker at its
length along the top edge (x: OOM, triangle: TIMEOUT, diamond: error). The
legend gives each line's slope: the least-squares fit of log cost against log
length over its points, so 1 is linear growth and 2 quadratic.
"""

import pathlib
import sys

import matplotlib

matplotlib.use('Agg')  # Files only; no display on the machines that plot.

# pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib.transforms as mtransforms
import numpy as np
from absl import app
from absl import flags

from lra_ponet import curves
from lra_ponet import errors
from lra_ponet.errors import UserError
from lra_ponet.report import load
from lra_ponet.report import speed
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
FAILURE_MARKERS = {'OOM': 'x', 'TIMEOUT': 'v', 'error': 'D'}
# Ten colours, then the same colours dashed, dash-dotted, dotted: up to 40
# models stay apart.
COLORS = plt.get_cmap('tab10').colors
LINESTYLES = ('-', '--', '-.', ':')
# Past this many models the legend goes beside the panel, not over it.
LEGEND_INSIDE_MAX = 6


def define_flags():
  """Defined on running the command, so that importing has no effect."""
  flags.DEFINE_string('results_dir', 'results',
                      'Where the bench CSVs are and the PNGs go.')
  flags.DEFINE_boolean('all_sweeps', False,
                       'Every sweep, not only the latest of each setting '
                       '(file names then end in the sweep id).')
  flags.DEFINE_string('runs_dir', None,
                      'Draw the learning curves of the runs under this '
                      'folder (metrics.jsonl) instead of the bench plots.')


def length_label(length: int) -> str:
  return f'{length // 1024}K' if length >= 1024 and not length % 1024 else (
      str(length))


def memory_axis_of(sweep):
  """(column, scale, axis label): measured peak if any, else the plan."""
  if sweep['peak_bytes_in_use'].notna().any():
    column, what = 'peak_bytes_in_use', 'peak memory, measured'
  else:
    column, what = 'plan_total_bytes', 'memory, XLA compiled plan'
  unit, scale = speed.memory_unit(sweep[column])
  return column, scale, f'{what} ({unit})'


def draw_panel(axis, sweep, column, scale, ylabel):
  """One line per model, failures on the top edge; returns label -> slope."""
  edge = mtransforms.blended_transform_factory(axis.transData,
                                               axis.transAxes)
  slopes, statuses = {}, set()
  labels = speed.ordered_labels(sweep)
  # Rows of failure markers stacked below the top edge within its top half.
  row_step = min(0.05, 0.5 / len(labels))
  for index, name in enumerate(labels):
    cells = sweep[sweep['label'] == name].sort_values('length')
    # The compiled plan of a cell that timed out is still the step's plan; an
    # OOM cell's is not a figure the step could have.
    plotted = cells[cells[column].notna() & (cells['status'] != 'OOM')]
    lengths = plotted['length'].to_numpy(float)
    values = plotted[column].to_numpy(float) / scale
    slope = speed.fitted_slope(lengths, values) if len(values) else None
    slopes[name] = slope
    legend = name if slope is None else f'{name} (slope {slope:.2f})'
    line, = axis.plot(lengths, values, marker='o', markersize=4,
                      label=legend, color=COLORS[index % len(COLORS)],
                      linestyle=LINESTYLES[index // len(COLORS)
                                           % len(LINESTYLES)])
    failed = cells[~cells.index.isin(plotted.index)
                   & (cells['status'] != 'ok')]
    for status, group in failed.groupby('status'):
      statuses.add(status)
      # Stacked below the top edge, one row per model, so markers of models
      # that fail at the same length stay apart.
      axis.plot(group['length'],
                np.full(len(group), 0.96 - row_step * index),
                transform=edge, linestyle='none', color=line.get_color(),
                marker=FAILURE_MARKERS.get(status, 'D'), markersize=8,
                markeredgewidth=2, clip_on=False)
  _format_axes(axis, sweep, sorted(statuses), ylabel, len(labels))
  return slopes


def _format_axes(axis, sweep, statuses, ylabel, num_models):
  """Log-log axes over the sweep's lengths, a legend entry per failure."""
  for status in statuses:
    axis.plot([], [], linestyle='none', color='black', markersize=8,
              marker=FAILURE_MARKERS.get(status, 'D'), markeredgewidth=2,
              label=f'{status} (at top)')
  lengths = sorted(set(int(length) for length in sweep['length']))
  axis.set_xscale('log', base=2)
  axis.set_yscale('log')
  axis.set_xticks(lengths, [length_label(length) for length in lengths])
  axis.xaxis.set_minor_locator(mticker.NullLocator())
  bottom, top = axis.get_ylim()
  if statuses:
    # Headroom above the highest point for the rows of failure markers.
    top *= (top / bottom) ** 0.2
    axis.set_ylim(bottom, top)
  # Within two decades, 1-2-5 ticks, so that a narrow range gets labels.
  subs = (1, 2, 5) if top / bottom < 100 else (1,)
  axis.yaxis.set_major_locator(mticker.LogLocator(subs=subs))
  axis.yaxis.set_major_formatter(mticker.FuncFormatter(
      lambda value, _: f'{value:,.0f}' if value >= 1 else f'{value:g}'))
  axis.yaxis.set_minor_formatter(mticker.NullFormatter())
  axis.set_xlabel('sequence length')
  axis.set_ylabel(ylabel)
  axis.grid(True, which='major', alpha=0.3)
  if num_models <= LEGEND_INSIDE_MAX:
    axis.legend(fontsize=8, loc='upper left')
  else:
    axis.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0),
                borderaxespad=0.0)


def plot_sweep(sweep, path):
  """Writes the two-panel PNG of one sweep; returns {panel: {label: slope}}."""
  task, preset, dtype, batch = speed.setting_of(sweep)
  first = sweep.iloc[0]
  many = len(speed.ordered_labels(sweep)) > LEGEND_INSIDE_MAX
  figure, (time_axis, memory_axis) = plt.subplots(
      1, 2, figsize=(17, 6.4) if many else (12, 4.8))
  column, scale, ylabel = memory_axis_of(sweep)
  slopes = {
      'time': draw_panel(time_axis, sweep, 'ms_median', 1.0,
                         'ms per training step (median)'),
      'memory': draw_panel(memory_axis, sweep, column, scale, ylabel),
  }
  title = (f'{task} config ({preset} preset), {dtype}, {batch} on '
           f'{int(first["device_count"])} x {first["device_kind"]}')
  if first['platform'] == 'cpu':
    title += '\nshared CPU: compare slopes and ratios, not absolute values'
  figure.suptitle(title, fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return slopes


def file_name(device, sweep, with_sweep_id: bool) -> str:
  task, _, dtype, _ = speed.setting_of(sweep)
  first = sweep.iloc[0]
  batch = (f'tokens{int(first["tokens_per_batch"])}'
           if first['tokens_per_batch'] else
           f'batch{int(first["batch_size"])}')
  name = f'bench_{device}_{task}_{dtype}_{batch}'
  if with_sweep_id:
    name += f'_{first["sweep_id"]}'
  return name + '.png'


def main(argv):
  del argv
  results_dir = pathlib.Path(FLAGS.results_dir)
  if FLAGS.runs_dir:
    try:
      for path in curves.plot_runs(FLAGS.runs_dir, results_dir):
        print(path)
    except UserError as error:
      sys.exit(f'error: {error}')
    return
  try:
    frames = load.load_bench(results_dir)
  except UserError as error:
    sys.exit(f'error: {error}')
  if not frames:
    sys.exit(f'error: no bench CSV under {results_dir}/; run python -m '
             'lra_ponet.bench first')
  for device, frame in frames.items():
    for sweep in speed.select_sweeps(frame, FLAGS.all_sweeps):
      if sweep['length'].nunique() < 2:
        continue  # One length has no scaling to plot; the report has it.
      path = results_dir / file_name(device, sweep, FLAGS.all_sweeps)
      slopes = plot_sweep(sweep, path)
      summary = '; '.join(
          f'{panel}: ' + ', '.join(
              f'{name} {slope:.2f}' for name, slope in fits.items()
              if slope is not None)
          for panel, fits in slopes.items())
      print(f'{path} (slopes {summary})')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

"""Learning curves of training runs: accuracy and loss against step.

  python -m lra_ponet.plot --runs_dir=results/runs/cpu_listops

Reads every `<runs_dir>/**/metrics.jsonl` beside its `results.json` (or
`config.json` for a run still going) and draws one figure per task: validation
accuracy (solid) and training accuracy (dotted) on the left, the two losses on
the right, one line per run labelled by model and seed (a colour per model, a
marker per seed). The published final test accuracy of the matching PoNet
paper Table 1 row, where there is one, is a dashed horizontal line of the
model's colour.
"""

import json
import pathlib

import matplotlib

matplotlib.use('Agg')  # Files only; no display on the machines that plot.

# pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt

from lra_ponet.errors import UserError
from lra_ponet.report import published
# pylint: enable=g-import-not-at-top,wrong-import-position

SEED_MARKERS = ('o', 's', '^', 'D', 'v')


def _read_jsonl(path: pathlib.Path) -> list[dict]:
  records = []
  for line_number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      raise UserError(f'{path}:{line_number}: not a JSON line ({error.msg})'
                      ) from None
  return records


def _read_config(run_dir: pathlib.Path) -> dict:
  for name in ('results.json', 'config.json'):
    path = run_dir / name
    if path.exists():
      try:
        payload = json.loads(path.read_text())
      except json.JSONDecodeError as error:
        raise UserError(f'{path}: not JSON ({error.msg})') from None
      return payload.get('config', payload)
  raise UserError(f'{run_dir}: metrics.jsonl without results.json or '
                  'config.json; is this a run directory of lra_ponet.run?')


def load_curves(runs_dir) -> list[dict]:
  """One entry per run: task, model, preset, seed, label and its records."""
  runs_dir = pathlib.Path(runs_dir)
  if not runs_dir.is_dir():
    raise UserError(f'--runs_dir {runs_dir} is not a directory')
  runs = []
  for metrics_path in sorted(runs_dir.rglob('metrics.jsonl')):
    records = _read_jsonl(metrics_path)
    if not records:
      continue
    config = _read_config(metrics_path.parent)
    model = config['model']['name']
    runs.append({'task': config['task'], 'model': model,
                 'preset': config['preset'], 'seed': config['seed'],
                 'label': f'{model}, seed {config["seed"]}',
                 'records': records})
  return runs


def published_final_accuracy(task: str, model: str, preset: str):
  """The PoNet paper Table 1 test accuracy (%) of this row, or None."""
  row = published.TABLE1_ROW.get((model, preset))
  if row is None or task not in published.TABLE1_TASKS:
    return None
  return published.TABLE1[row][published.TABLE1_TASKS.index(task)]


def _series(records, name):
  steps = [record['step'] for record in records if name in record]
  return steps, [record[name] for record in records if name in record]


def plot_task(task: str, runs: list[dict], path: pathlib.Path):
  """Writes the two-panel learning-curve PNG of the runs of one task."""
  figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
  colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
  models = sorted({run['model'] for run in runs})
  seeds = sorted({run['seed'] for run in runs})
  published_drawn = set()
  for run in runs:
    colour = colours[models.index(run['model']) % len(colours)]
    marker = SEED_MARKERS[seeds.index(run['seed']) % len(SEED_MARKERS)]
    for axis, metric, scale in ((accuracy_axis, 'accuracy', 100.0),
                                (loss_axis, 'loss', 1.0)):
      steps, values = _series(run['records'], f'val_{metric}')
      axis.plot(steps, [value * scale for value in values], color=colour,
                marker=marker, markersize=3, markevery=max(len(steps) // 10, 1),
                label=f'{run["label"]}, validation')
      steps, values = _series(run['records'], f'train_{metric}')
      axis.plot(steps, [value * scale for value in values], color=colour,
                linestyle=':', label=f'{run["label"]}, training')
    published = published_final_accuracy(task, run['model'], run['preset'])
    key = (run['model'], run['preset'])
    if published is not None and key not in published_drawn:
      published_drawn.add(key)
      accuracy_axis.axhline(published, color=colour, linestyle='--',
                            linewidth=1,
                            label=f'{run["model"]}: published test '
                                  f'{published:.2f} (PoNet Table 1)')
  accuracy_axis.set_ylabel('accuracy (%)')
  loss_axis.set_ylabel('cross-entropy loss')
  for axis in (accuracy_axis, loss_axis):
    axis.set_xlabel('training step')
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
  figure.suptitle(f'{task}: validation (solid) and training (dotted, mean '
                  'since the previous evaluation)', fontsize=11)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_runs(runs_dir, out_dir) -> list[pathlib.Path]:
  """One `curves_<task>.png` in out_dir per task found under runs_dir."""
  runs = load_curves(runs_dir)
  if not runs:
    raise UserError(f'no metrics.jsonl under {runs_dir}/; train with python '
                    '-m lra_ponet.run first')
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for task in sorted({run['task'] for run in runs}):
    path = out_dir / f'curves_{task}.png'
    plot_task(task, [run for run in runs if run['task'] == task], path)
    paths.append(path)
  return paths

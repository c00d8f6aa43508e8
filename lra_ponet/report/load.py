"""Reading what the tables are made of: bench CSVs and runs' results.json."""

import hashlib
import json
import pathlib

import pandas as pd

from lra_ponet import config_lib
from lra_ponet.errors import UserError
from lra_ponet.report.markdown import known

# What the tables read; a CSV without them is not a bench CSV.
NEEDED = ('sweep_id', 'date', 'task', 'preset', 'model', 'attention',
          'length', 'batch_size', 'tokens_per_batch', 'dtype', 'status',
          'reason', 'steps_per_s', 'peak_bytes_in_use', 'plan_total_bytes',
          'memory_cap_bytes', 'device_kind', 'platform', 'config_json')


def row_label(model, attention) -> str:
  return f'{model} ({attention})' if known(attention) and attention else model


def load_bench(results_dir):
  """{device slug: DataFrame} of every bench CSV under results_dir."""
  frames = {}
  for path in sorted(pathlib.Path(results_dir).glob('bench_*.csv')):
    try:
      frame = pd.read_csv(path, dtype={'attention': str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
      raise UserError(f'{path} is not a readable CSV: {error}') from None
    missing = [column for column in NEEDED if column not in frame.columns]
    if missing or frame.empty:
      raise UserError(f'{path} is not a bench CSV of lra_ponet.bench (no '
                      f'rows or missing {", ".join(missing)})')
    frame['attention'] = frame['attention'].fillna('')
    # Rows written before the column existed are the suite's.
    frame['framework'] = (frame['framework'].fillna('lra_ponet')
                          if 'framework' in frame.columns else 'lra_ponet')
    frame['label'] = [row_label(m, a) for m, a in
                      zip(frame['model'], frame['attention'])]
    frames[path.stem[len('bench_'):]] = frame
  return frames


def config_hash(config: dict) -> str:
  """Eight hex digits of the whole config except the seed.

  Added fields at the value that reproduces older runs are left out
  (`config_lib.without_added_defaults`), so a run keeps its hash.
  """
  config = config_lib.without_added_defaults(config)
  rest = {name: value for name, value in config.items() if name != 'seed'}
  text = json.dumps(rest, sort_keys=True)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]


def load_runs(runs_dir):
  """One row per results.json under runs_dir, accuracies in percent."""
  records = []
  for path in sorted(pathlib.Path(runs_dir).glob('**/results.json')):
    try:
      result = json.loads(path.read_text())
      config = config_lib.migrate(result['config'])
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
          # None in results written before the stamp had them.
          'git_commit': result.get('git_commit'),
          'git_clean': result.get('git_clean'),
          'data_notes': result.get('data_notes', ''),
          **larger_test(path.parent / 'evaluations.jsonl')})
    except (json.JSONDecodeError, KeyError, TypeError) as error:
      raise UserError(f'{path} is not a results.json of lra_ponet.run: '
                      f'{type(error).__name__} {error}') from None
  return pd.DataFrame(records)


def larger_test(path) -> dict:
  """The run's largest re-test with overridden data (lra_ponet.evaluate).

  `retest` (accuracy in percent) and `retest_examples`, both None without
  one.
  """
  best = None
  if path.exists():
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
      try:
        record = json.loads(line)
        if (record['split'] == 'test' and record['overrides'] and
            (best is None or record['examples'] >= best['examples'])):
          best = record
      except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f'{path}:{line_number} is not a record of lra_ponet.'
                        f'evaluate: {type(error).__name__} {error}') from None
  if best is None:
    return {'retest': None, 'retest_examples': None}
  return {'retest': 100 * best['accuracy'],
          'retest_examples': best['examples']}

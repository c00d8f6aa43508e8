"""The accuracy table of the training runs.

For every `<runs_dir>/**/results.json` written by `lra_ponet.run`: test
accuracy of the runs whose whole config but the seed is the same (a short
config hash names it), mean and spread over their seeds, with the data source,
the quirk switches and the device (and the runs' git commits where recorded),
and the paper's Table 1 number beside a row only where the config and data are
the published ones (otherwise why not).
"""

import json

from lra_ponet import config_lib
from lra_ponet import tasks
from lra_ponet.report import load
from lra_ponet.report import markdown
from lra_ponet.report import published

# Config fields that do not change what a run computes, or that no published
# setting fixes, left out when a run is compared with the published setting;
# dropout_mask_bits, like the seed, only chooses the random stream.
NOT_COMPARED = frozenset({'seed', 'data_dir', 'data_seed', 'log_every',
                          'checkpoint_every', 'checkpoint_keep',
                          'eval_batch_size', 'dropout_mask_bits'})
PIXEL_TASKS = ('image', 'pathfinder')
# Tasks whose data here is never exactly the published runs' data, and why.
DATA_NOT_PUBLISHED = {
    'pathfinder': 'neither split order here is the published runs\' split '
                  'of the release images',
}


def mean_spread(values) -> str:
  if len(values) < 2:
    return f'{values.mean():.2f}'
  return f'{values.mean():.2f} ± {values.std(ddof=1):.2f}'


def published_setting(task, model, preset) -> dict:
  """The config of the published run: the preset, with the paper's switches.

  The official PoNet and LRA code mask token 0, so on pixel tasks their
  numbers were made with black pixels as padding (official_pixel_quirks).
  """
  config = json.loads(json.dumps(  # Tuples become lists, as saved.
      tasks.get_config(task, preset, model).to_dict()))
  if task in PIXEL_TASKS:
    config['official_pixel_quirks'] = True
  return config


def differences(config: dict, published: dict) -> list[str]:
  ours, theirs = config_lib.flatten(config), config_lib.flatten(published)
  return [f'{name} {ours.get(name, "absent")} (published '
          f'{theirs.get(name, "absent")})'
          for name in sorted(ours.keys() | theirs.keys())
          if name.rsplit('.', 1)[-1] not in NOT_COMPARED
          and ours.get(name, 'absent') != theirs.get(name, 'absent')]


def published_accuracy(task, model, config, data_source) -> str:
  """The published number, only beside a run of the published setting.

  PoNet paper Table 1 for the LRA tasks, or a task module's own `PUBLISHED`
  (`contract.Task`). Otherwise '—' and why not: another config (the first
  differing fields) or other data (generated instead of the LRA release).
  """
  preset = config.get('preset')
  own = getattr(tasks.get_task(task), 'PUBLISHED', {}).get((model, preset))
  row = published.TABLE1_ROW.get((model, preset))
  if own is None and (row is None or task not in published.TABLE1_TASKS):
    return '—'
  changed = differences(config, published_setting(task, model, preset))
  if changed:
    more = f'; {len(changed) - 3} more' if len(changed) > 3 else ''
    return f'— (not the published setting: {"; ".join(changed[:3])}{more})'
  if own is not None:
    return f'{own[1]:.2f} ({own[0]})'
  if data_source.startswith('generated'):
    return '— (generated data, not the LRA release)'
  if task in DATA_NOT_PUBLISHED:
    return f'— ({DATA_NOT_PUBLISHED[task]})'
  value = published.TABLE1[row][published.TABLE1_TASKS.index(task)]
  return 'FAIL' if value is None else f'{value:.2f}'


def larger_test_cell(group) -> str:
  """The re-test on more examples, where every run of the group has one."""
  sizes = group['retest_examples']
  if sizes.isna().any() or sizes.nunique() != 1:
    return '—'
  return f'{mean_spread(group["retest"])} ({int(sizes.iloc[0]):,})'


def device_cell(device, group) -> str:
  """The device, then the runs' commits where any run recorded one."""
  commits = sorted({markdown.code_version(commit, clean) for commit, clean
                    in zip(group['git_commit'], group['git_clean'])})
  if commits == ['unknown']:
    return device
  return f'{device}; git {", ".join(commits)}'


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
                 mean_spread(group['test']), larger_test_cell(group),
                 mean_spread(group['val']),
                 published_accuracy(task, model, first['config'], source),
                 source + (f'; {notes}' if notes else ''),
                 'on' if first['pixel_quirks'] else 'off',
                 first['mean_over'], device_cell(device, group)])
  return rows


ACCURACY_HEADER = ['task', 'model', 'preset', 'config', 'train steps', 'runs',
                   'test acc %', 'test acc %, larger test split (examples)',
                   'best val acc %', 'published (Table 1)', 'data source',
                   'official_pixel_quirks', 'mean_over', 'device']


def accuracy_table(runs) -> markdown.Table:
  return markdown.Table(
      ACCURACY_HEADER, accuracy_rows(runs),
      'Test accuracy % of the best-validation parameters, mean ± sd over '
      'seeds, per config.', published=('published (Table 1)',))


def accuracy_report(runs_dir) -> str:
  runs = load.load_runs(runs_dir)
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
              'differs); otherwise the cell says why not. "Larger test '
              'split": the same parameters tested again by `python -m '
              'lra_ponet.evaluate` on a test split with other data (e.g. '
              '`--config.generator.num_test=20000`), the largest recorded in '
              'each run\'s evaluations.jsonl, where every run of the row has '
              'one of the same size.', '',
              accuracy_table(runs).markdown(),
              '']
  parts += published.table1_section()
  return '\n'.join(parts)

"""The suite's training step against the official code's (framework column).

Rows of `framework` = official come from `benchmarks/official_cpu.py`,
which times each cell of both frameworks in rounds on one machine. The
table gives, per setting, model and length, the median over rounds of each
framework's median step (with the range over rounds) and their ratio; and
PoNet's step against FNet's in the suite, since PoNet does strictly more
work.
"""

import json

from lra_ponet import stamp as stamp_lib
from lra_ponet.report import markdown

OFFICIAL = 'official'
SUITE = 'lra_ponet'


def split(frame):
  """(the suite's rows, the official code's rows)."""
  official = frame['framework'] == OFFICIAL
  return frame[~official], frame[official]


def _over_rounds(rows) -> dict:
  """Median, min and max over rounds of each round's median step (ms)."""
  done = rows[rows['status'] == 'ok']['ms_median']
  if done.empty:
    statuses = ', '.join(sorted(set(rows['status'])))
    return {'text': statuses or '—', 'median': None}
  text = markdown.number(done.median())
  if len(done) > 1:
    text += (f' ({markdown.number(done.min())} to '
             f'{markdown.number(done.max())})')
  return {'text': text, 'median': done.median(), 'rounds': len(done)}


def comparison_rows(frame):
  """One row per (task, batch, length, model) measured by both."""
  compared = frame[frame['sweep_id'].isin(
      set(frame[frame['framework'] == OFFICIAL]['sweep_id']))]
  rows = []
  keys = ['task', 'batch_size', 'length', 'model']
  for (task, batch, length, model), cell in compared.groupby(keys,
                                                             sort=False):
    suite = _over_rounds(cell[cell['framework'] == SUITE])
    official = _over_rounds(cell[cell['framework'] == OFFICIAL])
    ratio = (markdown.multiplier(suite['median'] / official['median'])
             if suite['median'] and official['median'] else '—')
    rows.append(dict(task=task, batch=int(batch), length=int(length),
                     model=model, suite=suite, official=official,
                     ratio=ratio))
  return rows


def ponet_over_fnet(rows, row) -> str:
  if row['model'] != 'ponet':
    return ''
  for other in rows:
    if (other['model'] == 'fnet' and other['task'] == row['task']
        and other['length'] == row['length']
        and other['batch'] == row['batch'] and other['suite']['median']):
      return markdown.multiplier(row['suite']['median']
                                 / other['suite']['median'])
  return ''


def official_stamp(frame) -> str:
  official = frame[frame['framework'] == OFFICIAL]
  first = official.iloc[0]
  config = json.loads(first['config_json'])
  dates = sorted(frame['date'])
  libraries = ', '.join(f'{name} {first[f"{name}_version"]}'
                        for name in stamp_lib.LIBRARIES
                        if markdown.known(first.get(f'{name}_version')))
  tunables = first.get('glibc_tunables')
  parts = [
      markdown.device(first),
      f'official code {config["official_commit"][:12]} under PyTorch '
      f'{config["torch_version"]} ({config["torch_threads"]} threads)',
      f'the suite: {libraries}',
      'git ' + markdown.code_version(first.get('git_commit'),
                                     first.get('git_clean')),
      f'GLIBC_TUNABLES={tunables}' if markdown.known(tunables) and tunables
      else 'GLIBC_TUNABLES unset',
      f'{int(first["steps"])} timed steps after {int(first["warmup"])} '
      'warm-up, median',
      f'{dates[0][:16]} to {dates[-1][:16]} UTC']
  return '*' + ' · '.join(parts) + '*'


def comparison_section(frame) -> str:
  """The section, or '' when the frame has no official rows."""
  if not (frame['framework'] == OFFICIAL).any():
    return ''
  rows = comparison_rows(frame)
  table = markdown.markdown_table(
      ['task', 'batch', 'length', 'model', 'official code, ms/step',
       'this suite, ms/step', 'suite / official', 'suite PoNet / FNet'],
      [[row['task'], row['batch'], f'{row["length"]:,}', row['model'],
        row['official']['text'], row['suite']['text'], row['ratio'],
        ponet_over_fnet(rows, row)] for row in rows])
  rounds = max((row['suite'].get('rounds', 0) for row in rows), default=0)
  return '\n'.join([
      '## The official code\'s training step beside the suite\'s', '',
      'Made from the rows of `benchmarks/official_cpu.py`: each cell timed '
      f'in {rounds} round{"s" * (rounds != 1)}, alternating which framework goes first; the '
      'median over rounds of each round\'s median step (the range over '
      'rounds in brackets). Below 1 the suite is faster.', '', table, '',
      official_stamp(frame), ''])

"""The published numbers our tables are compared with, and their tables.

Speed and memory: PoNet paper Table 2 and LRA paper Table 2. Accuracy: PoNet
paper Table 1, with which of its rows a run of ours is compared.
"""

from lra_ponet.report import markdown

LENGTHS_PUBLISHED = (512, 1024, 2048, 4096, 8192, 16384)
# PoNet paper (Tan et al., ICLR 2022) Table 2: one GPU, Text setting,
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
# PoNet paper Table 2's models, in its order: (our label, its name).
TABLE2_ROWS = (('transformer (xla)', 'Transformer'),
               ('performer', 'Performer'),
               ('nystromformer', 'Nyströmformer'),
               ('fnet', 'FNet'),
               ('ponet', 'PoNet'))
# LRA paper (Tay et al., ICLR 2021) Table 2: Transformer on TPU v3, batch 32.
LRA_TABLE2 = {'length': (1024, 2048, 3072, 4096),
              'steps/s': (8.1, 4.9, 2.3, 1.4),
              'GB': (0.85, 2.65, 5.51, 9.48)}
TABLE1_TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder')
# Which published row a run of ours is compared with: (model, preset) -> row.
TABLE1_ROW = {
    ('transformer', 'ponet'): 'Transformer (Xiong et al. setting)',
    ('transformer', 'lra'): 'Transformer (Tay et al., original LRA)',
    ('fnet', 'ponet'): 'FNet (re-implemented by the PoNet authors)',
    ('ponet', 'ponet'): 'PoNet',
}


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
          row.append(f'{value:g} ({markdown.multiplier(value / base)})')
      out.append(row)
    return out

  lra_header = ['Transformer'] + [f'{n:,}' for n in LRA_TABLE2['length']]
  return '\n'.join([
      '## Published anchors (not measured here)', '',
      'Published (PoNet paper Table 2, one GPU, batch 32, Text setting): '
      'training steps per second; × = row / Transformer.', '',
      markdown.markdown_table(header, rows(PONET_TABLE2_STEPS)), '',
      'Published (PoNet paper Table 2, one GPU, batch 32, Text setting): '
      'peak memory, GB; × = row / Transformer.', '',
      markdown.markdown_table(header, rows(PONET_TABLE2_GB)), '',
      'Published (LRA paper Table 2, TPU v3, batch 32): Transformer.', '',
      markdown.markdown_table(lra_header, [
          ['steps/s'] + [f'{v:g}' for v in LRA_TABLE2['steps/s']],
          ['GB'] + [f'{v:g}' for v in LRA_TABLE2['GB']]]), ''])


def table1_section() -> list[str]:
  """PoNet paper Table 1 as printed under the accuracy table."""
  header = ['model (published)', 'ListOps', 'Text', 'Retrieval', 'Image',
            'Pathfinder', 'avg']
  return ['Published (PoNet paper Table 1, test accuracy %):', '',
          markdown.markdown_table(header, [
              [row] + ['FAIL' if v is None else f'{v:.2f}' for v in values]
              + [TABLE1_AVERAGE[row]] for row, values in TABLE1.items()]),
          '']

# Every published row the suite's mixers are compared with, accuracy % per
# TABLE1_TASKS (None = FAIL) and the average as printed: (row, source,
# setting, --model, values, average). PoNet Table 1 marks rows copied from
# the LRA paper (LRA's per-task configs) "(1)" and rows from Xiong et al.
# 2021 (the ponet preset's 2-layer, dim-64 setting) "(3)"; its "Linear (2)"
# row is FNet's dense linear mixing, not the Linear Transformer, whose row is
# LRA Table 1's.
SETTING_PONET = 'the ponet preset\'s (2 layers, dim 64)'
SETTING_LRA = 'LRA\'s per-task configs'
PUBLISHED_ROWS = (
    ('Transformer (3)', 'PoNet Table 1', SETTING_PONET, 'transformer',
     (37.10, 65.02, 79.35, 38.20, 74.16), '58.77'),
    ('Transformer (1)', 'PoNet Table 1 = LRA Table 1', SETTING_LRA,
     'transformer', (36.37, 64.27, 57.46, 42.44, 71.40), '54.39'),
    ('Longformer (1)', 'PoNet Table 1 = LRA Table 1', SETTING_LRA,
     'longformer', (35.63, 62.85, 56.89, 42.22, 69.71), '53.46'),
    ('BigBird (1)', 'PoNet Table 1 = LRA Table 1', SETTING_LRA, 'bigbird',
     (36.05, 64.02, 59.29, 40.83, 74.87), '55.01'),
    ('Performer (3)', 'PoNet Table 1', SETTING_PONET, 'performer',
     (18.80, 63.81, 78.62, 37.07, 69.87), '53.63'),
    ('Performer (1)', 'PoNet Table 1 = LRA Table 1', SETTING_LRA,
     'performer', (18.01, 65.40, 53.82, 42.77, 77.05), '51.41'),
    ('Linear Transformer', 'LRA Table 1', SETTING_LRA, 'linear_transformer',
     (16.13, 65.90, 53.09, 42.34, 75.30), '50.55'),
    ('Reformer (3)', 'PoNet Table 1', SETTING_PONET, 'reformer',
     (19.05, 64.88, 78.64, 43.29, 69.36), '55.04'),
    ('Reformer', 'LRA Table 1', SETTING_LRA, 'reformer',
     (37.27, 56.10, 53.40, 38.07, 68.50), '50.67'),
    ('Linformer (3)', 'PoNet Table 1', SETTING_PONET, 'linformer',
     (37.25, 55.91, 79.37, 37.84, 67.60), '55.59'),
    ('Linformer', 'LRA Table 1', SETTING_LRA, 'linformer',
     (35.70, 53.94, 52.27, 38.56, 76.34), '51.36'),
    ('Nyströmformer (3)', 'PoNet Table 1', SETTING_PONET, 'nystromformer',
     (37.15, 65.52, 79.56, 41.58, 70.94), '58.95'),
    ('FNet (PoNet authors\' re-implementation)', 'PoNet Table 1',
     SETTING_PONET, 'fnet', (37.40, 62.52, 76.94, 35.55, None),
     '53.10 (4 tasks)'),
    ('PoNet', 'PoNet Table 1', SETTING_PONET, 'ponet',
     (37.80, 69.82, 80.35, 46.88, 70.39), '61.05'),
)


# PoNet paper Table 1's rows that accuracy.md prints and compares runs with,
# under the names it prints: accuracy % per TABLE1_TASKS, and the average.
_TABLE1_NAMES = {
    'Transformer (Xiong et al. setting)': 'Transformer (3)',
    'FNet (re-implemented by the PoNet authors)':
        'FNet (PoNet authors\' re-implementation)',
    'PoNet': 'PoNet',
    'Transformer (Tay et al., original LRA)': 'Transformer (1)',
}
_BY_NAME = {row[0]: row for row in PUBLISHED_ROWS}
TABLE1 = {name: _BY_NAME[short][4] for name, short in _TABLE1_NAMES.items()}
TABLE1_AVERAGE = {name: _BY_NAME[short][5]
                  for name, short in _TABLE1_NAMES.items()}


def _compared_row(model):
  rows = [row for row in PUBLISHED_ROWS if row[3] == model]
  return next((row for row in rows if row[2] == SETTING_PONET), rows[0])


# The row each model's ListOps runs are compared with, in Table 1's order:
# the one in the ponet preset's setting where the paper has one.
LISTOPS_ROW = {row[3]: _compared_row(row[3]) for row in PUBLISHED_ROWS}


def table1_table() -> markdown.Table:
  """Every published row of PUBLISHED_ROWS, as printed."""
  rows = [[name, source, setting, f'`{model}`']
          + ['FAIL' if value is None else f'{value:.2f}' for value in values]
          + [average]
          for name, source, setting, model, values, average in PUBLISHED_ROWS]
  numbers = ['ListOps', 'Text', 'Retrieval', 'Image', 'Pathfinder', 'avg']
  header = ['published row', 'source', 'setting', '`--model`', *numbers]
  return markdown.Table(header, rows, '*Published test accuracy %, as '
                        'printed in the papers; not measured here.*',
                        published=tuple(numbers))

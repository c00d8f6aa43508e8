"""Retrieval: do two ACL Anthology papers cite each other (AAN, as in LRA).

Data: the LRA release files `tsv_data/new_aan_pairs.{train,eval,test}.tsv`
under `config.data_dir` (the unpacked `lra_release/`, or `tsv_data/` itself).
No header; tab-separated columns label, id1, id2, text1, text2, the label
possibly written as a float (`1.0`). Each document keeps its first 10,000
bytes, as in LRA, and then becomes byte ids (+1, 0 is padding) truncated to
`max_len`. One shared encoder reads both documents; the classifier sees
`[u, v, u*v, u-v]` or, in the `lra` preset, `[u, v]` (model.pair_features,
models.PairClassifier), so inputs are Nx2xL.
"""

import pathlib
import sys

import numpy as np

from lra_ponet import input_pipeline
from lra_ponet.errors import UserError
from lra_ponet.tasks import text

SPLIT_FILES = {'train': 'new_aan_pairs.train.tsv',
               'validation': 'new_aan_pairs.eval.tsv',
               'test': 'new_aan_pairs.test.tsv'}
COLUMNS = ('label', 'id1', 'id2', 'text1', 'text2')
# LRA's matching pipeline encodes `text[:10000]` before truncating to the
# task length, so the limit only matters for max_len > 10,000.
DOCUMENT_BYTES = 10_000

RELEASE_URL = ('https://storage.googleapis.com/long-range-arena/'
               'lra_release.gz')
INFO = input_pipeline.TaskInfo(name='retrieval', num_classes=2,
                               vocab_size=257, paired=True)
# Cache key of the tokenised arrays: the code that makes them.
RECIPE = input_pipeline.code_hash(sys.modules[__name__], text, input_pipeline)


def read_tsv(path, max_len: int, padded_len: int) -> input_pipeline.Split:
  """Reads one official AAN pairs TSV into inputs_Nx2xL and labels_N."""
  keep = min(DOCUMENT_BYTES, max_len)
  firsts, seconds, labels = [], [], []
  with open(path, 'rb') as lines:
    for line_number, line in enumerate(lines, start=1):
      line = line.rstrip(b'\r\n')
      if not line:
        continue
      where = f'{path}:{line_number}'
      fields = line.split(b'\t')
      if len(fields) != len(COLUMNS):
        raise UserError(f'{where}: expected {len(COLUMNS)} tab-separated '
                        f'fields ({", ".join(COLUMNS)}), found {len(fields)}')
      labels.append(_parse_label(fields[0], where))
      firsts.append(fields[3][:keep])
      seconds.append(fields[4][:keep])
  if not labels:
    raise UserError(f'{path}: no examples found')
  inputs_Nx2xL = np.stack([text.byte_ids(firsts, max_len, padded_len),
                           text.byte_ids(seconds, max_len, padded_len)],
                          axis=1)
  return input_pipeline.Split(inputs=inputs_Nx2xL,
                              labels=np.asarray(labels, np.int32))


def _parse_label(field: bytes, where: str) -> int:
  shown = field.decode('utf-8', 'replace')[:40]
  try:
    value = float(field)
  except ValueError:
    raise UserError(f'{where}: the label {shown!r} is not a number') from None
  if value not in (0.0, 1.0):
    raise UserError(f'{where}: the label {shown!r} is not 0 or 1')
  return int(value)


def _release_dir(data_dir: str) -> pathlib.Path:
  """Accepts the release root (`lra_release/`) or `tsv_data/` itself."""
  root = pathlib.Path(data_dir).expanduser()
  for candidate in (root / 'tsv_data', root):
    if (candidate / SPLIT_FILES['train']).exists():
      return candidate
  missing = root / 'tsv_data' / SPLIT_FILES['train']
  raise UserError(f'Retrieval data not found: expected {missing} (the '
                  'unpacked LRA release, lra_release.gz); run `python -m '
                  'lra_ponet.data prepare --task=retrieval` for where to get '
                  'it, then pass --config.data_dir=.../lra_release')


def load(config) -> input_pipeline.TaskData:
  if not config.data_dir:
    raise UserError('Retrieval needs the LRA release files '
                    'tsv_data/new_aan_pairs.{train,eval,test}.tsv: pass '
                    '--config.data_dir=.../lra_release (`python -m '
                    'lra_ponet.data prepare --task=retrieval` says where to '
                    'get it)')
  directory = _release_dir(config.data_dir)
  splits = input_pipeline.tsv_splits('retrieval', directory, SPLIT_FILES,
                                      read_tsv, config, recipe=RECIPE)
  return input_pipeline.TaskData(source=f'LRA release files {directory}',
                                 **splits)


def prepare(data_dir: str) -> str:
  """Only the LRA release has the data: where to get it (`contract.Task`)."""
  del data_dir
  raise UserError(
      f'retrieval: the data exists only in the LRA release: download '
      f'{RELEASE_URL} (about 8 GB), unpack it (`tar xzf lra_release.gz`) and '
      f'pass --config.data_dir=<dir>/lra_release, which must hold '
      'tsv_data/new_aan_pairs.train.tsv')

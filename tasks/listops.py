"""ListOps (Nangia and Bowman 2018, as in LRA): evaluate nested list operations.

Data: the LRA release files `listops-1000/basic_{train,val,test}.tsv` when
`config.data_dir` is set, otherwise the built-in generator (the official
algorithm, seeded by `config.data_seed`), cached under the suite's cache.
"""

import pathlib
import sys

import numpy as np

from lra_ponet import input_pipeline
from lra_ponet.errors import UserError
from tasks import listops_generator

# Fixed and sorted, unlike the official set-built vocabulary whose ids changed
# from run to run; id 0 is padding.
VOCAB = tuple(sorted([str(digit) for digit in range(10)]
                     + ['[MAX', '[MED', '[MIN', '[SM', 'X']))
TOKEN_IDS = {token: index + 1 for index, token in enumerate(VOCAB)}
HEADER = 'Source\tTarget'
SPLIT_FILES = {'train': 'basic_train.tsv', 'validation': 'basic_val.tsv',
               'test': 'basic_test.tsv'}

INFO = input_pipeline.TaskInfo(name='listops', num_classes=10,
                               vocab_size=len(VOCAB) + 1)
# Cache keys: the code of the tokenised arrays and of the generated files.
RECIPE = input_pipeline.code_hash(sys.modules[__name__], input_pipeline)
GENERATOR_RECIPE = input_pipeline.code_hash(listops_generator)


def tokenize(source: str) -> list[int]:
  """The LRA tokenisation: `]` becomes `X`, brackets `(` `)` are dropped."""
  words = source.replace(']', 'X').replace('(', '').replace(')', '').split()
  return [TOKEN_IDS[word] for word in words]


def read_tsv(path, max_len: int, padded_len: int) -> input_pipeline.Split:
  """Reads one official ListOps TSV (header `Source<TAB>Target`)."""
  sequences, labels = [], []
  lines = input_pipeline.text_lines(
      path, 'ListOps lines "Source<TAB>Target" of ASCII tokens')
  for line_number, line in lines:
    if line_number == 1:
      if line != HEADER:
        raise UserError(f'{path}:1: expected the header '
                        f'"Source<TAB>Target", found {line[:40]!r}')
      continue
    fields = line.split('\t')
    if fields == ['']:
      continue
    where = f'{path}:{line_number}'
    if len(fields) != 2:
      raise UserError(f'{where}: expected 2 tab-separated fields (Source, '
                      f'Target), found {len(fields)}')
    source, target = fields
    try:
      sequences.append(tokenize(source))
    except KeyError as error:
      raise UserError(f'{where}: unknown ListOps token {error.args[0]!r}; '
                      f'valid tokens: {" ".join(VOCAB)}') from None
    labels.append(_parse_label(target, where))
  if not labels:
    raise UserError(f'{path}: no examples found')
  return input_pipeline.Split(
      inputs=input_pipeline.pack(sequences, max_len, padded_len, np.uint8),
      labels=np.asarray(labels, np.int32))


def _parse_label(text: str, where: str) -> int:
  try:
    label = int(float(text))
  except (ValueError, OverflowError):
    raise UserError(f'{where}: the label {text!r} is not a number') from None
  if not 0 <= label < INFO.num_classes or label != float(text):
    raise UserError(f'{where}: the label {text!r} is outside the '
                    f'{INFO.num_classes} ListOps classes 0-9')
  return label


def _release_dir(data_dir: str) -> pathlib.Path:
  """Accepts the release root (`lra_release/`) or `listops-1000/` itself."""
  root = pathlib.Path(data_dir).expanduser()
  for candidate in (root / 'listops-1000', root):
    if (candidate / SPLIT_FILES['train']).exists():
      return candidate
  missing = root / 'listops-1000' / SPLIT_FILES['train']
  raise UserError(f'ListOps data not found: expected {missing} (the unpacked '
                  'LRA release); omit --config.data_dir to generate ListOps')


def generated_dir(seed: int) -> pathlib.Path:
  """Where generated splits live: keyed by seed and generator code."""
  return (input_pipeline.cache_dir() / 'listops_generated'
          / f'seed{seed}_{GENERATOR_RECIPE}')


def load(config) -> input_pipeline.TaskData:
  if config.data_dir:
    directory = _release_dir(config.data_dir)
    source = f'LRA release files {directory}'
  else:
    directory = generated_dir(config.data_seed)
    source = ('generated with the official LRA ListOps algorithm, seed '
              f'{config.data_seed}')
    if not all((directory / name).exists() for name in SPLIT_FILES.values()):
      print(f'Generating ListOps (seed {config.data_seed}) into {directory}')
      listops_generator.generate_listops(directory, seed=config.data_seed)
  splits = input_pipeline.tsv_splits('listops', directory, SPLIT_FILES,
                                      read_tsv, config, recipe=RECIPE)
  return input_pipeline.TaskData(source=source, **splits)

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
from lra_ponet.tasks import listops_generator

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


def _generate(config):
  """Generates (once, cached by seed and settings) and describes the data."""
  settings = config.generator
  try:
    limits = listops_generator.Limits(
        max_depth=settings.max_depth, max_args=settings.max_args,
        min_length=settings.min_length, max_length=settings.max_length)
  except ValueError as error:
    raise UserError(f'config.generator: {error}') from None
  sizes = (settings.num_train, settings.num_val, settings.num_test)
  if min(sizes) < 1:
    raise UserError(f'config.generator: num_train, num_val and num_test must '
                    f'be positive, got {sizes}')
  # Keyed by every setting and by the generator's code.
  directory = (input_pipeline.cache_dir() / 'listops_generated' /
               (f'seed{config.data_seed}_depth{limits.max_depth}_'
                f'args{limits.max_args}_length{limits.min_length}-'
                f'{limits.max_length}_sizes{"-".join(map(str, sizes))}_'
                f'{GENERATOR_RECIPE}'))
  source = ('generated with the official LRA ListOps algorithm, seed '
            f'{config.data_seed}')
  if limits != listops_generator.OFFICIAL:
    source += (f', not the official bounds: depth <= {limits.max_depth}, '
               f'2-{limits.max_args} arguments, {limits.min_length} < length'
               f' < {limits.max_length}')
  if sizes != (96_000, 2_000, 2_000):
    source += f', {sizes[0]:,} / {sizes[1]:,} / {sizes[2]:,} examples'
  if not all((directory / name).exists() for name in SPLIT_FILES.values()):
    print(f'Generating ListOps (seed {config.data_seed}) into {directory}')
    listops_generator.generate_listops(
        directory, seed=config.data_seed, num_train=sizes[0],
        num_val=sizes[1], num_test=sizes[2], limits=limits,
        # Worker processes take seconds to start: not worth it for a few.
        workers=None if sum(sizes) > 20_000 else 1)
  return directory, source


def load(config) -> input_pipeline.TaskData:
  if config.data_dir:
    directory = _release_dir(config.data_dir)
    source = f'LRA release files {directory}'
  else:
    directory, source = _generate(config)
  splits = input_pipeline.tsv_splits('listops', directory, SPLIT_FILES,
                                      read_tsv, config, recipe=RECIPE)
  return input_pipeline.TaskData(source=source, **splits)

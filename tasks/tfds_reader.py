"""Reads prepared tensorflow-datasets data (IMDb, CIFAR-10) without TensorFlow.

Preparing a data set needs internet and TensorFlow once
(`python -m lra_ponet.data prepare --task=text`, or `--task=image`), which
writes array_record files; reading them afterwards goes through
`builder.as_data_source`, which needs neither. tensorflow_datasets is imported
here, on demand, so tasks that do not use it never need it.
"""

import importlib
import pathlib

from lra_ponet import input_pipeline
from lra_ponet.errors import UserError


def prepare_command(task: str) -> str:
  return (f'`python -m lra_ponet.data prepare --task={task}` (needs internet '
          'and `pip install -e .[prepare]`)')


def prepare(task: str, name: str, data_dir: str) -> str:
  """Downloads tfds data set `name` as array_record files; says where."""
  tfds = import_tfds(task)
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise UserError('preparing tensorflow-datasets data needs TensorFlow '
                    'once: run `pip install -e .[prepare]`') from None
  builder = tfds.builder(name, data_dir=str(tfds_dir(data_dir)))
  builder.download_and_prepare(file_format='array_record')
  return (f'{task}: {name} written to {builder.data_dir}; run `python -m '
          f'lra_ponet.run --task={task}`'
          + (f' --config.data_dir={data_dir}' if data_dir else ''))


def tfds_dir(data_dir: str) -> pathlib.Path:
  """`data_dir` (config.data_dir), else the suite's tfds dir in its cache."""
  if data_dir:
    return pathlib.Path(data_dir).expanduser()
  return input_pipeline.cache_dir() / 'tensorflow_datasets'


def import_tfds(task: str):
  try:
    return importlib.import_module('tensorflow_datasets')
  except ImportError:
    raise UserError(f'the {task} task reads tensorflow-datasets data: run '
                    '`pip install -e .[tfds]`') from None


def open_splits(name: str, task: str, directory: pathlib.Path,
                splits: dict[str, str]):
  """Returns (builder, {split: random-access data source}).

  `splits` maps our split names to tfds split specs such as `train[:90%]`.
  """
  tfds = import_tfds(task)
  builder = tfds.builder(name, data_dir=str(directory))
  try:
    sources = {split: builder.as_data_source(split=spec)
               for split, spec in splits.items()}
  except NotImplementedError:
    # tfds says "not supported" both for a missing data set and for one
    # prepared as TFRecord, which needs TensorFlow to read.
    if not builder.is_prepared():
      raise UserError(
          f'{name} not found in tensorflow-datasets dir {directory} (expected '
          f'{builder.data_dir}); run {prepare_command(task)} or point '
          '--config.data_dir at a tensorflow-datasets data dir that holds '
          f'{name}') from None
    raise UserError(
        f'{name} in {builder.data_dir} was prepared as '
        f'{builder.info.file_format.value}, which needs TensorFlow to read; '
        f'run {prepare_command(task)} to write array_record files into '
        'another --config.data_dir') from None
  return builder, sources


def describe(builder) -> str:
  """Name, config, version and location, for TaskData.source."""
  return (f'tensorflow-datasets {builder.info.full_name} (array_record) in '
          f'{builder.data_dir}')


def files_key(builder) -> str:
  """Identity of the prepared files, for cache keys."""
  files = sorted(pathlib.Path(builder.data_dir).glob('*'))
  return ':'.join([builder.info.full_name]
                  + [input_pipeline.file_key(path) for path in files])

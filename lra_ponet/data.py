"""Prepares a task's data ahead of training.

  python -m lra_ponet.data prepare --task=text   # IMDb; internet, TensorFlow
  python -m lra_ponet.data prepare --task=image  # CIFAR-10; likewise
  python -m lra_ponet.data prepare --task=pathx  # generate and cache images

text and image: downloads the tensorflow-datasets data set and writes it as
array_record files (`download_and_prepare(file_format='array_record')`) into
`--data_dir`, by default `$LRA_PONET_CACHE/tensorflow_datasets`, where the
tasks look when `--config.data_dir` is empty. That needs internet and
TensorFlow (`pip install -e .[prepare]`) once; training reads the files
without TensorFlow. listops, pathfinder, pathx: generates the data of the
default config and caches it (a run would do the same on first use).
retrieval: only the LRA release has it; prints where to get it.
"""

import functools
import sys

from absl import app
from absl import flags

from lra_ponet import errors
from lra_ponet import tasks
from lra_ponet.errors import UserError
COMMANDS = ('prepare',)

FLAGS = flags.FLAGS


def define_flags():
  """Defined on running the command, so that importing has no effect."""
  flags.DEFINE_enum('task', None, list(tasks.TASKS),
                    'The task whose data to prepare.')
  flags.DEFINE_string('data_dir', '',
                      'text, image: tensorflow-datasets dir to write; '
                      'default $LRA_PONET_CACHE/tensorflow_datasets.')


def prepare(task: str, data_dir: str) -> str:
  """Prepares one task's data; returns a line saying what was done.

  A task module's own `prepare(data_dir)` where it has one (downloads, or
  where the data can be had); otherwise the default config's data is loaded
  once, which generates and caches it.
  """
  module = tasks.get_task(task)
  if hasattr(module, 'prepare'):
    return module.prepare(data_dir)
  data = module.load(tasks.get_config(task))
  return f'{task}: {data.source}'


def main(argv):
  del argv  # The command, prepare: errors.parse_flags allows no other.
  try:
    if not FLAGS.task:
      raise UserError(f'--task is required: one of {", ".join(tasks.TASKS)}')
    print(prepare(FLAGS.task, FLAGS.data_dir))
  except UserError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=functools.partial(errors.parse_flags,
                                               commands=COMMANDS))

r"""Trains and evaluates one model on one LRA task.

  python -m lra_ponet.run --task=listops --model=ponet
  python -m lra_ponet.run --task=listops --model=transformer --preset=lra \
      --config.train_steps=100 --workdir=runs/try

`--task` picks `configs/<task>.py`, `--preset` its setting (`ponet`: the PoNet
paper's; `lra`: the original LRA one), `--schedule` another learning-rate
schedule with its own optimiser fields; any field can then be overridden with
`--config.FIELD=VALUE`.

The run checkpoints into its workdir; the same command with the same
`--workdir` resumes an interrupted run. A workdir in use by another run is
refused (see `workdir_lock`). All local devices are used (the batch
is split over them); `--distributed` joins a multi-host run (see README).
"""

import datetime
import os
import pathlib
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lra_ponet import tasks
from lra_ponet.configs import base
from lra_ponet import config_lib
from lra_ponet import host_memory
from lra_ponet import models
from lra_ponet import stopping
from lra_ponet import train
from lra_ponet import workdir_lock
from lra_ponet.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_enum('task', 'listops', list(tasks.TASKS), 'The LRA task.')
flags.DEFINE_enum('model', 'ponet', list(models.MIXERS), 'The token mixer.')
flags.DEFINE_enum('preset', 'ponet', list(base.PRESETS),
                  'ponet: the PoNet paper setting; lra: the original LRA one.')
flags.DEFINE_enum('schedule', None, list(base.SCHEDULES),
                  'Learning-rate schedule; default: the preset\'s. Sets '
                  'config.schedule and exactly the optimiser fields it uses '
                  '(one_cycle: b1_max, b1_min; rsqrt, cosine: b1).')
flags.DEFINE_string('workdir', None,
                    'Output directory; default: a new folder under runs/. '
                    'A workdir holding checkpoints of the same config '
                    'resumes from the latest one.')
flags.DEFINE_bool('overwrite', False,
                  'Discard a previous run (checkpoints, metrics, results) in '
                  '--workdir and start afresh, even if its config differs.')
flags.DEFINE_bool('tensorboard', False,
                  'Also write the metrics as TensorBoard event files into '
                  '<workdir>/tensorboard (needs the tensorboard extra: pip '
                  'install -e ".[tensorboard]").')
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() first, for runs over '
                  'several hosts: automatic on TPU pods, Slurm and Open MPI; '
                  'elsewhere set JAX_COORDINATOR_ADDRESS (host:port of '
                  'process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID.')


def parse_flags(argv):
  """Reads --task and --preset first: they decide which config is loaded."""
  try:
    FLAGS(argv, known_only=True)
    config = tasks.get_config(FLAGS.task, FLAGS.preset, FLAGS.model)
    if FLAGS.schedule:
      base.set_schedule(config, FLAGS.schedule)
    config_lib.check_overrides(argv, config)
    config_flags.DEFINE_config_dict('config', config)
    return FLAGS(argv)
  except (UserError, flags.Error) as error:
    sys.exit(f'error: {error}')


def _env_int(name: str):
  """An integer environment variable, or None (auto-detect) when unset."""
  value = os.environ.get(name)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f'{name}={value!r} is not an integer') from None


def initialize_distributed():
  """Joins the processes of a multi-host run.

  JAX reads JAX_COORDINATOR_ADDRESS itself; on TPU pods, Slurm and Open MPI
  all three settings are detected when unset.
  """
  try:
    jax.distributed.initialize(num_processes=_env_int('JAX_NUM_PROCESSES'),
                               process_id=_env_int('JAX_PROCESS_ID'))
  except ValueError as error:  # E.g. no coordinator address outside a pod.
    raise UserError(f'--distributed: {str(error).rstrip(".")}; set '
                    'JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and '
                    'JAX_PROCESS_ID') from None


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Hides backend-probing notices.
  config = FLAGS.config
  try:
    host_memory.retain_freed_memory()
    if FLAGS.distributed:
      initialize_distributed()
    if jax.process_count() > 1 and not FLAGS.workdir:
      raise UserError('a run over several processes needs --workdir, on a '
                      'file system that every host sees')
    workdir = FLAGS.workdir or pathlib.Path('runs') / (
        f'{config.task}_{config.model.name}_'
        f'{datetime.datetime.now():%Y%m%d_%H%M%S}')
    with workdir_lock.hold(workdir):
      results = train.train_and_evaluate(config, workdir,
                                         overwrite=FLAGS.overwrite,
                                         tensorboard=FLAGS.tensorboard)
  except UserError as error:
    sys.exit(f'error: {error}')
  except stopping.Interrupted as interrupted:
    print(interrupted, file=sys.stderr)
    sys.exit(interrupted.exit_code)
  except KeyboardInterrupt:
    print('aborted without saving; the same command with the same --workdir '
          'resumes from the last checkpoint', file=sys.stderr)
    sys.exit(130)
  print(f'\n{train.summary(results, workdir)}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

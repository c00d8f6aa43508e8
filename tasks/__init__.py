"""Registry of the LRA tasks.

A task is a module following `contract.Task`; its registry line names it and
the module of its `get_config(preset)` (the suite's tasks keep their configs
in `configs/`; a task may name its own module for both). Modules are imported
on demand, so a task's optional dependencies load only when it runs.
"""

import importlib

from lra_ponet import models
from lra_ponet.errors import UserError

# name -> (task module, config module).
TASKS = {
    'listops': ('lra_ponet.tasks.listops', 'lra_ponet.configs.listops'),
    'text': ('lra_ponet.tasks.text', 'lra_ponet.configs.text'),
    'retrieval': ('lra_ponet.tasks.retrieval', 'lra_ponet.configs.retrieval'),
    'image': ('lra_ponet.tasks.image', 'lra_ponet.configs.image'),
    'pathfinder': ('lra_ponet.tasks.pathfinder',
                   'lra_ponet.configs.pathfinder'),
    'pathx': ('lra_ponet.tasks.pathx', 'lra_ponet.configs.pathx'),
}


def _check(name: str):
  if name not in TASKS:
    raise UserError(f'unknown task {name!r}; choose one of '
                    f'{", ".join(TASKS)}')


def get_task(name: str):
  """The task's module (`contract.Task`)."""
  _check(name)
  return importlib.import_module(TASKS[name][0])


def get_config(name: str, preset: str = 'ponet', model: str = 'ponet'):
  """The task's config of `preset`, for the token mixer `model`."""
  _check(name)
  config = importlib.import_module(TASKS[name][1]).get_config(preset)
  return models.configure_mixer(config, model)

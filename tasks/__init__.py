"""Registry of the LRA tasks.

A task is a module with `INFO` (an `input_pipeline.TaskInfo`) and
`load(config) -> input_pipeline.TaskData`, and a config file
`configs/<name>.py` with `get_config(preset)`. Modules are imported on demand,
so a task's optional dependencies load only when it runs.
"""

import importlib

from lra_ponet import models
from lra_ponet.errors import UserError

TASKS = {
    'listops': 'tasks.listops',
    'text': 'tasks.text',
    'retrieval': 'tasks.retrieval',
    'image': 'tasks.image',
    'pathfinder': 'tasks.pathfinder',
    'pathx': 'tasks.pathx',
}


def get_task(name: str):
  if name not in TASKS:
    raise UserError(f'unknown task {name!r}; choose one of '
                    f'{", ".join(TASKS)}')
  return importlib.import_module(TASKS[name])


def get_config(name: str, preset: str = 'ponet', model: str = 'ponet'):
  """The task's config of `preset`, for the token mixer `model`."""
  get_task(name)
  config = importlib.import_module(f'configs.{name}').get_config(preset)
  return models.configure_mixer(config, model)

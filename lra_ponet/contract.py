"""What a token mixer and a task provide: the two contracts of the suite.

A mixer is one module with one class that follows `TokenMixer`, registered
by one line in `models.MIXERS` (`name: 'module:Class'`); a task is one
module that follows `Task`, registered by one line in `tasks.TASKS`. Both
registries import a module only when its mixer or task is used, so a
mixer's or a task's own dependencies load only when it runs.

The optional hooks are looked up with `getattr`: a class or module that
does not need one leaves it out. `tests/test_extending.py` adds a mixer and
a task this way and runs them through training, the harness and the report.
"""

from typing import Any, Callable, Protocol

import ml_collections
from flax import nnx


class TokenMixer(Protocol):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, mask True at real tokens.

  Required:
  - `from_config(model_config, *, rngs, layer_index, **shared)`: the mixer
    of block `layer_index` (from 0). Every `nnx.Linear` it holds is then
    initialised by the model (`models.reinit_linears`, per
    `model.linear_init`), so it builds them with flax's defaults.
  - `masks_padding`: True when padding content never reaches real
    positions (the encoder's padding tests check it).
  Optional:
  - `default_config(config) -> dict`: the mixer's own hyperparameters,
    `config.model.<name>.FIELD`, present only when it is chosen (it may read
    the task config, e.g. `padded_len`).
  - `shared_params(model_config, length, *, rngs) -> dict`: parameters that
    all layers share, passed to every `from_config` as keyword arguments.
  - `pool_from_config(model_config, *, rngs, layer_index)`: a module
    `pool(x_BxLxD, mask_BxL) -> (shorter x, its mask)` run after the block.
  - `param_groups = {group: (attribute names)}`: parameters trained with
    `config.model.<name>.<group>.learning_rate` and `.weight_decay`.
  Random draws (hashing, random features) come from `rngs['mixer']`.
  """

  masks_padding: bool

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict, *,
                  rngs: nnx.Rngs, layer_index: int = 0,
                  **shared: Any) -> 'TokenMixer':
    ...

  def __call__(self, x_BxLxD, mask_BxL):
    ...


class Task(Protocol):
  """A task module: what its examples are, its configs and its data.

  Required:
  - `INFO`: an `input_pipeline.TaskInfo` (vocabulary, classes, paired).
  - `get_config(preset) -> ConfigDict`: the task's config of each preset
    (built with `configs.base.task_config`); the suite's own tasks keep it
    in `configs/<task>.py`, named by their registry line.
  - `load(config) -> input_pipeline.TaskData`: the three splits, from
    `config.data_dir` or generated.
  Optional:
  - `prepare(data_dir) -> str`: downloads or generates the data ahead of a
    run (`python -m lra_ponet.data prepare`); returns a line saying what
    was done. Without it, preparing loads the default config's data once.
  - `PUBLISHED = {(model, preset): (source, accuracy %)}`: published test
    accuracy shown beside a run of exactly that model and preset.
  """

  INFO: Any
  get_config: Callable[[str], ml_collections.ConfigDict]
  load: Callable[[ml_collections.ConfigDict], Any]

"""Every check of a run's config, in one pass before any data is loaded.

`validate_config` is that pass; the trainer, the evaluator and the benchmark
call it first, so a config that cannot run is one UserError line within
seconds.
"""

import jax
import jax.numpy as jnp

from lra_ponet import tasks
from lra_ponet.configs import base
from lra_ponet import models
from lra_ponet import steps
from lra_ponet.errors import UserError


def validate_config(config):
  """Refuses a config that cannot run, before any data is loaded.

  The run's sizes and schedule, the model's fields (models.validate_config,
  then the heads and dtype), the pixel tasks' padding rule, and last the
  whole training step traced abstractly (`_check_train_step`).
  """
  info = tasks.get_task(config.task).INFO
  if config.schedule not in base.SCHEDULES:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(base.SCHEDULES)}')
  models.validate_config(config, info)
  _check_sizes(config)
  _check_schedule(config)
  _check_heads_and_dtype(config.model)
  _check_padding(config, info)
  _check_train_step(config, info)


def _check_sizes(config):
  for field in ('max_len', 'padded_len', 'batch_size', 'eval_batch_size',
                'train_steps', 'eval_every', 'log_every', 'checkpoint_every',
                'checkpoint_keep'):
    if config[field] < 1:
      raise UserError(f'config.{field} must be positive, got {config[field]}')
  if config.padded_len < config.max_len:
    raise UserError(f'config.padded_len ({config.padded_len}) is shorter than '
                    f'config.max_len ({config.max_len}); set padded_len >= '
                    'max_len')


def _check_heads_and_dtype(model_config):
  # The suite's one check that the heads split dim evenly: no mixer repeats
  # it.
  if model_config.dim % model_config.num_heads:
    raise UserError(f'config.model.dim ({model_config.dim}) must be divisible '
                    f'by config.model.num_heads ({model_config.num_heads})')
  if model_config.dtype == 'float16':
    raise UserError('config.model.dtype float16 cannot be trained here: it '
                    'needs dynamic loss scaling, which this trainer does not '
                    'do; use bfloat16 or float32')
  if model_config.dtype not in ('float32', 'bfloat16'):
    raise UserError(f'config.model.dtype {model_config.dtype!r}: use float32 '
                    'or bfloat16')


def _check_padding(config, info):
  """A task without a padding id (pixels: 0 is black) cannot be padded."""
  if (not steps.masks_zero_tokens(config, info)
      and config.padded_len != config.max_len):
    raise UserError(f'the {config.task} task has no padding id (pixel 0 is '
                    f'black): set config.padded_len = config.max_len '
                    f'({config.max_len})')


def _check_schedule(config):
  schedule, warmup = config.schedule, config.warmup_steps
  for field, owners in base.SCHEDULE_FIELDS.items():
    if (field in config) != (schedule in owners):
      state = 'is not used by' if field in config else 'is needed by'
      raise UserError(
          f'config.{field} {state} the {schedule} schedule; pick a schedule '
          f'with --schedule={schedule}, which sets exactly its fields')
  if warmup < 0:
    raise UserError(f'config.warmup_steps must be >= 0, got {warmup}')
  if schedule != 'one_cycle' and warmup == 0:
    raise UserError(f'the {schedule} schedule needs config.warmup_steps >= 1 '
                    '(LRA\'s linear warm-up divides by it: 0 gives a NaN '
                    'learning rate at step 0)')
  # The LRA schedules accept a warm-up longer than training (LRA's own
  # retrieval config has 8,000 of 5,000); the one-cycle schedule does not.
  if schedule == 'one_cycle' and (warmup == 1
                                  or warmup > config.train_steps):
    raise UserError(f'config.warmup_steps ({warmup}) must be 0 or 2 .. '
                    f'config.train_steps ({config.train_steps}) under '
                    'one_cycle (OneCycleLR divides by warmup_steps - 1)')


def _check_train_step(config, info):
  """Traces one whole training step abstractly (no arrays: seconds).

  The trainer's own step (steps.create_train_state, steps.make_train_step)
  on a batch of the run's shape: the model is built, the loss and its
  gradient taken, the optimizer updated and the metrics read back from its
  state. A mixer argument or optimizer setting that cannot work fails here,
  before any data is loaded or generated.
  """
  mask_zero_tokens = steps.masks_zero_tokens(config, info)

  def train_step(batch):
    graphdef, _, state = steps.create_train_state(config, info)
    return steps.make_train_step(graphdef, mask_zero_tokens)(state, batch)

  try:
    jax.eval_shape(train_step, _batch_shape(config, info))
  except _VALUE_ERRORS + _MISMATCH_ERRORS as error:
    message = (str(error).strip().splitlines() or [''])[0]
    if isinstance(error, _MISMATCH_ERRORS):  # "'name'" alone says nothing.
      message = f'{type(error).__name__} {message}'
    # The cause stays chained for debugging; the CLIs print this line only.
    raise UserError(f'config.model ({config.model.name}): '
                    f'{message}') from error


# What a bad setting makes the traced code raise: shapes and values.
_VALUE_ERRORS = (ValueError, TypeError, ZeroDivisionError)
# A part of the step that does not fit another under some setting (a state
# without the attribute or key the step reads), which a run would otherwise
# hit only at its first step.
_MISMATCH_ERRORS = (AttributeError, KeyError, IndexError)


def _batch_shape(config, info):
  """A training batch's shapes; the step casts the token ids to int32."""
  length = (2, config.padded_len) if info.paired else (config.padded_len,)
  return {'inputs': jax.ShapeDtypeStruct((config.batch_size, *length),
                                         jnp.int32),
          'label': jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}

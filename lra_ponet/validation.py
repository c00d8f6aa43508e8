"""Checks of a run's config, before any data is loaded or compiled."""

import jax
import jax.numpy as jnp
from flax import nnx

import tasks
from configs import base
from lra_ponet import models
from lra_ponet.errors import UserError


def validate_config(config):
  """Catches impossible settings before any data is loaded or compiled."""
  if config.schedule not in base.SCHEDULES:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(base.SCHEDULES)}')
  models.validate_config(config, tasks.get_task(config.task).INFO)
  for field in ('max_len', 'padded_len', 'batch_size', 'eval_batch_size',
                'train_steps', 'eval_every', 'log_every', 'checkpoint_every',
                'checkpoint_keep'):
    if config[field] < 1:
      raise UserError(f'config.{field} must be positive, got {config[field]}')
  if config.padded_len < config.max_len:
    raise UserError(f'config.padded_len ({config.padded_len}) is shorter than '
                    f'config.max_len ({config.max_len}); set padded_len >= '
                    'max_len')
  _check_schedule(config)
  if config.model.dim % config.model.num_heads:
    raise UserError(f'config.model.dim ({config.model.dim}) must be divisible '
                    f'by config.model.num_heads ({config.model.num_heads})')
  if config.model.dtype == 'float16':
    raise UserError('config.model.dtype float16 cannot be trained here: it '
                    'needs dynamic loss scaling, which this trainer does not '
                    'do; use bfloat16 or float32')
  if config.model.dtype not in ('float32', 'bfloat16'):
    raise UserError(f'config.model.dtype {config.model.dtype!r}: use float32 '
                    'or bfloat16')
  _check_model(config, tasks.get_task(config.task).INFO)


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


def _check_model(config, info):
  """Builds the model and one forward pass abstractly (no arrays, seconds).

  A bad mixer argument fails here, before any data is loaded or generated.
  """
  def forward():
    model = models.build_model(
        config.model, info, config.padded_len,
        rngs=nnx.Rngs(params=0, dropout=1, mixer=2))
    shape = (1, 2, config.padded_len) if info.paired else (
        1, config.padded_len)
    tokens = jnp.ones(shape, jnp.int32)
    return model(tokens, tokens > 0)

  try:
    jax.eval_shape(forward)
  except (ValueError, TypeError, ZeroDivisionError) as error:
    message = (str(error).strip().splitlines() or [''])[0]
    raise UserError(f'config.model ({config.model.name}): '
                    f'{message}') from None

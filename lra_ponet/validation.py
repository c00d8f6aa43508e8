"""Every check of a run's config, in one pass before any data is loaded.

`validate_config` is that pass; the trainer, the evaluator and the benchmark
call it first, so a config that cannot run is one UserError line within
seconds.
"""

import jax
import jax.numpy as jnp

from lra_ponet import dropout
from lra_ponet import tasks
from lra_ponet.configs import base
from lra_ponet import models
from lra_ponet import steps
from lra_ponet.errors import UserError


def validate_config(config, trace_step: bool = True):
  """Refuses a config that cannot run, before any data is loaded.

  The run's sizes and schedule, the shared model fields, the mixer's name,
  the heads and dtype, the pixel tasks' padding and attention-mask rules,
  and last the whole training step traced abstractly (`_check_train_step`),
  which is where each mixer's own fields are checked, by its constructor.
  `trace_step=False` leaves the trace to a caller that traces the same step
  itself (the harness's export, which reports its errors per cell).
  """
  info = tasks.get_task(config.task).INFO
  if config.schedule not in base.SCHEDULES:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(base.SCHEDULES)}')
  check_model_fields(config.model)
  models.mixer_class(config.model.name)
  _check_sizes(config)
  _check_schedule(config)
  _check_heads_and_dtype(config.model)
  _check_padding(config, info)
  _check_attention_mask(config, info)
  if trace_step:
    _check_train_step(config, info)


def _choice(model_config, field, choices):
  value = model_config[field]
  if value not in choices:
    raise UserError(f'unknown model.{field} {value!r}; use one of '
                    f'{", ".join(map(str, choices))}')


def check_model_fields(model_config):
  """Refuses unknown choices and impossible sizes of the shared fields."""
  _choice(model_config, 'pooling', models.POOLINGS)
  _choice(model_config, 'mean_over', models.MEAN_OVER)
  _choice(model_config, 'linear_init', models.LINEAR_INITS)
  _choice(model_config, 'position_embedding', models.POSITION_EMBEDDINGS)
  _choice(model_config, 'head', models.HEADS)
  _choice(model_config, 'pair_features', models.PAIR_FEATURES)
  _choice(model_config, 'dropout_mask_bits', dropout.MASK_BITS)
  for field in ('dim', 'num_heads', 'mlp_dim'):
    if model_config[field] < 1:
      raise UserError(f'model.{field} must be positive, got '
                      f'{model_config[field]}')
  if not 0 < model_config.layer_norm_epsilon < 1:
    raise UserError('model.layer_norm_epsilon must be in (0, 1), got '
                    f'{model_config.layer_norm_epsilon}')
  if model_config.embedding_init_std <= 0:
    raise UserError('model.embedding_init_std must be positive, got '
                    f'{model_config.embedding_init_std}')


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


def _check_attention_mask(config, info):
  """cuDNN's fused attention takes per-example key lengths: a prefix."""
  black_pixels_masked = (config.official_pixel_quirks
                         and not info.zero_is_padding)
  if (config.model.name == 'transformer'
      and config.model.transformer.attention == 'cudnn'
      and black_pixels_masked):
    raise UserError(
        'attention=cudnn masks only padding at the end, but '
        f'official_pixel_quirks masks black pixels anywhere in {config.task} '
        'images; use --config.model.transformer.attention=xla or '
        '--config.official_pixel_quirks=False')


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
    jax.eval_shape(train_step, batch_shape(config, info))
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


def batch_shape(config, info):
  """A training batch's shapes; the step casts the token ids to int32."""
  length = (2, config.padded_len) if info.paired else (config.padded_len,)
  return {'inputs': jax.ShapeDtypeStruct((config.batch_size, *length),
                                         jnp.int32),
          'label': jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}

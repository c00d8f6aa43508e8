"""Settings shared by every task config: the two presets of the suite.

`ponet` is the PoNet paper's LRA setting (Tan et al. 2022, Sec. 4.2 and the
official lxchtan/PoNet LRA code): 2 layers, dim 64, 2 heads, FFN 128, mean
pooling, AdamW 1e-4 with a one-cycle schedule. `lra` is the original Long Range
Arena Transformer setting of each task (Tay et al. 2021).
"""

import ml_collections

from lra_ponet.errors import UserError

PRESETS = ('ponet', 'lra')
SCHEDULES = ('one_cycle', 'rsqrt', 'cosine')
# Optimiser fields that only some schedules use -> those schedules. A config
# holds exactly the fields of its schedule (see set_schedule).
SCHEDULE_FIELDS = {
    'b1': ('rsqrt', 'cosine'),  # Adam's constant beta1.
    # OneCycleLR's momentum cycle: beta1 falls from b1_max to b1_min during
    # warm-up and rises back to b1_max at the last step.
    'b1_max': ('one_cycle',),
    'b1_min': ('one_cycle',),
}
SCHEDULE_DEFAULTS = {'b1': 0.9, 'b1_max': 0.95, 'b1_min': 0.85}


def model_config(*, num_layers, dim, num_heads, mlp_dim, segment_num,
                 pooling):
  return ml_collections.ConfigDict(dict(
      name='ponet',  # Set from --model.
      num_layers=num_layers,
      dim=dim,
      num_heads=num_heads,
      mlp_dim=mlp_dim,
      dropout=0.1,
      attention_dropout=0.1,  # Transformer only.
      attention='xla',  # Transformer only: 'xla' or 'cudnn'.
      segment_num=segment_num,  # PoNet only.
      local_window=3,  # PoNet only.
      pooling=pooling,  # 'mean' or 'cls'.
      mean_over='padded_length',  # Or 'real_tokens'.
      dtype='float32',  # Compute dtype; parameters stay float32.
  ))


def task_config(*, task, preset, max_len, padded_len, batch_size,
                train_steps, warmup_steps, eval_every, model):
  """Fields every task shares; the optimiser fields follow the preset."""
  if preset not in PRESETS:
    raise UserError(f'unknown preset {preset!r}; use one of '
                    f'{", ".join(PRESETS)}')
  config = ml_collections.ConfigDict()
  config.task = task
  config.preset = preset
  config.data_dir = ''  # Empty: the suite's own source of the task's data.
  config.data_seed = 0  # Seed of generated data (ListOps, Pathfinder).
  config.max_len = max_len  # Longer inputs are truncated to this many tokens.
  config.padded_len = padded_len  # The length L the model sees.
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.train_steps = train_steps
  config.eval_every = eval_every
  # Steps between metric fetches (progress bar, NaN/inf check).
  config.log_every = 10
  # Checkpoints: every checkpoint_every steps (and at the end or on a stop
  # request); the newest checkpoint_keep are kept.
  config.checkpoint_every = 1000
  config.checkpoint_keep = 3
  config.warmup_steps = warmup_steps
  config.seed = 0
  config.grad_clip_norm = 0.0  # 0 disables clipping.
  config.official_pixel_quirks = False  # Pixel tasks: see tasks/image.py.
  config.model = model
  if preset == 'ponet':
    config.learning_rate = 1e-4
    config.weight_decay = 0.0
    config.b2, config.eps = 0.999, 1e-6
    return set_schedule(config, 'one_cycle')
  config.learning_rate = 0.05
  config.weight_decay = 0.1
  config.b2, config.eps = 0.98, 1e-9
  return set_schedule(config, 'rsqrt')


def set_schedule(config, schedule):
  """Sets config.schedule and exactly the optimiser fields it uses.

  Fields of other schedules are removed; the schedule's own get their
  defaults unless already present.
  """
  if schedule not in SCHEDULES:
    raise UserError(f'unknown schedule {schedule!r}; use one of '
                    f'{", ".join(SCHEDULES)}')
  config.schedule = schedule
  for field, owners in SCHEDULE_FIELDS.items():
    if schedule not in owners and field in config:
      del config[field]
    elif schedule in owners and field not in config:
      config[field] = SCHEDULE_DEFAULTS[field]
  return config


def ponet_model(segment_num):
  return model_config(num_layers=2, dim=64, num_heads=2, mlp_dim=128,
                      segment_num=segment_num, pooling='mean')

"""Settings shared by every task config: the two presets of the suite.

`ponet` is the PoNet paper's LRA setting (Tan et al. 2022, Sec. 4.2 and the
official lxchtan/PoNet LRA code): 2 layers, dim 64, 2 heads, FFN 128, mean
pooling, AdamW 1e-4 with a one-cycle schedule, PyTorch's LayerNorm epsilon
(1e-5) and Linear initialisation (weights and biases uniform in
+-1/sqrt(fan_in)), embeddings N(0, 0.02). Differences from that code that
remain on every task:
- It trains under float16 autocast with loss scaling (torch.cuda.amp):
  every Linear layer, the mixers' projections included, computes in
  float16, while the LayerNorms, the loss and the mixers' cores (PoNet's
  pooling and fusion, the softmax attention, FNet's transform: autocast
  is off around them, `attention.py` L84-103) stay float32. Here the
  default is float32 throughout.
- Its validation pass reads the next `num_eval_steps` batches of an endless
  iterator that reshuffles the validation set at each pass over it (the
  LRADataset it imports, mlpen/Nystromformer `LRA/code/dataset.py`; ListOps
  62 x 32 = 1,984 of 2,000 examples), and its test pass drops the last
  partial batch of a shuffled test set (ListOps 1,984 of 2,000); here every
  validation and test example counts, every time.
- Its seed was not fixed; random draws differ anyway (another RNG).

`lra` is the Transformer config of each task in the official LRA code
(google-research/long-range-arena @cd31e5c, `lra_benchmarks/*/configs/
transformer_base.py`): its sizes, batch, steps, schedule, dropout, position
embeddings, initialisers, classifier heads and black-pixel mask (see
`lra_model`). Differences that remain on every task:
- Test accuracy is that of the best-validation parameters; LRA's code tests
  the parameters of its last checkpoint.
- Data order: seeded permutations per epoch; LRA's tf.data shuffled unseeded
  (a 256-element buffer after batching for Image and Pathfinder).
- Token ids: the suite's vocabularies (sorted ListOps tokens, bytes + 1,
  pixels) where LRA's encoders numbered tokens their own way; with N(0, 1)
  embeddings only the labelling of rows differs.
- Random draws of initialisation and dropout differ (another RNG).
Each task config lists its own remaining differences.
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
  """The model fields; their defaults are the official PoNet code's.

  Fields of one mixer live under `model.<mixer>` (see the mixer's
  `default_config`). A task sets two mixers' fields here, PoNet's
  `segment_num` and the Transformer's attention biases (and LRA's
  `qkv_dim`); `models.configure_mixer` keeps those of the chosen mixer and
  drops the other's.
  """
  model = ml_collections.ConfigDict(dict(
      name='ponet',  # Set from --model.
      num_layers=num_layers,
      dim=dim,
      num_heads=num_heads,
      mlp_dim=mlp_dim,
      dropout=0.1,
      # Dropout on the attention weights, in the mixers that apply it there.
      attention_dropout=0.1,
      # Random bits per dropout mask element: 16 (lra_ponet.dropout, four
      # elements per Threefry hash) or 32 (nnx.Dropout's); runs saved
      # before this field existed read as 32.
      dropout_mask_bits=16,
      pooling=pooling,  # 'mean', 'cls' or 'first' (models.POOLINGS).
      mean_over='padded_length',  # Or 'real_tokens'.
      dtype='float32',  # Compute dtype; parameters stay float32.
      # PyTorch's LayerNorm epsilon (flax's default is 1e-6).
      layer_norm_epsilon=1e-5,
      linear_init='pytorch',  # models.LINEAR_INITS.
      embedding_init_std=0.02,  # Token embedding N(0, std).
      position_embedding='learned',  # Or 'sinusoidal'.
      gelu_approximate=False,  # The MLP's GELU: exact, or the tanh form.
      head='ponet',  # models.HEADS.
      pair_features='nli',  # Paired tasks: [u, v, u*v, u-v]; or 'concat'.
  ))
  model.ponet = ml_collections.ConfigDict(dict(segment_num=segment_num))
  model.transformer = ml_collections.ConfigDict(dict(attention_bias=True))
  return model


def lra_model(*, num_layers, dim, num_heads, mlp_dim, segment_num, pooling,
              position_embedding='sinusoidal', qkv_dim=None, dropout=0.1,
              attention_dropout=0.1):
  """The official LRA Transformer's model fields (lra_benchmarks @cd31e5c).

  Sinusoidal positions unless the task's config learns them, token
  embeddings N(0, 1), a zero CLS vector, flax's LayerNorm epsilon (1e-6),
  Xavier-uniform kernels with N(0, 1e-6) biases in the encoder and no
  biases in the attention, the tanh GELU of jax.nn.gelu, the Dense(mlp_dim)
  classifier heads with flax's default initialisation, and `[u, v]` pair
  features.
  """
  model = model_config(num_layers=num_layers, dim=dim, num_heads=num_heads,
                       mlp_dim=mlp_dim, segment_num=segment_num,
                       pooling=pooling)
  model.update(dict(
      dropout=dropout, attention_dropout=attention_dropout,
      layer_norm_epsilon=1e-6, linear_init='lra', embedding_init_std=1.0,
      position_embedding=position_embedding, gelu_approximate=True,
      head='lra', pair_features='concat'))
  model.transformer.attention_bias = False
  if qkv_dim is not None:
    model.transformer.qkv_dim = qkv_dim
  return model


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

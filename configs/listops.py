"""ListOps: nested list operations, 10 classes, up to 2,000 tokens.

Command:
  python -m lra_ponet.run --task=listops --model=ponet
  python -m lra_ponet.run --task=listops --model=ponet --preset=lra

Default data: the built-in generator (the official LRA algorithm, seed
`data_seed`, with the official bounds and split sizes in `config.generator`);
`--config.data_dir=.../lra_release` reads the release TSVs instead.
Expected test accuracy of the `ponet` preset (PoNet paper Table 1, 5,000
steps): PoNet 37.80, Transformer 37.10, FNet 37.40. Batch 32, evaluation on
validation every 50 steps; the best-validation parameters are tested.
"""

import ml_collections

from configs import base


def get_config(preset='ponet'):
  config = _preset_config(preset)
  # The generator's bounds and split sizes (official values); used when
  # data_dir is empty. Smaller ones give short, shallow expressions.
  config.generator = ml_collections.ConfigDict(dict(
      max_depth=10, max_args=10, min_length=500, max_length=2000,
      num_train=96_000, num_val=2_000, num_test=2_000))
  return config


def _preset_config(preset):
  if preset == 'lra':
    return base.task_config(
        task='listops', preset=preset, max_len=2000, padded_len=2000,
        batch_size=32, train_steps=5000, warmup_steps=1000, eval_every=50,
        model=base.model_config(num_layers=4, dim=512, num_heads=8,
                                mlp_dim=1024, segment_num=64,
                                pooling='cls'))
  return base.task_config(
      task='listops', preset=preset, max_len=2000, padded_len=2048,
      batch_size=32, train_steps=5000, warmup_steps=1000, eval_every=50,
      model=base.ponet_model(segment_num=64))

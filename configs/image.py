"""Image: grayscale CIFAR-10, 10 classes, 1,024 pixel tokens.

Commands:
  python -m lra_ponet.data prepare --task=image  # Once: internet, TensorFlow.
  python -m lra_ponet.run --task=image --model=ponet
  python -m lra_ponet.run --task=image --model=ponet --preset=lra

Data: tensorflow-datasets `cifar10` from `$LRA_PONET_CACHE/
tensorflow_datasets`, or from the tensorflow-datasets dir given as
`--config.data_dir`; train[:90%] / train[90%:] / test, gray as LRA.

Pixel 0 (black) is a real token by default. `--config.official_pixel_quirks
=True` reproduces the official PoNet code, which masked black pixels as
padding; its other quirk, mean pooling divided by the padded length, is the
default `model.mean_over='padded_length'` (`'real_tokens'` divides by the
unmasked count). results.json records `mask_zero_tokens` and `mean_over`.

Expected test accuracy of the `ponet` preset (published, PoNet paper
Table 1, 35,000 steps, run with the official code and so with black pixels
masked): PoNet 46.88, Transformer 38.20, FNet 35.55. Batch 256, validation
every 175 steps; the best-validation parameters are tested.

`lra` preset: LRA's `image/configs/cifar10/transformer_base.py` (1 layer,
dim 128, 8 heads, qkv_dim 64, MLP 128, CLS pooling, learned positions
N(0, 0.02) as its `learn_pos_emb=True`, dropout 0.3, attention dropout 0.2,
batch 256, 35,000 steps, lr 5e-4 with warm-up 175 then cosine, weight decay
0, validation every 175 steps) with black pixels masked, as LRA's mask
`inputs > 0` does (official_pixel_quirks=True); published 42.44 (Tay et
al.). Besides the differences of every task (configs/base.py): LRA's CLS
token took the mask of the first pixel (a black first pixel masked the CLS
too), here the CLS token is always attended to; LRA's evaluation dropped
the last partial batch (validation 4,864 of 5,000 images, test 9,984 of
10,000), here every image counts.
"""

from lra_ponet.configs import base

SEGMENT_NUM = 32


def get_config(preset='ponet'):
  if preset == 'lra':
    config = base.task_config(
        task='image', preset=preset, max_len=1024, padded_len=1024,
        batch_size=256, train_steps=35000, warmup_steps=175, eval_every=175,
        model=base.lra_model(num_layers=1, dim=128, num_heads=8, mlp_dim=128,
                             segment_num=SEGMENT_NUM, pooling='cls',
                             position_embedding='learned', qkv_dim=64,
                             dropout=0.3, attention_dropout=0.2))
    config.schedule = 'cosine'
    config.learning_rate = 5e-4
    config.weight_decay = 0.0
    config.official_pixel_quirks = True
    return config
  return base.task_config(
      task='image', preset=preset, max_len=1024, padded_len=1024,
      batch_size=256, train_steps=35000, warmup_steps=175, eval_every=175,
      model=base.ponet_model(segment_num=SEGMENT_NUM))

r"""Path-X: Pathfinder at 128x128 = 16,384 tokens, 2 classes.

Commands:
  python -m lra_ponet.run --task=pathx --model=ponet
  python -m lra_ponet.run --task=pathx --model=ponet --preset=lra
  python -m lra_ponet.run --task=pathx --model=ponet \
      --config.data_dir=.../lra_release

The PoNet paper has no Path-X row: the `ponet` preset is its Pathfinder
setting (batch 256, 62,400 steps, warm-up 312, validation every 312 steps)
at 16,384 tokens. segment_num stays 1 (a global max-pooling), the paper's
Pathfinder choice: whether the markers are connected is a property of the
whole image, one segment keeps the pooling O(L), and the task then differs
from Pathfinder only in its resolution.

Data: without `data_dir`, `generated_examples` = 200,000 images drawn by the
built-in generator (seed `data_seed`): the size of the release split, so the
160,000 training images match LRA's. Drawing them takes about 11 minutes on 2
cores, once; they are cached (3.3 GB). They follow the LRA recipe but are not
the release images. With `data_dir`, the release's
`pathfinder128/curv_contour_length_14`. `split_order` and the pixel-0
switch `official_pixel_quirks` are Pathfinder's (configs/pathfinder.py).

Expected test accuracy: no PoNet number is published. The LRA paper reports
every model of its time at chance (FAIL), the original Transformer included
(`lra` preset: LRA's `image/configs/pathfinder128/transformer_base.py`, 1
layer, dim 32, 2 heads, qkv_dim 16, MLP 32, mean pooling, learned positions
as its `learn_pos_emb=True`, dropout 0.1, batch 64, 500,000 steps, lr 1e-3
with warm-up 2,500 then cosine, gradient clipping 1.0, black pixels masked
as its mask `inputs > 0` does; it differs as the Pathfinder `lra` preset
does, configs/pathfinder.py); later state-space models reach 96-99
(published: S4 96.35, S5 98.58, Mega 97.98).
"""

from lra_ponet.configs import base
from lra_ponet.configs import pathfinder

SEGMENT_NUM = pathfinder.SEGMENT_NUM


def get_config(preset='ponet'):
  if preset == 'lra':
    config = base.task_config(
        task='pathx', preset=preset, max_len=16384, padded_len=16384,
        batch_size=64, train_steps=500000, warmup_steps=2500,
        eval_every=2500,
        model=base.lra_model(num_layers=1, dim=32, num_heads=2, mlp_dim=32,
                             segment_num=SEGMENT_NUM, pooling='mean',
                             position_embedding='learned', qkv_dim=16))
    config.schedule = 'cosine'
    config.learning_rate = 1e-3
    config.weight_decay = 0.0
    config.official_pixel_quirks = True
    config.grad_clip_norm = 1.0  # LRA's released Path-X config clips.
  else:
    config = base.task_config(
        task='pathx', preset=preset, max_len=16384, padded_len=16384,
        batch_size=256, train_steps=62400, warmup_steps=312, eval_every=312,
        model=base.ponet_model(segment_num=SEGMENT_NUM))
  return pathfinder.add_image_fields(config, resolution=128,
                                     generated_examples=200000)

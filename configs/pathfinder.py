r"""Pathfinder: are two markers connected? 2 classes, 32x32 = 1,024 tokens.

Commands:
  python -m lra_ponet.run --task=pathfinder --model=ponet
  python -m lra_ponet.run --task=pathfinder --model=ponet --preset=lra
  python -m lra_ponet.run --task=pathfinder --model=ponet \
      --config.data_dir=.../lra_release

Data: without `data_dir`, 200,000 images drawn by the built-in generator
(`generated_examples`, seed `data_seed`; about 6 minutes on 2 cores once,
then cached); they follow the LRA recipe but are not the release images, so
their accuracies are not the published ones. With `data_dir`, the release's
`pathfinder32/curv_contour_length_14`. `resolution` picks 64 or 256 too
(generated, or the release's pathfinder64/256); max_len and padded_len follow
it (resolution^2) unless set. `split_order`: 'metadata_order' (80/10/10 in
the order the metadata lists the images; not LRA's split, which took the
order of its tensorflow-datasets build, nor PoNet's, which shuffled) or
'random42' (the seed-42 random split of later papers).

Pixel 0 (black) is a real token by default. `--config.official_pixel_quirks
=True` reproduces the official PoNet code, which masked black pixels as
padding (most of a Pathfinder image is black); its other quirk, mean pooling
divided by the padded length, is the default `model.mean_over=
'padded_length'`. results.json records `mask_zero_tokens` and `mean_over`.

Expected test accuracy of the `ponet` preset on the release data (published,
PoNet paper Table 1, 62,400 steps, official code with black pixels masked):
PoNet 70.39, Transformer 74.16, FNet FAIL (chance). Batch 256, validation
every 312 steps; the best-validation parameters are tested.
`lra` preset: LRA's `image/configs/pathfinder32/transformer_base.py` (4
layers, dim 32, 4 heads, qkv_dim 16, MLP 32, mean pooling, sinusoidal
positions, dropout 0.2, attention dropout 0.1, batch 512, 62,400 steps, lr
1e-3 with warm-up 312 then cosine, weight decay 0, validation every 312
steps) with black pixels masked, as LRA's mask `inputs > 0` does
(official_pixel_quirks=True); published 71.40 (Tay et al.). Besides the
differences of every task (configs/base.py): LRA's mean pooling averaged
the outputs at masked pixels too (not zeroed, their attention uniform over
all pixels), here they are zeroed; the split (see split_order); LRA's
evaluation dropped the last partial batch, here every image counts.
"""

from lra_ponet.configs import base

SEGMENT_NUM = 1  # The paper's: one segment, a global max-pooling.


def add_image_fields(config, *, resolution, generated_examples):
  """Fields of the Pathfinder family; lengths follow the resolution."""
  config.resolution = resolution  # Image side; tokens = resolution^2.
  config.max_len = config.get_ref('resolution') * config.get_ref('resolution')
  config.padded_len = (config.get_ref('resolution')
                       * config.get_ref('resolution'))
  config.generated_examples = generated_examples  # Without data_dir.
  config.split_order = 'metadata_order'  # Or 'random42'.
  return config


def get_config(preset='ponet'):
  if preset == 'lra':
    config = base.task_config(
        task='pathfinder', preset=preset, max_len=1024, padded_len=1024,
        batch_size=512, train_steps=62400, warmup_steps=312, eval_every=312,
        model=base.lra_model(num_layers=4, dim=32, num_heads=4, mlp_dim=32,
                             segment_num=SEGMENT_NUM, pooling='mean',
                             qkv_dim=16, dropout=0.2))
    config.schedule = 'cosine'
    config.learning_rate = 1e-3
    config.weight_decay = 0.0
    config.official_pixel_quirks = True
  else:
    config = base.task_config(
        task='pathfinder', preset=preset, max_len=1024, padded_len=1024,
        batch_size=256, train_steps=62400, warmup_steps=312, eval_every=312,
        model=base.ponet_model(segment_num=SEGMENT_NUM))
  return add_image_fields(config, resolution=32, generated_examples=200000)

"""Text: byte-level IMDb sentiment, 2 classes, 4,000 bytes (padded to 4,096).

Commands:
  python -m lra_ponet.data prepare --task=text  # Once: internet, TensorFlow.
  python -m lra_ponet.run --task=text --model=ponet
  python -m lra_ponet.run --task=text --model=ponet --preset=lra

Data: tensorflow-datasets `imdb_reviews` from `$LRA_PONET_CACHE/
tensorflow_datasets`, or from the tensorflow-datasets dir given as
`--config.data_dir`. LRA reports the best of lengths 1K-4K; pick one with
e.g. `--config.max_len=1000 --config.padded_len=1024`. IMDb has no
validation split: as in LRA the test split is used for validation too, so
the test accuracy below is that of parameters selected on the test split
(results.json says so in data_notes).

PoNet's segment_num follows padded_len (segment_num = L, so segments are
L // segment_num + 1 = 2 tokens long, the paper's setting at L = 4,096) at
any length, unless set with --config.model.ponet.segment_num.

Expected test accuracy of the `ponet` preset (published, PoNet paper
Table 1, 20,000 steps): PoNet 69.82, Transformer 65.02, FNet 62.52. Batch
32, validation every 500 steps; the best-validation parameters are tested.

`lra` preset: LRA's `text_classification/configs/transformer_base.py` (4
layers, dim 256, 4 heads, MLP 1,024, CLS pooling, sinusoidal positions,
batch 32, 20,000 steps, lr 0.05 with warm-up 8,000 then rsqrt, weight decay
0.1, validation every 100 steps) at its configured length of 1,000 bytes;
published 64.27 (Tay et al., the best of the lengths they tried). Besides
the differences of every task (configs/base.py): LRA's byte encoder
(tfds ByteTextEncoder) numbers bytes differently from the suite's bytes + 1.
"""

from lra_ponet.configs import base


def get_config(preset='ponet'):
  if preset == 'lra':
    config = base.task_config(
        task='text', preset=preset, max_len=1000, padded_len=1000,
        batch_size=32, train_steps=20000, warmup_steps=8000, eval_every=100,
        model=base.lra_model(num_layers=4, dim=256, num_heads=4,
                             mlp_dim=1024, segment_num=1, pooling='cls'))
  else:
    config = base.task_config(
        task='text', preset=preset, max_len=4000, padded_len=4096,
        batch_size=32, train_steps=20000, warmup_steps=8000, eval_every=500,
        model=base.ponet_model(segment_num=1))
  # The paper's segments of 2 tokens at whatever padded length is chosen.
  config.model.ponet.segment_num = config.get_ref('padded_len').identity()
  return config

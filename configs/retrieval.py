r"""Retrieval: byte-level AAN citation matching, 2 classes, 2 x 4,000 bytes.

Commands:
  python -m lra_ponet.run --task=retrieval --model=ponet \
      --config.data_dir=.../lra_release
  python -m lra_ponet.run --task=retrieval --model=ponet --preset=lra \
      --config.data_dir=.../lra_release

Data: the LRA release files `tsv_data/new_aan_pairs.{train,eval,test}.tsv`
(`python -m lra_ponet.data prepare --task=retrieval` says where to get
them). Each document: first 10,000 bytes, then 4,000 byte tokens padded to
4,096; one shared encoder, classifier on `[u, v, u*v, u-v]` (Linear(4D ->
2D), ReLU, Linear(2D -> 2)).

Expected test accuracy of the `ponet` preset (published, PoNet paper
Table 1, 30,000 steps): PoNet 80.35, Transformer 79.35, FNet 76.94. Batch
32, validation every 300 steps; the best-validation parameters are tested.

`lra` preset: LRA's `matching/configs/transformer_base.py` with its
TransformerDualEncoder (4 layers, dim 128, 4 heads, MLP 512, sinusoidal
positions, 4,000 bytes, batch 32, 5,000 steps, lr 0.05, weight decay 0.1,
validation every 100 steps); published 57.46 (Tay et al.). Its warm-up
(8,000 steps) is longer than its 5,000 steps, so the learning rate never
reaches its peak, as in the original. As in that code the features are
`[u, v]` (`interaction=None`, model.pair_features='concat'; the paper
describes `[u, v, u*v, u-v]`), the head is Dense(512) -> ReLU -> Dense(256)
-> ReLU -> Dense(2), and the "CLS" pooling reads the output at each
document's first byte, because the dual encoder prepends no CLS token
(model.pooling='first'). Besides the differences of every task
(configs/base.py): LRA's byte encoder numbers bytes differently from the
suite's bytes + 1.
"""

from lra_ponet.configs import base

SEGMENT_NUM = 64


def get_config(preset='ponet'):
  if preset == 'lra':
    return base.task_config(
        task='retrieval', preset=preset, max_len=4000, padded_len=4000,
        batch_size=32, train_steps=5000, warmup_steps=8000, eval_every=100,
        model=base.lra_model(num_layers=4, dim=128, num_heads=4,
                             mlp_dim=512, segment_num=SEGMENT_NUM,
                             pooling='first'))
  return base.task_config(
      task='retrieval', preset=preset, max_len=4000, padded_len=4096,
      batch_size=32, train_steps=30000, warmup_steps=800, eval_every=300,
      model=base.ponet_model(segment_num=SEGMENT_NUM))

"""BP-Transformer's binary-partition attention, in a leaf-only form.

Ye et al., "BP-Transformer: Modeling Long-Range Context via Binary
Partition", arXiv 1911.04070. The graph follows the official code,
yzh119/BPT `graph_builder/builder.pyx` (`BinaryPartition.build_graph`,
`triu=False`): the tokens are the leaves of a binary tree of span nodes
(level j holds nodes covering 2^j consecutive tokens), and token i attends to
itself and, on every level, to at most k span nodes on each side, the
nearest ones not already covered (an overlapping parent is replaced by its
child, as the builder's overlap flags do). That is at most 1 + 2k log2(L)
keys per token, the paper's O(k L log(L / k)). The attention is the official
`BPTBlock` (`modules/attention.py`): q, k, v and the output are Linear with no
bias; a logit is (q_i . k_src + q_i . a[edge type]) / sqrt(d), with a learned
vector per edge type (level, side, rank; levels clipped at `clip`) shared by
the heads.

Leaf-only adaptation (the official model keeps span-node states across
layers, updated by the same block as the tokens, with the layer's shared
LayerNorms and FFN, and reads out the root): every layer rebuilds the span
nodes as the mean of the current token states over the real tokens they
cover (in the official first layer a span's query is zero, so its attention
output is the mean of its leaves' values, but the tokens there still read
zero span states); because the projections have no bias, a span's key and
value are the means of its tokens' keys and values. The graph is
built once on the length rounded up to a power of two; nodes covering no
real token are masked. For real lengths that are powers of two this is the
official graph exactly; for other lengths the official builder can name the
node one past the end of a level (the first node of the next level) as an
overlap child, and the masked form drops that edge instead.

Memory: the keys and values of each token's nodes are gathered, B x L x M x D
with M = 1 + 2k log2(L): O(k L log L), never L x L. `masks_padding` holds.

Initialisation: the edge-type vectors are xavier-uniform, as the official
`reset_parameters` (whose table has 1000 rows; the bound
sqrt(6 / (1000 + d)) is kept for the rows used). The projections are
initialised by the model (`model.linear_init`, models.reinit_linears), not
xavier-uniform as there.

Hyperparameters (`config.model.bpt`):
  k: 4, the official `step` of the IMDB config (`configs/imdb-4.yml`).
  clip: 5, the official `clip_dist` of that config.
  relative_positions: True, as that config (`rel_pos`).
Heads and attention dropout are the model's `num_heads` and
`attention_dropout` (the IMDB config: 6 heads, attention dropout 0.3).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError

# Rows of the official edge-type table (`BPTBlock.MAX_ETYPE`).
OFFICIAL_EDGE_TYPES = 1000


@functools.lru_cache(maxsize=None)
def partition_graph(length: int, k: int, clip: int):
  """Static per-token attention lists on the tree over `length` leaves.

  Returns `(nodes_LxM, types_LxM, valid_LxM, level_sizes)`: node ids index
  the levels concatenated (leaves first), and each row is token i's
  in-edges, self first (the order does not change the attention).
  """
  sizes = [length]
  while sizes[-1] >= 2:
    sizes.append((sizes[-1] + 1) // 2)
  shift = np.concatenate([[0], np.cumsum(sizes)])
  rows = []
  for i in range(length):
    edges = [(i, 0)]
    left, right, left_overlap, right_overlap = i - 1, i + 1, False, False
    for level, size in enumerate(sizes):
      base = (2 * k + 1) * min(level, clip)
      for rank in range(k):
        if right < size:
          node = (shift[level - 1] + 2 * right + 1 if right_overlap
                  else shift[level] + right)
          edges.append((node, base + 2 * (rank + 1)))
          right_overlap = False
        right += 1
        if left >= 0:
          node = (shift[level - 1] + 2 * left if left_overlap
                  else shift[level] + left)
          edges.append((node, base + 2 * rank + 1))
          left_overlap = False
        left -= 1
      left_overlap = left_overlap or left % 2 == 0
      right_overlap = right_overlap or right % 2 == 1
      left, right = left >> 1, right >> 1
    rows.append(edges)
  width = max(map(len, rows))
  nodes = np.zeros((length, width), np.int32)
  types = np.zeros((length, width), np.int32)
  valid = np.zeros((length, width), bool)
  for i, edges in enumerate(rows):
    nodes[i, :len(edges)], types[i, :len(edges)] = zip(*edges)
    valid[i, :len(edges)] = True
  return nodes, types, valid, tuple(sizes)


class BinaryPartitionAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` over a binary partition of L."""

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs, k: int = 4,
               clip: int = 5, relative_positions: bool = True,
               attention_dropout: float = 0.1, dtype=jnp.float32):
    if k < 1 or clip < 0:
      raise UserError(f'bpt needs k >= 1 and clip >= 0, got {k} and {clip}; '
                      'fix --config.model.bpt')
    self.num_heads = num_heads
    self.k = k
    self.clip = clip
    self.relative_positions = relative_positions

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype,
                                        use_bias=False))
    if relative_positions:
      head_dim = dim // num_heads
      bound = math.sqrt(6 / (OFFICIAL_EDGE_TYPES + head_dim))
      self.edge_types = nnx.Param(jax.random.uniform(
          rngs.params(), ((2 * k + 1) * (clip + 1), head_dim),
          minval=-bound, maxval=bound))
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)

  @classmethod
  def default_config(cls, config):
    del config  # The same graph rule at every length.
    return dict(k=4, clip=5, relative_positions=True)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    settings = model_config.bpt
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               k=settings.k, clip=settings.clip,
               relative_positions=settings.relative_positions,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    length = x_BxLxD.shape[1]
    padded = 1 << max(length - 1, 0).bit_length()
    nodes_LxM, types_LxM, valid_LxM, _ = (
        array[:length] for array in partition_graph(padded, self.k,
                                                    self.clip))
    mask_BxP = jnp.pad(mask_BxL, ((0, 0), (0, padded - length)))

    def heads(projection):
      return attention.split_heads(projection(x_BxLxD), self.num_heads)

    key_BxNxHxK, count_BxN = self._span_means(heads(self.key), mask_BxP)
    value_BxNxHxK, _ = self._span_means(heads(self.value), mask_BxP)
    query_BxLxHxK = heads(self.query)
    logits_BxLxHxM = jnp.einsum('blhk,blmhk->blhm', query_BxLxHxK,
                                key_BxNxHxK[:, nodes_LxM])
    if self.relative_positions:
      logits_BxLxHxM += jnp.einsum(
          'blhk,lmk->blhm', query_BxLxHxK,
          self.edge_types[...].astype(query_BxLxHxK.dtype)[types_LxM])
    logits_BxLxHxM /= math.sqrt(query_BxLxHxK.shape[-1])
    attend_BxLxM = (count_BxN[:, nodes_LxM] > 0) & valid_LxM[None]
    probs_BxLxHxM = attention.masked_softmax(
        logits_BxLxHxM, attend_BxLxM[:, :, None], self.attention_dropout)
    mixed_BxLxHxK = jnp.einsum('blhm,blmhk->blhk', probs_BxLxHxM,
                               value_BxNxHxK[:, nodes_LxM])
    return self.out(attention.merge_heads(mixed_BxLxHxK))

  def _span_means(self, x_BxLxHxK, mask_BxP):
    """Every tree node's mean over its real leaves, levels concatenated."""
    batch, length = x_BxLxHxK.shape[:2]
    padded = mask_BxP.shape[1]
    # Sums and counts of up to L tokens need float32 even under bfloat16.
    sums_BxPxHxK = jnp.pad(
        jnp.where(mask_BxP[:, :length, None, None], x_BxLxHxK,
                  0).astype(jnp.float32),
        ((0, 0), (0, padded - length), (0, 0), (0, 0)))
    counts_BxP = mask_BxP.astype(jnp.float32)
    level_sums, level_counts = [sums_BxPxHxK], [counts_BxP]
    while level_sums[-1].shape[1] > 1:
      level_sums.append(level_sums[-1].reshape(
          (batch, -1, 2) + x_BxLxHxK.shape[2:]).sum(axis=2))
      level_counts.append(level_counts[-1].reshape(batch, -1, 2).sum(axis=2))
    sums_BxNxHxK = jnp.concatenate(level_sums, axis=1)
    count_BxN = jnp.concatenate(level_counts, axis=1)
    means_BxNxHxK = sums_BxNxHxK / jnp.maximum(count_BxN, 1)[..., None, None]
    return means_BxNxHxK.astype(x_BxLxHxK.dtype), count_BxN

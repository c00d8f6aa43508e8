"""Cluster-Former (Wang et al., arXiv 2009.06097): windows and k-means chunks.

Two layer types alternate: a sliding-window layer (local softmax attention)
and a cluster layer, which assigns every token to its nearest k-means
centroid, sorts the sequence by cluster, runs full attention inside
consecutive chunks of the sorted sequence and un-sorts. Tokens far apart but
alike thus attend to each other at a cost linear in the length.

No official code was found and the paper's method section was not read, so
everything below beyond "sliding-window layers interleaved with cluster
layers whose k-means centroids are updated outside gradient descent"
(abstract) is a reconstruction (UNCONFIRMED):
- the window layer is banded attention: token i sees keys j with
  |i - j| <= window // 2, instead of overlapping windows whose merge rule is
  unknown;
- assignment by cosine similarity to the centroids; sort key
  `cluster * L + position` (ties by position); chunks of `chunk_size`;
- padding goes to an extra last cluster and is masked as a key, so
  `masks_padding` holds;
- centroids: the paper refreshes them periodically by k-means over a memory
  bank of hidden states. Here they are updated every training call by an
  exponential moving average of the mean (unit-normalised) real tokens
  assigned to each cluster: online spherical k-means, a choice that keeps the
  training step pure. Evaluation never changes them.

Hyperparameters (`config.model.cluster_former`): with no official code and
no values in the paper's method section, all are this suite's choices:
- `window = 256`: keys within `window // 2` positions on each side;
- `num_clusters = 64` (p);
- `chunk_size = 256` (l), capped at the sequence length;
- `cluster_every = 2`: layer `i` clusters iff `i % cluster_every ==
  cluster_every - 1` (the spec's "layer 2 of 2"), the others are windows;
- `centroid_decay = 0.99`: the moving-average decay (chosen here).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.dropout import Dropout
from lra_ponet.errors import UserError


class Centroids(nnx.Variable):
  """K-means centroids: model state that no optimiser updates."""


class ClusterFormerAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, window or cluster attention.

  Like `nnx.BatchNorm`, `use_running_average` (set by `model.eval()` and
  `model.train()`) freezes the centroids when True.
  """

  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               clustered: bool, window: int = 256, num_clusters: int = 64,
               chunk_size: int = 256, centroid_decay: float = 0.99,
               attention_dropout: float = 0.1, dtype=jnp.float32):
    for name, value in (('window', window), ('num_clusters', num_clusters),
                        ('chunk_size', chunk_size)):
      if value < 1:
        raise UserError(f'model.cluster_former.{name} must be positive, got '
                        f'{value}')
    if not 0 <= centroid_decay < 1:
      raise UserError('model.cluster_former.centroid_decay must be in [0, 1), '
                      f'got {centroid_decay}')
    self.num_heads = num_heads
    self.clustered = clustered
    self.half_window = window // 2
    self.chunk_size = chunk_size
    self.centroid_decay = centroid_decay
    self.use_running_average = False

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))
    self.attention_dropout = Dropout(attention_dropout, rngs=rngs)
    if clustered:
      self.centroids = Centroids(jax.random.normal(
          rngs.params(), (num_clusters, dim), jnp.float32))

  @classmethod
  def default_config(cls, config):
    del config  # The same for every task.
    return dict(window=256, num_clusters=64, chunk_size=256, cluster_every=2,
                centroid_decay=0.99)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    own = model_config.cluster_former
    if own.cluster_every < 1:
      raise UserError('model.cluster_former.cluster_every must be positive, '
                      f'got {own.cluster_every}')
    clustered = layer_index % own.cluster_every == own.cluster_every - 1
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               clustered=clustered, window=own.window,
               num_clusters=own.num_clusters, chunk_size=own.chunk_size,
               centroid_decay=own.centroid_decay,
               attention_dropout=model_config.attention_dropout,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    if self.clustered:
      return self._cluster_attention(x_BxLxD, mask_BxL)
    return self._window_attention(x_BxLxD, mask_BxL)

  def _heads(self, projection, x_xD):
    return attention.split_heads(projection(x_xD), self.num_heads)

  def _window_attention(self, x_BxLxD, mask_BxL):
    """Banded attention in blocks of `half_window`: each sees 3 blocks."""
    block = max(min(self.half_window, x_BxLxD.shape[1]), 1)
    near_CxS = (np.abs(attention.block_offsets(block, block))
                <= self.half_window)
    mixed_BxLxHxK = attention.banded_attention(
        self._heads(self.query, x_BxLxD), self._heads(self.key, x_BxLxD),
        self._heads(self.value, x_BxLxD), mask_BxL, near_CxS,
        self.attention_dropout)
    return self.out(attention.merge_heads(mixed_BxLxHxK))

  def _cluster_attention(self, x_BxLxD, mask_BxL):
    """Full attention inside chunks of the sequence sorted by cluster."""
    batch, length, dim = x_BxLxD.shape
    cluster_BxL = self._assign(x_BxLxD, mask_BxL)
    # Unique keys: sorted by cluster, then by position; padding last.
    order_BxL = jnp.argsort(cluster_BxL * length + jnp.arange(length), axis=1)
    sorted_BxLxD = jnp.take_along_axis(x_BxLxD, order_BxL[:, :, None], axis=1)
    sorted_mask_BxL = jnp.take_along_axis(mask_BxL, order_BxL, axis=1)
    chunk = min(self.chunk_size, length)
    x_BxNxCxD = attention.blocks(sorted_BxLxD, chunk)
    mixed_BxNxCxHxK = attention.dense_attention(
        self._heads(self.query, x_BxNxCxD), self._heads(self.key, x_BxNxCxD),
        self._heads(self.value, x_BxNxCxD),
        attention.blocks(sorted_mask_BxL, chunk)[:, :, None],
        self.attention_dropout)
    mixed_BxLxD = self.out(attention.merge_heads(mixed_BxNxCxHxK)).reshape(
        batch, -1, dim)[:, :length]
    inverse_BxL = jnp.argsort(order_BxL, axis=1)
    return jnp.take_along_axis(mixed_BxLxD, inverse_BxL[:, :, None], axis=1)

  def _assign(self, x_BxLxD, mask_BxL):
    """Nearest centroid by cosine; padding gets the extra cluster p."""
    unit_BxLxD = _unit(jax.lax.stop_gradient(x_BxLxD).astype(jnp.float32))
    centroids_PxD = self.centroids[...]
    num_clusters = centroids_PxD.shape[0]
    cluster_BxL = jnp.argmax(unit_BxLxD @ _unit(centroids_PxD).T, axis=-1)
    cluster_BxL = jnp.where(mask_BxL, cluster_BxL, num_clusters)
    if not self.use_running_average:
      # one_hot of the padding cluster p is all zeros: padding never counts.
      members_BxLxP = jax.nn.one_hot(cluster_BxL, num_clusters)
      counts_P = members_BxLxP.sum(axis=(0, 1))
      sums_PxD = jnp.einsum('blp,bld->pd', members_BxLxP, unit_BxLxD)
      means_PxD = sums_PxD / jnp.maximum(counts_P, 1)[:, None]
      decay = self.centroid_decay
      self.centroids[...] = jnp.where(
          counts_P[:, None] > 0,
          decay * centroids_PxD + (1 - decay) * means_PxD, centroids_PxD)
    return cluster_BxL


def _unit(x_NxD):
  return x_NxD / jnp.maximum(jnp.linalg.norm(x_NxD, axis=-1, keepdims=True),
                             1e-6)

"""What the attention mixers share: projections, heads, masked softmax,
dense, banded and linear attention.

Shapes are in the names: B batch, L queries, M keys, H heads, K head width,
D model width, N blocks of C (or Q) queries and S keys each; `...` stands
for any leading axes (the batch, or the batch and blocks where attention
runs block by block), so one function serves a sequence and its blocks.

A mixer keeps its projections as its own attributes (`query`, `key`,
`value`, `out`), so parameter paths and checkpoints name them as before.
They are plain `nnx.Linear`s: their initialisation is the model's, not the
mixer's, since `models.reinit_linears` draws every Linear as
`model.linear_init` says ('flax' keeps flax's default).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra_ponet.dropout import Dropout


def attention_projections(dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
                          use_bias: bool = True, qkv_dim: int | None = None):
  """(query, key, value, out), built in that order: D -> qkv_dim -> D.

  `qkv_dim` (the width of q, k and v) is D unless given.
  """
  qkv_dim = qkv_dim or dim
  sizes = ((dim, qkv_dim),) * 3 + ((qkv_dim, dim),)
  return tuple(nnx.Linear(size_in, size_out, use_bias=use_bias, dtype=dtype,
                          rngs=rngs) for size_in, size_out in sizes)


def split_heads(x_xD, num_heads: int):
  """`...xD -> ...xHxK`: heads are contiguous blocks of K = D / H channels."""
  return x_xD.reshape(*x_xD.shape[:-1], num_heads, -1)


def merge_heads(x_xHxK):
  """`...xHxK -> ...xD`, the inverse of `split_heads`."""
  return x_xHxK.reshape(*x_xHxK.shape[:-2], -1)


def attention_logits(query_xLxHxK, key_xMxHxK):
  """`q . k / sqrt(K)` of every query and key: ...xHxLxM."""
  return jnp.einsum('...lhk,...mhk->...hlm', query_xLxHxK,
                    key_xMxHxK) / math.sqrt(query_xLxHxK.shape[-1])


def masked_softmax(logits, allowed=None, dropout: Dropout | None = None):
  """Softmax over the last axis, of the logits `allowed` (None: all), then
  `dropout` on the weights.

  `allowed` broadcasts against the logits. The others take the dtype's
  lowest value rather than -inf, so a row with nothing allowed (a padding
  query's, or any row of an all-padding example) is a finite uniform
  average, never NaN.
  """
  if allowed is not None:
    logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
  probs = jax.nn.softmax(logits, axis=-1)
  return probs if dropout is None else dropout(probs)


def mix_values(probs_xHxLxM, value_xMxHxK):
  """The attention weights applied to the values: ...xLxHxK."""
  return jnp.einsum('...hlm,...mhk->...lhk', probs_xHxLxM, value_xMxHxK)


def dense_attention(query_xLxHxK, key_xMxHxK, value_xMxHxK, allowed_xLxM=None,
                    dropout: Dropout | None = None):
  """Softmax attention of each query over the keys it is allowed: ...xLxHxK.

  `allowed_xLxM` (None: every key) is shared by the heads and broadcasts,
  e.g. a key padding mask as `mask_BxM[:, None]`.
  """
  if allowed_xLxM is not None:
    allowed_xLxM = allowed_xLxM[..., None, :, :]  # The same for every head.
  probs_xHxLxM = masked_softmax(attention_logits(query_xLxHxK, key_xMxHxK),
                                allowed_xLxM, dropout)
  return mix_values(probs_xHxLxM, value_xMxHxK)


def blocks(x_BxLx, block: int, num_blocks: int | None = None):
  """`BxLx... -> BxNxCx...`: axis 1 in N blocks of C = `block`, zero-padded.

  N is the fewest blocks that hold L unless given.
  """
  num_blocks = num_blocks or -(-x_BxLx.shape[1] // block)
  pad = num_blocks * block - x_BxLx.shape[1]
  x_BxLx = jnp.pad(x_BxLx, [(0, 0), (0, pad)] + [(0, 0)] * (x_BxLx.ndim - 2))
  return x_BxLx.reshape(x_BxLx.shape[0], num_blocks, block,
                        *x_BxLx.shape[2:])


def with_neighbours(x_BxNxCx, before: int = 1, after: int = 1):
  """`BxNxCx... -> BxNxSx...`: block n beside blocks n - before .. n + after.

  S = (before + 1 + after) C, in position order; zeros beyond the ends.
  """
  num_blocks = x_BxNxCx.shape[1]
  padded = jnp.pad(x_BxNxCx, [(0, 0), (before, after)]
                   + [(0, 0)] * (x_BxNxCx.ndim - 2))
  return jnp.concatenate(
      [padded[:, s:s + num_blocks] for s in range(before + 1 + after)],
      axis=2)


def block_offsets(query_block: int, key_block: int, before: int = 1,
                  after: int = 1, key_stride: int = 1):
  """Static QxS: key position minus query position inside a neighbourhood.

  Query q of block n (position n Q + q) against key s of `with_neighbours`
  of the key blocks; the same for every n, so a band is one QxS pattern.
  `key_stride` is how many positions one key stands for (pooled keys; a key
  sits at the first of them).
  """
  span = (before + 1 + after) * key_block
  key_1xS = (np.arange(span)[None] - before * key_block) * key_stride
  return key_1xS - np.arange(query_block)[:, None]


def banded_attention(query_BxLxHxK, key_BxMxHxK, value_BxMxHxK, key_mask_BxM,
                     near_QxS, dropout: Dropout | None = None, *,
                     before: int = 1, after: int = 1, global_keys: int = 0):
  """Blocked softmax attention under a band: BxLxHxK, memory O(L S).

  The queries are cut into blocks of Q = near_QxS.shape[0], the keys into as
  many blocks of S / (before + 1 + after); query block n attends to key
  blocks n - before .. n + after, to the keys that are real and `near_QxS`
  (a static band, e.g. from `block_offsets`). With `global_keys` G, every
  query also attends to the first G keys, in columns of their own (they are
  then left out of the band, so none is counted twice).
  """
  batch, length, heads, head_dim = query_BxLxHxK.shape
  query_BxNxQxHxK = blocks(query_BxLxHxK, near_QxS.shape[0])
  num_blocks = query_BxNxQxHxK.shape[1]
  key_block = near_QxS.shape[1] // (before + 1 + after)

  def band(x_BxMx):
    return with_neighbours(blocks(x_BxMx, key_block, num_blocks), before,
                           after)

  def everywhere(x_BxGx):  # The global keys, in every block.
    return jnp.broadcast_to(x_BxGx[:, None],
                            (batch, num_blocks) + x_BxGx.shape[1:])

  is_global_M = jnp.arange(key_BxMxHxK.shape[1]) < global_keys
  allowed_BxNxQxS = near_QxS & band(key_mask_BxM & ~is_global_M)[:, :, None]
  allowed_BxNxQxGS = jnp.concatenate(
      [jnp.broadcast_to(everywhere(key_mask_BxM[:, :global_keys])[:, :, None],
                        allowed_BxNxQxS.shape[:3] + (global_keys,)),
       allowed_BxNxQxS], axis=-1)
  key_BxNxGSxHxK, value_BxNxGSxHxK = (
      jnp.concatenate([everywhere(x[:, :global_keys]), band(x)], axis=2)
      for x in (key_BxMxHxK, value_BxMxHxK))
  mixed_BxNxQxHxK = dense_attention(query_BxNxQxHxK, key_BxNxGSxHxK,
                                    value_BxNxGSxHxK, allowed_BxNxQxGS,
                                    dropout)
  return mixed_BxNxQxHxK.reshape(batch, -1, heads, head_dim)[:, :length]


def linear_attention(query_features_BxLxHxR, key_features_BxLxHxR,
                     value_BxLxHxK, eps: float = 0.0):
  """Attention with phi(q) . phi(k) in place of exp(q . k), linear in L:

      out_l = phi(q_l) (sum_n phi(k_n) v_n^T) / (phi(q_l) . sum_n phi(k_n)
                                                 + eps)

  The features phi are the caller's, and so is zeroing padding keys.
  """
  context_BxHxRxK = jnp.einsum('blhr,blhk->bhrk', key_features_BxLxHxR,
                               value_BxLxHxK)
  numerator_BxLxHxK = jnp.einsum('blhr,bhrk->blhk', query_features_BxLxHxR,
                                 context_BxHxRxK)
  denominator_BxLxH = jnp.einsum('blhr,bhr->blh', query_features_BxLxHxR,
                                 key_features_BxLxHxR.sum(axis=1))
  return numerator_BxLxHxK / (denominator_BxLxH[..., None] + eps)

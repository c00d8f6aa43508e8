"""BigBird block-sparse attention (Zaheer et al., 2020, arXiv 2007.14062).

The ITC variant of the Long Range Arena JAX BigBird
(google-research/long-range-arena @ cd31e5c,
`lra_benchmarks/models/bigbird/bigbird_attention.py`), with the same pattern
and memory linear in the length (keys and values are gathered per block):

* The length is padded by `block_size - L % block_size` (a full extra block
  when L is a multiple of it, L484-491) and cut into nb blocks.
* Query blocks 0 and nb-1 are global: they attend to every key (L171-180,
  L297-306).
* Query block 1 attends to key blocks {0, 1, 2, nb-1}, block nb-2 to
  {0, nb-3, nb-2, nb-1}, each plus `num_rand_blocks` random blocks
  (L182-207, L268-295).
* Every other query block i attends to blocks 0, i-1, i, i+1, nb-1 and
  `num_rand_blocks` random blocks (L210-266).
* Random blocks: `get_block_rand_mask` (L24-66) ported exactly, drawn with
  numpy seeded by the layer index (`onp.random.seed(connectivity_seed)` L366,
  `connectivity_seed=lyr` in `bigbird.py` L207), one table per head in head
  order, the same for the whole batch. They exclude the first and last
  blocks and a row's neighbours, and lie in the first 1,024 tokens
  (`last_idx=min(L, 1024)`, L375). The table depends only on the padded
  length, so it is built once per length in numpy, never inside jit.
* Logits are divided by sqrt(head dim); padding keys get an additive -1e4
  (L175, L202-203, L238-243); outputs of padding queries are zeroed (L312).
* Projections without bias (`bigbird.py` L76-78), initialised by the
  model (`model.linear_init`, models.reinit_linears), not Xavier-uniform as
  there; the sparse path applies no attention dropout (the official
  `sparse_dot_product_attention` takes no dropout rate).

Hyperparameters (`config.model.bigbird`):
* `block_size` = 64: `_DEFAULT_BLOCK_SIZE`, `bigbird.py` L20; the LRA
  image and Pathfinder configs set 64 too.
* `num_rand_blocks` = 3: `BigBirdAttention` default (L415).

Differences from the official code, both outside what it can run: the
official pads the padding mask with -1e9 instead of 0 (L487), which turns
the products of two such entries into large positive biases on the cropped
rows; here the mask is padded with 0. Sequences too short for the random
table (where a row has fewer than `num_rand_blocks` candidate blocks, about
5 + num_rand_blocks blocks in all, the official code cannot build it) are
padded with further masked blocks until the table exists.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.errors import UserError

_PAD_BIAS = -1e4  # Additive bias on padding keys, as the official code.
_ABSENT = -1e30  # Slots that are not part of a row's pattern at all.
_RANDOM_UP_TO = 1024  # `last_idx = min(seq_length, 1024)`, L375.


def _candidates(row, num_blocks, last):
  """Blocks row `row` may draw from, in the order of L42-65."""
  a = np.arange(1, num_blocks - 1)
  start, end = row - 2, row
  if row == 1:
    return a[2:last]
  if row == 2:
    return a[3:last]
  if row == num_blocks - 3:
    return a[:last - 4]
  if row == num_blocks - 2:
    return a[:last - 3]
  if start > last:
    return a[:last]
  if end + 1 == last:
    return a[:start]
  return np.concatenate((a[:start], a[end + 1:last]))


def _last_block(seq_len, block):
  last_idx = min(seq_len, _RANDOM_UP_TO)
  return last_idx // block - 1 if last_idx > 2 * block else (
      seq_len // block - 1)


def _feasible(num_blocks, block, num_rand):
  last = _last_block(num_blocks * block, block)
  return num_blocks >= 4 and all(
      len(_candidates(row, num_blocks, last)) >= num_rand
      for row in range(1, num_blocks - 1))


def padded_blocks(length, block, num_rand):
  """Number of blocks after padding (one extra block at least)."""
  num_blocks = length // block + 1
  while not _feasible(num_blocks, block, num_rand):
    num_blocks += 1
  return num_blocks


@functools.lru_cache(maxsize=64)
def random_blocks(num_blocks, block, num_rand, num_heads, seed):
  """Hx(nb-2)xR random key blocks of query blocks 1..nb-2, as L366-376."""
  rng = np.random.RandomState(seed)
  last = _last_block(num_blocks * block, block)
  table = np.zeros((num_heads, num_blocks - 2, num_rand), np.int64)
  for head in range(num_heads):
    for row in range(1, num_blocks - 1):
      table[head, row - 1] = rng.permutation(
          _candidates(row, num_blocks, last))[:num_rand]
  return table


def key_blocks(num_blocks, table_HxNxR):
  """Key blocks of query blocks 1..nb-2 and which slots are in the pattern.

  Returns Hx(nb-2)x(5+R) block indices and a same-shaped bool; rows 1 and
  nb-2 have 4 + R keys blocks, so their fifth window slot is left out.
  """
  heads, rows, _ = table_HxNxR.shape
  last = num_blocks - 1
  window_Nx5 = np.stack([np.zeros(rows, np.int64), np.arange(rows),
                         np.arange(1, rows + 1), np.arange(2, rows + 2),
                         np.full(rows, last)], axis=1)
  window_Nx5[0] = [0, 1, 2, last, last]
  window_Nx5[-1] = [0, last - 2, last - 1, last, last]
  present_Nx5 = np.ones((rows, 5), bool)
  present_Nx5[[0, -1], 4] = False
  index = np.concatenate(
      [np.broadcast_to(window_Nx5, (heads, rows, 5)), table_HxNxR], axis=2)
  present = np.concatenate(
      [np.broadcast_to(present_Nx5, (heads, rows, 5)),
       np.ones(table_HxNxR.shape, bool)], axis=2)
  return index, present


class BigBirdAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`: window, global and random blocks."""

  masks_padding = True

  def __init__(self, dim, num_heads, *, rngs, block_size=64,
               num_rand_blocks=3, seed=0, dtype=jnp.float32):
    if block_size < 1 or num_rand_blocks < 0:
      raise UserError('bigbird needs block_size >= 1 and num_rand_blocks >= '
                      '0; set --config.model.bigbird.block_size / '
                      'num_rand_blocks')
    self.num_heads = num_heads
    self.block_size = block_size
    self.num_rand_blocks = num_rand_blocks
    self.seed = seed
    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype,
                                        use_bias=False))

  @classmethod
  def default_config(cls, config):
    del config  # The same blocks for every task (bigbird.py L20).
    return dict(block_size=64, num_rand_blocks=3)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    own = model_config.bigbird
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               block_size=own.block_size,
               num_rand_blocks=own.num_rand_blocks, seed=layer_index,
               dtype=jnp.dtype(model_config.dtype))

  def table(self, length):
    """The padded block count and the random table for inputs of `length`."""
    num_blocks = padded_blocks(length, self.block_size, self.num_rand_blocks)
    return num_blocks, random_blocks(num_blocks, self.block_size,
                                     self.num_rand_blocks, self.num_heads,
                                     self.seed)

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, dim = x_BxLxD.shape
    block = self.block_size
    num_blocks, table_HxNxR = self.table(length)

    def blocked(projection):
      y_BxNxCxHxK = attention.blocks(attention.split_heads(
          projection(x_BxLxD), self.num_heads), block, num_blocks)
      return y_BxNxCxHxK.transpose(0, 3, 1, 2, 4)

    q_BxHxNxCxK = blocked(self.query) / np.sqrt(dim // self.num_heads)
    k_BxHxNxCxK, v_BxHxNxCxK = blocked(self.key), blocked(self.value)
    real_BxNxC = attention.blocks(mask_BxL, block, num_blocks)
    bias_BxNxC = jnp.where(real_BxNxC, 0.0, _PAD_BIAS)
    outer_BxHx2xCxK = self._global_rows(q_BxHxNxCxK, k_BxHxNxCxK,
                                        v_BxHxNxCxK, bias_BxNxC)
    inner_BxHxNxCxK = self._sparse_rows(q_BxHxNxCxK, k_BxHxNxCxK,
                                        v_BxHxNxCxK, bias_BxNxC, table_HxNxR)
    out_BxHxNxCxK = jnp.concatenate(
        [outer_BxHx2xCxK[:, :, :1], inner_BxHxNxCxK,
         outer_BxHx2xCxK[:, :, 1:]], axis=2)
    out_BxLxD = attention.merge_heads(out_BxHxNxCxK.transpose(
        0, 2, 3, 1, 4)).reshape(batch, num_blocks * block, dim)[:, :length]
    return self.out(out_BxLxD * mask_BxL[..., None])

  def _global_rows(self, q_BxHxNxCxK, k_BxHxNxCxK, v_BxHxNxCxK, bias_BxNxC):
    """Query blocks 0 and nb-1 against every key."""
    batch, heads, _, _, head_dim = k_BxHxNxCxK.shape
    q_BxHx2xCxK = q_BxHxNxCxK[:, :, jnp.array([0, -1])]
    k_BxHxLxK = k_BxHxNxCxK.reshape(batch, heads, -1, head_dim)
    v_BxHxLxK = v_BxHxNxCxK.reshape(batch, heads, -1, head_dim)
    logits = jnp.einsum('bhgck,bhlk->bhgcl', q_BxHx2xCxK, k_BxHxLxK)
    logits += bias_BxNxC.reshape(batch, 1, 1, 1, -1)
    return jnp.einsum('bhgcl,bhlk->bhgck', jax.nn.softmax(logits, axis=-1),
                      v_BxHxLxK)

  def _sparse_rows(self, q_BxHxNxCxK, k_BxHxNxCxK, v_BxHxNxCxK, bias_BxNxC,
                   table_HxNxR):
    """Query blocks 1..nb-2 against their gathered key blocks."""
    batch, heads, num_blocks, block, _ = k_BxHxNxCxK.shape
    index_HxNxS, present_HxNxS = key_blocks(num_blocks, table_HxNxR)
    head_Hx1x1 = np.arange(heads)[:, None, None]
    k_BxHxNxSxCxK = k_BxHxNxCxK[:, head_Hx1x1, index_HxNxS]
    v_BxHxNxSxCxK = v_BxHxNxCxK[:, head_Hx1x1, index_HxNxS]
    bias_BxHxNxSxC = bias_BxNxC[:, index_HxNxS]
    bias_BxHxNxSxC = jnp.where(present_HxNxS[None, ..., None],
                               bias_BxHxNxSxC, _ABSENT)
    logits = jnp.einsum('bhnck,bhnsjk->bhncsj', q_BxHxNxCxK[:, :, 1:-1],
                        k_BxHxNxSxCxK)
    logits += bias_BxHxNxSxC[:, :, :, None]
    shape = logits.shape
    probs = jax.nn.softmax(logits.reshape(shape[:4] + (-1,)), axis=-1)
    return jnp.einsum('bhncsj,bhnsjk->bhnck', probs.reshape(shape),
                      v_BxHxNxSxCxK)

"""Dropout whose masks cost a quarter of the random bits (`model.dropout_mask_bits`).

`nnx.Dropout` draws each mask element with `jax.random.bernoulli`: a 32-bit
uniform per element, one Threefry-2x32 hash each (jax's partitionable
Threefry keeps 32 of the hash's 64 bits). On a CPU those hashes are most of
a training step's dropout cost (ListOps, PoNet, batch 32 at 2,048 tokens:
about 700 ms of a 1.9 s step). `Dropout` with `mask_bits = 16` draws the
same kind of mask from 16-bit uniforms: one hash gives four elements, each
kept where its 16 bits are below `round(keep_prob * 2**16)`, so the kept
fraction is `keep_prob` to within 2**-17 (7.6e-6). The hash, its key (the
module's own `dropout` stream, as in `nnx.Dropout`) and the scaling of the
kept elements by `1 / keep_prob` are unchanged; only the stream of masks
differs. `mask_bits = 32` is `nnx.Dropout` itself, bit for bit, which runs
saved before the field existed resume with (`config_lib.migrate`).

The encoder sets the field on every `Dropout` it holds
(`models.set_dropout_mask_bits`), so a mixer builds its dropouts with this
class and no extra argument; a plain `nnx.Dropout` keeps 32-bit masks.
"""

import math

import jax
import jax.numpy as jnp
import jax.extend.random as jax_random
from flax import nnx
from jax import lax

from lra_ponet.errors import UserError

MASK_BITS = (16, 32)
_UNIFORM16_SIZE = 1 << 16
# Four 16-bit draws per hash: the two 32-bit words Threefry-2x32 returns.
_DRAWS_PER_HASH = 4
_COUNTER_BLOCK = 1 << 32


def check_mask_bits(mask_bits) -> int:
  if mask_bits not in MASK_BITS:
    raise UserError(f'model.dropout_mask_bits is {mask_bits!r}; use 16 '
                    '(four mask elements per Threefry hash) or 32 '
                    "(nnx.Dropout's jax.random.bernoulli)")
  return mask_bits


def keep_threshold(keep_prob: float) -> int:
  """16-bit draws below this are kept: `round(keep_prob * 2**16)`."""
  return round(keep_prob * _UNIFORM16_SIZE)


def uniform16(key, shape) -> jax.Array:
  """`shape` independent uniform 16-bit integers (int32) from a Threefry key.

  Hash `i` (counter words `(i // 2**32, i % 2**32)`) gives draws `4 i` to
  `4 i + 3`, in the row-major order of `shape`.
  """
  key_words = jax.random.key_data(key)
  if key_words.shape != (2,):
    raise UserError('16-bit dropout masks need Threefry keys, the default '
                    f'of jax (this key has {key_words.shape} words); set '
                    'jax_default_prng_impl=threefry2x32 or '
                    'model.dropout_mask_bits=32')
  size = math.prod(shape)
  high_counter, low_counter = _counter_words(-(-size // _DRAWS_PER_HASH))
  high_word, low_word = jax_random.threefry2x32_p.bind(
      key_words[0], key_words[1], high_counter, low_counter)
  words_Hx2 = jnp.stack([high_word, low_word], axis=-1)
  draws = lax.bitcast_convert_type(words_Hx2, jnp.uint16).reshape(-1)
  if draws.size != size:
    draws = draws[:size]
  return draws.reshape(shape).astype(jnp.int32)


def _counter_words(hashes: int) -> tuple[jax.Array, jax.Array]:
  """The two 32-bit words of counters `0 .. hashes - 1`, without 64-bit ints.

  Masks of 2**34 elements and more (Path-X attention weights) need counters
  past 2**32: whole blocks of 2**32 count in the high word.
  """
  blocks, remainder = divmod(hashes, _COUNTER_BLOCK)
  block_shape = (blocks, _COUNTER_BLOCK)
  high = [lax.broadcasted_iota(jnp.uint32, block_shape, 0).reshape(-1),
          jnp.full((remainder,), blocks, jnp.uint32)]
  low = [lax.broadcasted_iota(jnp.uint32, block_shape, 1).reshape(-1),
         lax.iota(jnp.uint32, remainder)]
  return jnp.concatenate(high), jnp.concatenate(low)


class Dropout(nnx.Dropout):
  """`nnx.Dropout` with masks of `mask_bits` random bits per element."""

  def __init__(self, rate: float, *, rngs: nnx.Rngs, mask_bits: int = 16,
               **kwargs):
    super().__init__(rate, rngs=rngs, **kwargs)
    self.mask_bits = check_mask_bits(mask_bits)

  def __call__(self, inputs, *, deterministic: bool | None = None,
               rngs=None):
    deterministic = (self.deterministic if deterministic is None
                     else deterministic)
    if (self.mask_bits == 32 or rngs is not None or self.broadcast_dims
        or self.rate in (0.0, 1.0) or deterministic in (None, True)):
      return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
    keep_prob = 1.0 - self.rate
    keep = uniform16(self.rngs(), inputs.shape) < keep_threshold(keep_prob)
    return lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))

"""Reformer LSH self-attention (Kitaev et al., ICLR 2020, arXiv 2001.04451).

The Reformer behind the PoNet paper's "Reformer (3)" row: the Nystromformer
LRA code (mlpen/Nystromformer @ 5689313, `LRA/code/attention_reformer.py`
L6-22, `reformer-2`) wraps `LSHSelfAttention` of huggingface transformers
(pinned 3.3.1; maths as in `models/reformer/modeling_reformer.py` version
000824f: `_hash_vectors`, `_set_num_buckets`, `_attend`, `_len_and_dim_norm`):

* Shared query-key: qk = x W_qk and v = x W_v, no biases; one output
  projection with bias (the wrapper's `ff`). The model initialises them
  (`model.linear_init`, models.reinit_linears; its default `pytorch` is
  the official PyTorch default).
* Hashing, per round and head, without gradient: random rotations
  R ~ N(0, 1) of shape (heads, head dim, rounds, buckets/2), drawn afresh on
  every call from the `mixer` RNG stream (HF `hash_seed=None`);
  bucket = argmax([qk R, -qk R]). Factorised bucket counts [f1, f2] hash
  with f1/2 + f2/2 rotation columns and bucket = b1 + f1 b2. Padding tokens
  go to an extra bucket of their own, so they never share a chunk with real
  tokens.
* Every round's positions are sorted by (bucket, position) and the rounds
  concatenated; the sorted sequence is cut into chunks of `chunk_length`,
  and each chunk attends to itself and the previous chunk (wrapping around,
  across rounds, as HF `_look_adjacent`).
* Keys are the qk vectors normalised to unit RMS (eps 1e-6) and divided by
  sqrt(head dim); queries are not normalised. Padding keys (and every key of
  a padding query) get -1e9, then a query's own position gets -1e5: attended
  only when nothing else is.
* Each round gives an output and its log-sum-exp; after un-sorting, the
  rounds are combined with weights softmax over rounds of the log-sum-exps.
* No attention dropout (the wrapper sets dropout 0).

Hyperparameters (`config.model.reformer`), those of the Nystromformer LRA
code unless marked:
* `num_hashes` = 2, `chunk_length` = 64, one chunk before and none after.
* `num_buckets` = 0, meaning HF's automatic rule on the padded length L (the
  Nystromformer code does not set it; the ReformerConfig default of 3.3.1 is
  UNCONFIRMED, see the spec): 2^(bit_length(2 (L // chunk)) - 1) buckets,
  factorised into [2^(p//2), 2^(p - p//2)] above 2 max(sqrt(L // chunk),
  chunk). That limit assumes `max_position_embeddings` = L (UNCONFIRMED).
  So 32 at L = 1,024, 64 at 2,048, 128 at 4,096, [16, 16] at 8,192.
  A positive value fixes an even, unfactorised count.

Differences, UNCONFIRMED points: the padding bucket is in the HF file
version the spec was written from (000824f); other 3.x versions hash padding
with the real tokens, so that padding content can move real tokens between
chunks; which of the two 3.3.1 is was not checked. The wrapper module of the
official code also holds an unused W_k and the biases of W_q and W_v (per
the spec); this one has no such unused parameters.

The length is padded to a multiple of `chunk_length` with masked tokens (as
HF's `ReformerModel` pads). HF skips hashing when L <= chunk_length; hashing
there gives the same outputs at real positions, since every chunk then holds
all positions.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.errors import UserError

_PAD_VALUE = -1e9  # HF mask_value_float32.
_SELF_VALUE = -1e5  # HF self_mask_value_float32.


def bucket_factors(length, chunk, num_buckets=0):
  """HF `_set_num_buckets` for a padded length, or the fixed count."""
  if num_buckets:
    return (num_buckets,)
  power = (2 * (length // chunk)).bit_length() - 1
  limit = 2 * max(int((length // chunk) ** 0.5), chunk)
  if 2 ** power > limit:
    return (2 ** (power // 2), 2 ** (power - power // 2))
  return (2 ** power,)


def hash_buckets(qk_BxHxLxK, rotations_HxKxNxR, factors):
  """BxHxNxL bucket of every position in every round."""
  rotated = jnp.einsum('bhtk,hknr->bhntr',
                       jax.lax.stop_gradient(qk_BxHxLxK), rotations_HxKxNxR)
  buckets, start, scale = 0, 0, 1
  for factor in factors:
    part = rotated[..., start:start + factor // 2]
    buckets += scale * jnp.argmax(jnp.concatenate([part, -part], -1), -1)
    start, scale = start + factor // 2, scale * factor
  return buckets


def _rms_normalise(x, epsilon=1e-6):
  return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + epsilon)


class LSHSelfAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD` by multi-round LSH attention."""

  masks_padding = True

  def __init__(self, dim, num_heads, *, rngs, num_hashes=2, chunk_length=64,
               num_buckets=0, dtype=jnp.float32):
    if num_hashes < 1 or chunk_length < 1 or num_buckets % 2:
      raise UserError('reformer needs num_hashes >= 1, chunk_length >= 1 and '
                      'an even num_buckets (0: automatic); set '
                      '--config.model.reformer.FIELD')
    self.num_heads = num_heads
    self.num_hashes = num_hashes
    self.chunk_length = chunk_length
    self.num_buckets = num_buckets
    self.query_key = nnx.Linear(dim, dim, use_bias=False, dtype=dtype,
                                rngs=rngs)
    self.value = nnx.Linear(dim, dim, use_bias=False, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.rng = rngs['mixer'].fork()

  @classmethod
  def default_config(cls, config):
    del config  # The rule for the bucket count is applied to each length.
    return dict(num_hashes=2, chunk_length=64, num_buckets=0)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.reformer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               num_hashes=own.num_hashes, chunk_length=own.chunk_length,
               num_buckets=own.num_buckets,
               dtype=jnp.dtype(model_config.dtype))

  def rotations_shape(self, dim, length):
    factors = bucket_factors(self.padded_length(length), self.chunk_length,
                             self.num_buckets)
    return (self.num_heads, dim // self.num_heads, self.num_hashes,
            sum(factors) // 2)

  def padded_length(self, length):
    return -(-length // self.chunk_length) * self.chunk_length

  def __call__(self, x_BxLxD, mask_BxL, rotations_HxKxNxR=None):
    length, dim = x_BxLxD.shape[1:]
    padded = self.padded_length(length)
    if rotations_HxKxNxR is None:
      rotations_HxKxNxR = jax.random.normal(
          self.rng(), self.rotations_shape(dim, length), x_BxLxD.dtype)
    x_BxPxD = jnp.pad(x_BxLxD, ((0, 0), (0, padded - length), (0, 0)))
    real_BxP = jnp.pad(mask_BxL, ((0, 0), (0, padded - length)))

    def heads(projection):
      return attention.split_heads(projection(x_BxPxD),
                                   self.num_heads).transpose(0, 2, 1, 3)

    out_BxHxPxK = self._lsh_attention(heads(self.query_key),
                                      heads(self.value), real_BxP,
                                      rotations_HxKxNxR)
    out_BxPxD = attention.merge_heads(out_BxHxPxK.transpose(0, 2, 1, 3))
    return self.out(out_BxPxD[:, :length])

  def _lsh_attention(self, qk_BxHxPxK, v_BxHxPxK, real_BxP, rotations):
    batch, heads, padded, head_dim = qk_BxHxPxK.shape
    order_BxHxS = self._sorted_order(qk_BxHxPxK, real_BxP, rotations)
    out_BxHxSxK, lse_BxHxS = self._chunked_attention(
        qk_BxHxPxK, v_BxHxPxK, real_BxP, order_BxHxS % padded)
    undo_BxHxS = jnp.argsort(order_BxHxS, axis=-1)
    shape = (batch, heads, self.num_hashes, padded)
    out_BxHxNxPxK = jnp.take_along_axis(
        out_BxHxSxK, undo_BxHxS[..., None], axis=2).reshape(shape + (-1,))
    lse_BxHxNxP = jnp.take_along_axis(lse_BxHxS, undo_BxHxS,
                                      axis=2).reshape(shape)
    weights = jax.nn.softmax(lse_BxHxNxP, axis=2)[..., None]
    return (out_BxHxNxPxK * weights).sum(axis=2)

  def _sorted_order(self, qk_BxHxPxK, real_BxP, rotations):
    """Indices into the rounds' concatenation, sorted by (bucket, position)."""
    batch, heads, padded, _ = qk_BxHxPxK.shape
    factors = bucket_factors(padded, self.chunk_length, self.num_buckets)
    buckets_BxHxNxP = hash_buckets(qk_BxHxPxK, rotations, factors)
    total = math.prod(factors) + 1  # The last bucket holds the padding.
    buckets_BxHxNxP = jnp.where(real_BxP[:, None, None], buckets_BxHxNxP,
                                total - 1)
    buckets_BxHxNxP += total * jnp.arange(self.num_hashes)[:, None]
    return jnp.argsort(
        (buckets_BxHxNxP * padded + jnp.arange(padded)).reshape(
            batch, heads, -1), axis=-1)

  def _chunked_attention(self, qk_BxHxPxK, v_BxHxPxK, real_BxP, pos_BxHxS):
    """Each sorted chunk against itself and the previous chunk."""
    batch, heads, _, head_dim = qk_BxHxPxK.shape
    num_chunks = pos_BxHxS.shape[-1] // self.chunk_length

    def chunks(a):
      return a.reshape((batch, heads, num_chunks, self.chunk_length)
                       + a.shape[3:])

    def with_previous(a):
      return jnp.concatenate([jnp.roll(a, 1, axis=2), a], axis=3)

    def real(pos):
      return jnp.take_along_axis(real_BxP[:, None],
                                 pos.reshape(batch, 1, -1),
                                 axis=-1).reshape(pos.shape)

    gather = lambda a: jnp.take_along_axis(a, pos_BxHxS[..., None], axis=2)
    q_BxHxCxTxK = chunks(gather(qk_BxHxPxK))
    k_BxHxCx2TxK = with_previous(
        _rms_normalise(q_BxHxCxTxK) / math.sqrt(head_dim))
    v_BxHxCx2TxK = with_previous(chunks(gather(v_BxHxPxK)))
    qpos_BxHxCxT = chunks(pos_BxHxS)
    kpos_BxHxCx2T = with_previous(qpos_BxHxCxT)
    allowed = real(qpos_BxHxCxT)[..., None] & real(kpos_BxHxCx2T)[..., None, :]
    dots = jnp.einsum('bhctk,bhcsk->bhcts', q_BxHxCxTxK, k_BxHxCx2TxK)
    dots = jnp.where(allowed, dots, _PAD_VALUE)
    dots = jnp.where(qpos_BxHxCxT[..., None] == kpos_BxHxCx2T[..., None, :],
                     _SELF_VALUE, dots)
    lse_BxHxCxT = jax.nn.logsumexp(dots, axis=-1)
    out = jnp.einsum('bhcts,bhcsk->bhctk',
                     jnp.exp(dots - lse_BxHxCxT[..., None]), v_BxHxCx2TxK)
    return (out.reshape(batch, heads, -1, head_dim),
            lse_BxHxCxT.reshape(batch, heads, -1))

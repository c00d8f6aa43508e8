"""Sparse-attention mixers against dense references built in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra_ponet.baselines import bigbird
from lra_ponet.baselines import longformer
from lra_ponet.baselines import reformer
from lra_ponet.errors import UserError

DIM, HEADS = 8, 2


def _batch(length, seed=0):
  """x_BxLxD and a mask with one full row and two padded rows."""
  rng = np.random.default_rng(seed)
  x_BxLxD = rng.normal(size=(3, length, DIM)).astype(np.float32)
  lengths = np.array([length, length - 5, 3])
  return x_BxLxD, np.arange(length)[None] < lengths[:, None]


def _kernel(linear):
  return np.asarray(linear.kernel[...], np.float64)


def _dense_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, allowed_BxHxLxL):
  logits = np.einsum('bhqk,bhvk->bhqv', q_BxHxLxK, k_BxHxLxK)
  logits = np.where(allowed_BxHxLxL, logits, -1e30)
  logits -= logits.max(-1, keepdims=True)
  probs = np.exp(logits)
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum('bhqv,bhvk->bhqk', probs, v_BxHxLxK)


def _heads(x_BxLxD, kernel):
  batch, length, _ = x_BxLxD.shape
  return (x_BxLxD @ kernel).reshape(batch, length, HEADS, -1).transpose(
      0, 2, 1, 3)


def _merge_heads(out_BxHxLxK):
  batch, _, length, _ = out_BxHxLxK.shape
  return out_BxHxLxK.transpose(0, 2, 1, 3).reshape(batch, length, -1)


def _temp_bytes(mixer, length):
  graphdef, state = nnx.split(mixer)
  run = jax.jit(lambda state, x, m: nnx.merge(graphdef, state)(x, m))
  compiled = run.lower(state, jnp.zeros((1, length, DIM)),
                       jnp.ones((1, length), bool)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def _assert_linear_memory(mixer, length):
  ratio = _temp_bytes(mixer, 4 * length) / _temp_bytes(mixer, length)
  assert 3 < ratio < 6, ratio  # A dense L x L pattern would give ~16.


# Longformer ------------------------------------------------------------------


def _longformer_reference(mixer, x_BxLxD, mask_BxL):
  x = np.asarray(x_BxLxD, np.float64)
  length = x.shape[1]
  scale = (DIM // HEADS) ** -0.5
  left, right = longformer.window_sides(mixer.window_size)
  g = mixer.global_tokens
  offset = np.arange(length)[None, :] - np.arange(length)[:, None]
  pattern_LxL = ((offset > -left) & (offset <= right)) | (
      np.arange(length)[None, :] < g)
  allowed = pattern_LxL[None, None] & mask_BxL[:, None, None, :]
  out = _dense_attention(_heads(x, _kernel(mixer.query)) * scale,
                         _heads(x, _kernel(mixer.key)),
                         _heads(x, _kernel(mixer.value)), allowed)
  if g:
    every = np.broadcast_to(mask_BxL[:, None, None, :], allowed.shape)
    global_out = _dense_attention(
        _heads(x, _kernel(mixer.global_query)) * scale,
        _heads(x, _kernel(mixer.global_key)),
        _heads(x, _kernel(mixer.global_value)), every)
    out[:, :, :g] = global_out[:, :, :g]
  return _merge_heads(out) @ _kernel(mixer.out)


@pytest.mark.parametrize('window,global_tokens,length', [
    (7, 0, 14), (4, 2, 14), (40, 1, 14)])
def test_longformer_matches_dense_window(window, global_tokens, length):
  mixer = longformer.LongformerAttention(
      DIM, HEADS, window_size=window, global_tokens=global_tokens,
      rngs=nnx.Rngs(0))
  mixer.eval()
  x_BxLxD, mask_BxL = _batch(length)
  real_BxL = mask_BxL[..., None]
  expected = _longformer_reference(mixer, x_BxLxD, mask_BxL)
  got = np.asarray(mixer(x_BxLxD, mask_BxL))
  np.testing.assert_allclose(np.where(real_BxL, got, 0),
                             np.where(real_BxL, expected, 0),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)


def test_longformer_memory_is_linear():
  mixer = longformer.LongformerAttention(DIM, HEADS, window_size=16,
                                         rngs=nnx.Rngs(0))
  mixer.eval()
  _assert_linear_memory(mixer, 256)


def test_longformer_refuses_more_global_tokens_than_length():
  mixer = longformer.LongformerAttention(DIM, HEADS, window_size=4,
                                         global_tokens=20, rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match='global_tokens'):
    mixer(*_batch(14))


# BigBird ---------------------------------------------------------------------


def _bigbird_pattern(num_blocks, table_HxNxR):
  """HxNxN block pattern written out from the rules of the official code."""
  heads = table_HxNxR.shape[0]
  last = num_blocks - 1
  pattern = np.zeros((heads, num_blocks, num_blocks), bool)
  pattern[:, [0, last]] = True
  for head in range(heads):
    for row in range(1, last):
      if row == 1:
        window = [0, 1, 2, last]
      elif row == last - 1:
        window = [0, last - 2, last - 1, last]
      else:
        window = [0, row - 1, row, row + 1, last]
      pattern[head, row, window] = True
      pattern[head, row, table_HxNxR[head, row - 1]] = True
  return pattern


def _bigbird_reference(mixer, x_BxLxD, mask_BxL):
  batch, length, _ = x_BxLxD.shape
  block = mixer.block_size
  num_blocks, table = mixer.table(length)
  padded = num_blocks * block
  x = np.zeros((batch, padded, DIM))
  x[:, :length] = x_BxLxD
  real_BxP = np.zeros((batch, padded), bool)
  real_BxP[:, :length] = mask_BxL
  blocks = _bigbird_pattern(num_blocks, table)
  pattern_HxPxP = blocks.repeat(block, axis=1).repeat(block, axis=2)
  allowed = pattern_HxPxP[None] & real_BxP[:, None, None, :]
  out = _dense_attention(
      _heads(x, _kernel(mixer.query)) * (DIM // HEADS) ** -0.5,
      _heads(x, _kernel(mixer.key)), _heads(x, _kernel(mixer.value)), allowed)
  out = _merge_heads(out)[:, :length] * mask_BxL[..., None]
  return out @ _kernel(mixer.out)


@pytest.mark.parametrize('block,num_rand,length,seed', [
    (2, 1, 14, 0), (2, 2, 30, 1), (3, 1, 18, 2)])
def test_bigbird_matches_dense_pattern(block, num_rand, length, seed):
  mixer = bigbird.BigBirdAttention(DIM, HEADS, block_size=block,
                                   num_rand_blocks=num_rand, seed=seed,
                                   rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _batch(length)
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL),
                             _bigbird_reference(mixer, x_BxLxD, mask_BxL),
                             rtol=1e-5, atol=1e-5)


def test_bigbird_random_blocks_follow_the_official_rules():
  num_blocks = bigbird.padded_blocks(2048, 64, 3)
  assert num_blocks == 33  # 2,048 tokens plus one full block of padding.
  table = bigbird.random_blocks(num_blocks, 64, 3, 2, 0)
  assert table.shape == (2, 31, 3)
  for row in range(1, num_blocks - 1):
    chosen = table[:, row - 1]
    assert ((chosen >= 1) & (chosen <= 15)).all()  # Within 1,024 tokens.
    assert not np.isin(chosen, [row - 1, row, row + 1]).any()
    assert all(len(set(heads)) == 3 for heads in chosen)
  assert not np.array_equal(table[0], table[1])  # Drawn per head.
  # Golden values from the official `get_block_rand_mask` after
  # `onp.random.seed(0)`, one call per head.
  np.testing.assert_array_equal(table[0, :3], [[9, 14, 7], [9, 6, 7],
                                               [10, 5, 14]])
  np.testing.assert_array_equal(table[1, -2:], [[2, 6, 9], [9, 4, 11]])
  np.testing.assert_array_equal(table, bigbird.random_blocks(33, 64, 3, 2, 0))
  assert not np.array_equal(table, bigbird.random_blocks(33, 64, 3, 2, 1))


def test_bigbird_pads_short_inputs_until_the_table_exists():
  assert bigbird.padded_blocks(64, 64, 3) == 8
  assert bigbird.padded_blocks(14, 2, 1) == 8


def test_bigbird_memory_is_linear():
  mixer = bigbird.BigBirdAttention(DIM, HEADS, block_size=8,
                                   num_rand_blocks=2, rngs=nnx.Rngs(0))
  _assert_linear_memory(mixer, 512)


# Reformer --------------------------------------------------------------------


def _lsh_buckets(qk_PxK, rotations_KxNxR, factors, real_P):
  """NxP buckets, the pads in a bucket after all others."""
  rotated = np.einsum('pk,knr->npr', qk_PxK, rotations_KxNxR)
  buckets, start, scale = np.zeros(rotated.shape[:2], int), 0, 1
  for factor in factors:
    part = rotated[..., start:start + factor // 2]
    buckets += scale * np.concatenate([part, -part], -1).argmax(-1)
    start, scale = start + factor // 2, scale * factor
  return np.where(real_P, buckets, np.prod(factors))


def _lsh_head(qk_PxK, v_PxK, real_P, buckets_NxP, chunk):
  """One head, per query, straight from the description."""
  rounds, padded = buckets_NxP.shape
  order = [i for n in range(rounds)
           for i in sorted(range(padded), key=lambda i: (buckets_NxP[n, i], i))]
  keys = qk_PxK / np.sqrt((qk_PxK ** 2).mean(-1, keepdims=True) + 1e-6)
  keys /= np.sqrt(qk_PxK.shape[-1])
  out = np.zeros((rounds, padded, v_PxK.shape[-1]))
  lse = np.zeros((rounds, padded))
  for entry, query in enumerate(order):
    first = entry // chunk * chunk
    neighbours = [order[(first - chunk + t) % len(order)]
                  for t in range(chunk)] + order[first:first + chunk]
    logits = np.array([qk_PxK[query] @ keys[key] for key in neighbours])
    logits[~(real_P[query] & real_P[neighbours])] = -1e9
    logits[np.array(neighbours) == query] = -1e5
    top = logits.max()
    lse[entry // padded, query] = top + np.log(np.exp(logits - top).sum())
    probs = np.exp(logits - lse[entry // padded, query])
    out[entry // padded, query] = probs @ v_PxK[neighbours]
  weights = np.exp(lse - lse.max(0))
  return (out * (weights / weights.sum(0))[..., None]).sum(0)


def _reformer_reference(mixer, x_BxLxD, mask_BxL, rotations_HxKxNxR):
  batch, length, _ = x_BxLxD.shape
  padded = mixer.padded_length(length)
  factors = reformer.bucket_factors(padded, mixer.chunk_length,
                                    mixer.num_buckets)
  x = np.zeros((batch, padded, DIM))
  x[:, :length] = x_BxLxD
  real_BxP = np.zeros((batch, padded), bool)
  real_BxP[:, :length] = mask_BxL
  qk = _heads(x, _kernel(mixer.query_key))
  v = _heads(x, _kernel(mixer.value))
  out = np.zeros_like(qk)
  for b in range(batch):
    for h in range(HEADS):
      buckets = _lsh_buckets(qk[b, h], rotations_HxKxNxR[h], factors,
                             real_BxP[b])
      out[b, h] = _lsh_head(qk[b, h], v[b, h], real_BxP[b], buckets,
                            mixer.chunk_length)
  bias = np.asarray(mixer.out.bias[...], np.float64)
  return _merge_heads(out)[:, :length] @ _kernel(mixer.out) + bias


@pytest.mark.parametrize('length,chunk,hashes,buckets', [
    (32, 2, 1, 0), (9, 16, 2, 0), (14, 4, 3, 4)])
def test_reformer_matches_per_query_reference(length, chunk, hashes,
                                              buckets):
  mixer = reformer.LSHSelfAttention(DIM, HEADS, chunk_length=chunk,
                                    num_hashes=hashes, num_buckets=buckets,
                                    rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _batch(length)
  rotations = np.random.default_rng(3).normal(
      size=mixer.rotations_shape(DIM, length)).astype(np.float32)
  got = mixer(x_BxLxD, mask_BxL, rotations)
  expected = _reformer_reference(mixer, x_BxLxD, mask_BxL, rotations)
  # Padding rows attend to themselves at -1e5, where float32 keeps only
  # about 3 digits of the log-sum-exp; no real position reads them.
  real_BxL = mask_BxL[..., None]
  np.testing.assert_allclose(np.where(real_BxL, got, 0),
                             np.where(real_BxL, expected, 0),
                             rtol=1e-5, atol=1e-5)


def test_reformer_bucket_counts_follow_the_automatic_rule():
  assert [reformer.bucket_factors(n, 64) for n in (1024, 2048, 4096, 8192)
          ] == [(32,), (64,), (128,), (16, 16)]
  assert reformer.bucket_factors(4096, 64, num_buckets=10) == (10,)


def test_reformer_draws_rotations_from_the_mixer_stream():
  x_BxLxD, mask_BxL = _batch(14)
  first = reformer.LSHSelfAttention(DIM, HEADS, chunk_length=4,
                                    rngs=nnx.Rngs(0, mixer=1))
  again = reformer.LSHSelfAttention(DIM, HEADS, chunk_length=4,
                                    rngs=nnx.Rngs(0, mixer=1))
  other = reformer.LSHSelfAttention(DIM, HEADS, chunk_length=4,
                                    rngs=nnx.Rngs(0, mixer=2))
  call_1 = np.asarray(first(x_BxLxD, mask_BxL))
  np.testing.assert_array_equal(call_1, again(x_BxLxD, mask_BxL))
  assert not np.allclose(call_1, other(x_BxLxD, mask_BxL))
  assert not np.allclose(call_1, first(x_BxLxD, mask_BxL))  # Fresh draws.


def test_reformer_memory_is_linear():
  mixer = reformer.LSHSelfAttention(DIM, HEADS, chunk_length=8,
                                    rngs=nnx.Rngs(0))
  _assert_linear_memory(mixer, 128)

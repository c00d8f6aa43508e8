"""The PoNet mixer against slow references of the official maths.

Two references: a per-token loop in float64 (the official formulas) and
the straightforward JAX form (queries and keys for every token, reduce_window)
whose outputs and gradients the fast path must reproduce.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra_ponet import ponet


def _linear(mixer, name, x):
  layer = getattr(mixer, name)
  return (x.astype(np.float64) @ np.asarray(layer.kernel[...], np.float64)
          + np.asarray(layer.bias[...], np.float64))


def reference_ponet(mixer, x_BxLxD, mask_BxL, num_heads, segment_num):
  """The official formulas, one position and one segment at a time."""
  batch, length, dim = x_BxLxD.shape
  head_dim = dim // num_heads
  query, key = _linear(mixer, 'query', x_BxLxD), _linear(mixer, 'key', x_BxLxD)
  gate = _linear(mixer, 'gate', x_BxLxD)
  segment = _linear(mixer, 'segment', x_BxLxD)
  local = _linear(mixer, 'local', x_BxLxD)
  segment_len = length // segment_num + 1
  fused = np.zeros((batch, length, dim))
  for b in range(batch):
    real = [n for n in range(length) if mask_BxL[b, n]]
    segment_in = np.where(mask_BxL[b][:, None], segment[b], -10000.0)
    local_in = np.where(mask_BxL[b][:, None], local[b], -10000.0)
    summary = np.zeros(dim)
    for h in range(num_heads):
      heads = slice(h * head_dim, (h + 1) * head_dim)
      g = sum(query[b, n, heads] for n in real) / len(real)
      logits = np.array([
          g @ key[b, n, heads] / math.sqrt(head_dim) if mask_BxL[b, n]
          else -10000.0 for n in range(length)])
      weights = np.exp(logits - logits.max())
      weights /= weights.sum()
      summary[heads] = sum(weights[n] * key[b, n, heads]
                           for n in range(length))
    for n in range(length):
      if not mask_BxL[b, n]:
        continue
      first = (n // segment_len) * segment_len
      segment_max = segment_in[first:min(first + segment_len, length)].max(0)
      local_max = local_in[max(n - 1, 0):min(n + 2, length)].max(0)
      fused[b, n] = (summary + segment_max) * gate[b, n] + local_max
  return _linear(mixer, 'out', fused)


def _inputs(batch, length, dim, real_lengths, seed=0):
  rng = np.random.default_rng(seed)
  x_BxLxD = rng.normal(size=(batch, length, dim)).astype(np.float32)
  mask_BxL = np.arange(length)[None, :] < np.asarray(real_lengths)[:, None]
  return x_BxLxD, mask_BxL


CASES = [
    (12, 1, (12, 12)),       # One global max.
    (12, 4, (12, 7)),        # segment_len 4: 3 segments, masked tail.
    (13, 4, (13, 5)),        # 13 // 4 + 1 = 4: last segment has one token.
    (16, 5, (16, 1)),        # segment_len 4; a single real token.
    (10, 10, (10, 9)),       # segment_len 2.
    (9, 64, (9, 4)),         # More segments than tokens: segment_len 1.
    (11, 2, (11, 2)),        # segment_len 6: the second segment is all padding.
]


@pytest.mark.parametrize('length,segment_num,real_lengths', CASES)
def test_matches_reference(length, segment_num, real_lengths):
  dim, num_heads = 8, 2
  mixer = ponet.PoNetMixer(dim, num_heads, segment_num, rngs=nnx.Rngs(1))
  x_BxLxD, mask_BxL = _inputs(len(real_lengths), length, dim, real_lengths)
  got = np.asarray(mixer(jnp.asarray(x_BxLxD), jnp.asarray(mask_BxL)))
  want = reference_ponet(mixer, x_BxLxD, mask_BxL, num_heads, segment_num)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def straightforward_ponet(mixer, x_BxLxD, mask_BxL):
  """The mixer as first written: Q and K for every token, reduce_window, pad.

  The fast path must agree with it in outputs and in gradients.
  """
  batch, length, dim = x_BxLxD.shape
  heads, head_dim = mixer.num_heads, dim // mixer.num_heads
  mask_BxLx1 = mask_BxL[:, :, None]
  split = (batch, length, heads, head_dim)
  query_BxLxHxK = mixer.query(x_BxLxD).reshape(split)
  key_BxLxHxK = mixer.key(x_BxLxD).reshape(split)
  weight_BxL = mask_BxL.astype(jnp.float32)
  summary_BxHxK = (jnp.einsum('blhk,bl->bhk', query_BxLxHxK, weight_BxL)
                   / weight_BxL.sum(axis=1)[:, None, None])
  logits_BxHxL = jnp.einsum('bhk,blhk->bhl', summary_BxHxK,
                            key_BxLxHxK) / math.sqrt(head_dim)
  logits_BxHxL = jnp.where(mask_BxL[:, None, :], logits_BxHxL, -10000.0)
  global_BxD = jnp.einsum('bhl,blhk->bhk', jax.nn.softmax(logits_BxHxL, -1),
                          key_BxLxHxK).reshape(batch, dim)
  segment_len = length // mixer.segment_num + 1
  count = -(-length // segment_len)
  padded_BxPxD = jnp.pad(
      jnp.where(mask_BxLx1, mixer.segment(x_BxLxD), -10000.0),
      ((0, 0), (0, count * segment_len - length), (0, 0)),
      constant_values=-jnp.inf)
  segment_BxLxD = jnp.repeat(
      padded_BxPxD.reshape(batch, count, segment_len, dim).max(axis=2),
      segment_len, axis=1)[:, :length]
  half = mixer.local_window // 2
  local_BxLxD = jax.lax.reduce_window(
      jnp.where(mask_BxLx1, mixer.local(x_BxLxD), -10000.0), -jnp.inf,
      jax.lax.max, (1, mixer.local_window, 1), (1, 1, 1),
      ((0, 0), (half, half), (0, 0)))
  fused_BxLxD = ((global_BxD[:, None] + segment_BxLxD) * mixer.gate(x_BxLxD)
                 + local_BxLxD)
  return mixer.out(jnp.where(mask_BxLx1, fused_BxLxD, 0.0))


def _loss_and_grads(forward, mixer, x_BxLxD, mask_BxL):
  """A loss that weighs every output differently; grads of params and x."""
  weights = jnp.asarray(np.random.default_rng(3).normal(
      size=x_BxLxD.shape).astype(np.float32))

  def loss(mixer, x_BxLxD):
    return (forward(mixer, x_BxLxD, mask_BxL) * weights).sum()

  # Jitted: one compiled program is faster than the backward pass op by op.
  value, (params, inputs) = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1)))(
      mixer, x_BxLxD)
  return value, nnx.to_pure_dict(params), inputs


@pytest.mark.parametrize('length,segment_num,real_lengths,local_window', [
    (13, 4, (13, 5, 1), 3),    # Last segment of one token; one real token.
    (11, 2, (11, 2, 8), 3),    # An all-padding segment.
    (37, 3, (37, 30, 12), 5),  # segment_len 13: two whole, one of 11.
    (40, 64, (40, 40, 40), 3),  # segment_len 1, no padding at all.
    (33, 1, (33, 20, 33), 5),  # One global max over a masked batch.
])
def test_fast_path_matches_straightforward_form(length, segment_num,
                                                real_lengths, local_window):
  dim = 8
  mixer = ponet.PoNetMixer(dim, 2, segment_num, rngs=nnx.Rngs(2),
                           local_window=local_window)
  x_BxLxD, mask_BxL = _inputs(len(real_lengths), length, dim, real_lengths)
  x_BxLxD, mask_BxL = jnp.asarray(x_BxLxD), jnp.asarray(mask_BxL)
  np.testing.assert_allclose(
      nnx.jit(lambda m, x, k: m(x, k))(mixer, x_BxLxD, mask_BxL),
      nnx.jit(straightforward_ponet)(mixer, x_BxLxD, mask_BxL), rtol=1e-5,
      atol=1e-5)
  fast = _loss_and_grads(lambda m, x, k: m(x, k), mixer, x_BxLxD, mask_BxL)
  slow = _loss_and_grads(straightforward_ponet, mixer, x_BxLxD, mask_BxL)
  np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               fast[1:], slow[1:])
  # The input gradient is zero at padding: padding never reaches the output.
  assert not np.asarray(fast[2])[~np.asarray(mask_BxL)].any()


def test_batch_chunks_match_one_pass(monkeypatch):
  """Long batches run in chunks of examples; the result must not change."""
  mixer = ponet.PoNetMixer(8, 2, 3, rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _inputs(6, 10, 8, (10, 3, 7, 10, 1, 9))
  whole = _loss_and_grads(lambda m, x, k: m(x, k), mixer, x_BxLxD, mask_BxL)
  monkeypatch.setattr(ponet, 'CHUNK_TOKENS', 20)  # Chunks of 2 examples.
  chunked = _loss_and_grads(lambda m, x, k: m(x, k), mixer, x_BxLxD,
                            mask_BxL)
  # Summing the chunks' parameter gradients reorders float32 additions.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-5),
               whole, chunked)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_low_precision_model_mixes_in_float32(dtype):
  """As the official code (autocast off in the mixer): float32 inside."""
  mixer = ponet.PoNetMixer(8, 2, 3, rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _inputs(2, 10, 8, (10, 6))
  low_BxLxD = jnp.asarray(x_BxLxD, dtype)
  got = mixer(low_BxLxD, mask_BxL)
  assert got.dtype == jnp.dtype(dtype)
  want = mixer(low_BxLxD.astype(jnp.float32), mask_BxL)
  assert want.dtype == jnp.float32
  np.testing.assert_array_equal(got, want.astype(dtype))
  for leaf in jax.tree.leaves(nnx.state(mixer, nnx.Param)):
    assert leaf.dtype == jnp.float32
  _, params, inputs = _loss_and_grads(lambda m, x, k: m(x, k).astype(
      jnp.float32), mixer, low_BxLxD, mask_BxL)
  assert inputs.dtype == jnp.dtype(dtype)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_all_padding_row_is_finite_and_gives_no_gradient():
  mixer = ponet.PoNetMixer(8, 2, 3, rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _inputs(2, 10, 8, (10, 0))
  out_BxLxD = np.asarray(mixer(x_BxLxD, mask_BxL))
  # The official code's rows: every position is padding, only the bias stays.
  np.testing.assert_allclose(out_BxLxD[1],
                             np.broadcast_to(mixer.out.bias[...], (10, 8)),
                             atol=1e-6)
  _, params, inputs = _loss_and_grads(lambda m, x, k: m(x, k), mixer,
                                      jnp.asarray(x_BxLxD), mask_BxL)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
  assert np.isfinite(inputs).all() and not np.asarray(inputs)[1].any()
  # The real row's gradients are those of the real row alone.
  _, alone, alone_inputs = _loss_and_grads(
      lambda m, x, k: m(x, k), mixer, jnp.asarray(x_BxLxD[:1]), mask_BxL[:1])
  np.testing.assert_allclose(inputs[0], alone_inputs[0], rtol=1e-5, atol=1e-6)


def test_projection_names_and_shapes():
  mixer = ponet.PoNetMixer(8, 2, 4, rngs=nnx.Rngs(0))
  for name in ('query', 'key', 'gate', 'segment', 'local', 'out'):
    layer = getattr(mixer, name)
    assert isinstance(layer, nnx.Linear)
    assert layer.kernel.shape == (8, 8) and layer.bias.shape == (8,)
  params = nnx.state(mixer, nnx.Param)
  assert sum(x.size for x in jax.tree.leaves(params)) == 6 * (8 * 8 + 8)


def test_local_window_edges_are_not_zero_padded():
  """All-negative local inputs: a zero-padded edge would pool to 0."""
  x_1xLxD = -jnp.arange(1.0, 25.0).reshape(1, 6, 4) - 5.0
  pooled = np.asarray(ponet.local_max(x_1xLxD, 1))
  assert (pooled < 0).all()
  np.testing.assert_array_equal(pooled[0, 0], np.maximum(x_1xLxD[0, 0],
                                                         x_1xLxD[0, 1]))


def test_padding_content_does_not_change_real_positions():
  dim = 8
  mixer = ponet.PoNetMixer(dim, 2, 3, rngs=nnx.Rngs(0))
  x_BxLxD, mask_BxL = _inputs(2, 11, dim, (11, 6))
  noisy_BxLxD = np.where(mask_BxL[:, :, None], x_BxLxD,
                         100.0 * np.random.default_rng(5).normal(
                             size=x_BxLxD.shape)).astype(np.float32)
  clean = np.asarray(mixer(x_BxLxD, mask_BxL))
  noisy = np.asarray(mixer(noisy_BxLxD, mask_BxL))
  np.testing.assert_allclose(noisy[mask_BxL], clean[mask_BxL], rtol=1e-6,
                             atol=1e-6)
  # Padding rows are zero before the output projection: only the bias stays.
  np.testing.assert_allclose(clean[1, 6:],
                             np.broadcast_to(mixer.out.bias[...], (5, dim)),
                             atol=1e-6)


def test_rejects_bad_shapes():
  # dim % num_heads is checked once for every mixer, in validation.
  with pytest.raises(ValueError, match='odd'):
    ponet.PoNetMixer(8, 2, 4, rngs=nnx.Rngs(0), local_window=2)

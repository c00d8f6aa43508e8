"""Sparse-attention mixers against dense references built in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from baselines import longformer
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
    (6, 0, 14), (7, 0, 14), (4, 2, 14), (1, 0, 9), (40, 1, 14)])
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

"""LSRA, Poolingformer, BP-Transformer and DMAN against slow references."""

import math

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from lra_ponet.configs import base
from lra_ponet.baselines import bpt
from lra_ponet import models
from lra_ponet.errors import UserError
from conftest import tiny_model_config

BATCH, LENGTH, DIM, HEADS = 2, 13, 16, 2


def _inputs(length=LENGTH, masked=True, seed=0):
  rng = np.random.default_rng(seed)
  x_BxLxD = rng.normal(size=(BATCH, length, DIM)).astype(np.float32)
  lengths = [length, length // 2 + 1] if masked else [length, length]
  mask_BxL = np.arange(length)[None] < np.array(lengths)[:, None]
  return x_BxLxD, mask_BxL


def _mixer(name, length=LENGTH, layer_index=0, **fields):
  config = tiny_model_config(name, length=length, dim=DIM, num_heads=HEADS)
  config[name].update(fields)
  mixer = models.mixer_class(name).from_config(
      config, rngs=nnx.Rngs(0, mixer=1), layer_index=layer_index)
  mixer.eval()
  return mixer


def _kernel(linear):
  return np.asarray(linear.kernel[...], np.float64)


def _bias(linear):
  return np.asarray(linear.bias[...], np.float64)


def _affine(linear, x):
  return x @ _kernel(linear) + _bias(linear)


def _softmax(logits):
  logits = np.asarray(logits, np.float64)
  weights = np.exp(logits - logits.max())
  return weights / weights.sum()


def _assert_real_rows_close(actual, expected, mask_BxL, atol=1e-5):
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_allclose(actual[mask_BxL], expected[mask_BxL],
                             rtol=1e-4, atol=atol)


# DMAN.


def _dman_reference(mixer, x_BxLxD, mask_BxL):
  x = np.asarray(x_BxLxD, np.float64)
  batch, length, dim = x.shape
  head_dim = dim // HEADS
  qkv = _affine(mixer.qkv, x)
  query, key, value = np.split(qkv, 3, axis=-1)
  forward = np.asarray(mixer.forward_position[...], np.float64)
  backward = np.asarray(mixer.backward_position[...], np.float64)
  heads = np.asarray(mixer.head[...], np.float64)
  w_ctx = _kernel(mixer.context)[:, 0]
  out = np.zeros_like(x)
  for b in range(batch):
    for h in range(HEADS):
      part = slice(h * head_dim, (h + 1) * head_dim)
      for i in range(length):
        logits = []
        for j in range(length):
          if j < i:
            position = forward[mixer.max_distance - (i - j)]
          elif j > i:
            position = backward[j - i - 1]
          else:
            position = 0.0
          gate = 1 / (1 + math.exp(-(x[b, i] @ w_ctx + position + heads[h])))
          score = query[b, i, part] @ key[b, j, part] / math.sqrt(head_dim)
          logits.append(score + math.log(max(gate, 1e-10)) if mask_BxL[b, j]
                        else -1e30)
        probs = _softmax(logits)
        out[b, i, part] = probs @ value[b, :, part]
  return _affine(mixer.out, np.maximum(out, 0))


@pytest.mark.parametrize('masked', [False, True])
def test_dman_matches_reference(masked):
  mixer = _mixer('dman', max_distance=LENGTH)
  x_BxLxD, mask_BxL = _inputs(masked=masked)
  _assert_real_rows_close(mixer(x_BxLxD, mask_BxL),
                          _dman_reference(mixer, x_BxLxD, mask_BxL), mask_BxL)


def test_dman_mask_depends_on_head_and_distance():
  mixer = _mixer('dman')
  x_BxLxD, _ = _inputs()
  log_mask = np.asarray(mixer.log_mask(x_BxLxD))
  assert not np.allclose(log_mask[:, 0], log_mask[:, 1])
  assert not np.allclose(log_mask[:, :, 3, 2], log_mask[:, :, 3, 4])


def test_dman_refuses_lengths_beyond_its_positions():
  mixer = _mixer('dman', max_distance=4)
  x_BxLxD, mask_BxL = _inputs(length=6)
  with pytest.raises(UserError, match='max_distance=5'):
    mixer(x_BxLxD, mask_BxL)


def test_dman_positions_follow_padded_len_overrides():
  config = ml_collections.ConfigDict(dict(
      padded_len=14, model=base.model_config(
          num_layers=1, dim=DIM, num_heads=HEADS, mlp_dim=8, segment_num=2,
          pooling='cls')))
  models.configure_mixer(config, 'dman')
  config.padded_len = 100
  assert config.model.dman.max_distance == 100


# LSRA.


def _attention_reference(x, mask_BxL, query, key, value, heads):
  """Per-query softmax attention over the real keys; per-head outputs."""
  batch, length, dim = x.shape
  head_dim = dim // heads
  out = np.zeros_like(x)
  for b in range(batch):
    for h in range(heads):
      part = slice(h * head_dim, (h + 1) * head_dim)
      for i in range(length):
        logits = [query[b, i, part] @ key[b, j, part] / math.sqrt(head_dim)
                  if mask_BxL[b, j] else -1e30 for j in range(length)]
        out[b, i, part] = _softmax(logits) @ value[b, :, part]
  return out


def _lsra_reference(mixer, x_BxLxD, mask_BxL, faithful=False):
  x = np.asarray(x_BxLxD, np.float64)
  half = DIM // 2
  xa, xc = x[..., :half], x[..., half:]
  attention = _affine(mixer.attention_out, _attention_reference(
      xa, mask_BxL, _affine(mixer.query, xa), _affine(mixer.key, xa),
      _affine(mixer.value, xa), mixer.attention_heads))
  u = _affine(mixer.conv_in, np.where(mask_BxL[..., None], xc, 0))
  if mixer.glu:
    u = u[..., :half] / (1 + np.exp(-u[..., half:]))
  if not faithful:
    u = np.where(mask_BxL[..., None], u, 0)
  batch, length, channels = u.shape
  size, heads = mixer.kernel_size, mixer.conv_heads
  y = np.zeros_like(u)
  for b in range(batch):
    for t in range(length):
      if mixer.conv_type == 'dynamic':
        raw = (u[b, t] @ _kernel(mixer.taps)).reshape(heads, size)
      else:
        raw = np.asarray(mixer.taps[...], np.float64)
      for c in range(channels):
        taps = _softmax(raw[c // (channels // heads)])
        for k in range(size):
          if 0 <= t + k - size // 2 < length:
            y[b, t, c] += taps[k] * u[b, t + k - size // 2, c]
  return np.concatenate([attention, _affine(mixer.conv_out, y)], axis=-1)


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('conv_type,layer_index', [('dynamic', 1),
                                                   ('lightweight', 0)])
def test_lsra_matches_reference(masked, conv_type, layer_index):
  mixer = _mixer('lsra', layer_index=layer_index, conv_type=conv_type)
  assert mixer.kernel_size == (3, 7)[layer_index]
  x_BxLxD, mask_BxL = _inputs(masked=masked)
  _assert_real_rows_close(mixer(x_BxLxD, mask_BxL),
                          _lsra_reference(mixer, x_BxLxD, mask_BxL), mask_BxL)


@pytest.mark.parametrize('padding', ['fixed', 'faithful'])
def test_lsra_padding_forms(padding):
  mixer = _mixer('lsra', layer_index=1, padding=padding)
  bias = mixer.conv_in.bias
  bias[...] = np.random.default_rng(3).normal(size=bias.shape)
  x_BxLxD, mask_BxL = _inputs()
  out = np.asarray(mixer(x_BxLxD, mask_BxL))
  _assert_real_rows_close(out, _lsra_reference(
      mixer, x_BxLxD, mask_BxL, faithful=padding == 'faithful'), mask_BxL)
  real = mask_BxL[1].sum()
  alone = np.asarray(mixer(x_BxLxD[1:, :real], mask_BxL[1:, :real]))[0]
  # Only the official form lets the padding after a sequence change it.
  assert np.allclose(out[1, :real], alone, atol=1e-5) == (padding == 'fixed')


def test_lsra_needs_a_kernel_size_per_layer():
  with pytest.raises(UserError, match='lsra.kernel_sizes'):
    _mixer('lsra', layer_index=2, kernel_sizes=(3, 7))


def _temp_bytes(mixer, length):
  """Compiled scratch memory of one forward pass at `length` tokens."""
  graphdef, state = nnx.split(mixer)
  x_BxLxD, mask_BxL = _inputs(length=length)
  forward = jax.jit(lambda state, x, mask: nnx.merge(graphdef, state)(x, mask))
  compiled = forward.lower(state, x_BxLxD, mask_BxL).compile()
  return compiled.memory_analysis().temp_size_in_bytes


# Poolingformer.


def _poolingformer_reference(mixer, x_BxLxD, mask_BxL):
  x = np.asarray(x_BxLxD, np.float64)
  batch, length, dim = x.shape
  head_dim = dim // HEADS
  query, key, value = (_affine(layer, x) for layer in
                       (mixer.query1, mixer.key1, mixer.value1))
  level1 = np.zeros_like(x)
  for b in range(batch):
    for h in range(HEADS):
      part = slice(h * head_dim, (h + 1) * head_dim)
      for i in range(length):
        logits = [query[b, i, part] @ key[b, j, part] / math.sqrt(head_dim)
                  if mask_BxL[b, j] and abs(i - j) <= mixer.half1 else -1e30
                  for j in range(length)]
        level1[b, i, part] = _softmax(logits) @ value[b, :, part]
  y = _affine(mixer.out1, level1)
  query, key, value = (_affine(layer, y) for layer in
                       (mixer.query2, mixer.key2, mixer.value2))
  size = mixer.pool_size
  level2 = np.zeros_like(x)
  for b in range(batch):
    windows = [[t for t in range(p * size, min((p + 1) * size, length))
                if mask_BxL[b, t]] for p in range(-(-length // size))]
    for h in range(HEADS):
      part = slice(h * head_dim, (h + 1) * head_dim)
      pooled_keys, pooled_values = [], []
      for members in windows:
        if mixer.pooling == 'mean' or not members:
          weights = np.full(len(members), 1 / max(len(members), 1))
        else:
          logits = _affine(mixer.pool_weights, y[b, members].mean(0))
          start = members[0] // size * size
          weights = _softmax(logits.reshape(HEADS, size)[h][
              [t - start for t in members]])
        pooled_keys.append(weights @ key[b, members, part])
        pooled_values.append(weights @ value[b, members, part])
      for i in range(length):
        logits = [
            query[b, i, part] @ pooled_keys[p] / math.sqrt(head_dim)
            if members and abs(p * size + size // 2 - i) <= mixer.half2
            else -1e30 for p, members in enumerate(windows)]
        level2[b, i, part] = _softmax(logits) @ np.array(pooled_values)
  return y + _affine(mixer.out2, level2)


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('fields', [
    dict(window1=4, window2=8, pool_size=2),
    dict(window1=6, window2=10, pool_size=3, pooling='ldconv'),
    dict()])
def test_poolingformer_matches_reference(masked, fields):
  mixer = _mixer('poolingformer', **fields)
  x_BxLxD, mask_BxL = _inputs(masked=masked)
  _assert_real_rows_close(
      mixer(x_BxLxD, mask_BxL),
      _poolingformer_reference(mixer, x_BxLxD, mask_BxL), mask_BxL)


def test_poolingformer_memory_is_linear_in_length():
  mixer = _mixer('poolingformer', window1=8, window2=32, pool_size=4)
  ratio = _temp_bytes(mixer, 1024) / _temp_bytes(mixer, 256)
  assert 3 < ratio < 5


# BP-Transformer.


def _official_bpt_edges(length, k, clip, drop_aliased=False):
  """(src, dst, type) of `BinaryPartition.build_graph`, triu=False.

  `drop_aliased` leaves out the overlap children one past the end of their
  level, which the official builder turns into the next level's first node.
  """
  sizes, n = [], length
  while n >= 2:
    sizes.append(n)
    n = (n + 1) >> 1
  sizes.append(1)
  shift = [sum(sizes[:j]) for j in range(len(sizes))]
  edges = []
  for i in range(length):
    v, offset = i, 0
    l_ptr, r_ptr, l_overlap, r_overlap = v - 1, v + 1, False, False
    for j in range(len(sizes)):
      for kk in range(k):
        if r_ptr < sizes[j]:
          src = (shift[j - 1] + (r_ptr << 1) + 1 if r_overlap
                 else shift[j] + r_ptr)
          if not (drop_aliased and r_overlap
                  and (r_ptr << 1) + 1 >= sizes[j - 1]):
            edges.append((src, i, (2 * k + 1) * min(j, clip) + 2 * (kk + 1)))
          r_overlap = False
        r_ptr += 1
        if l_ptr >= 0:
          src = shift[j - 1] + (l_ptr << 1) if l_overlap else shift[j] + l_ptr
          edges.append((src, i, (2 * k + 1) * min(j, clip) + 2 * kk + 1))
          l_overlap = False
        l_ptr -= 1
      if l_ptr & 1 == 0:
        l_overlap = True
      if r_ptr & 1 == 1:
        r_overlap = True
      r_ptr >>= 1
      l_ptr >>= 1
      edges.append((i, offset + v, (2 * k + 1) * min(j, clip)))
      offset += sizes[j]
      v >>= 1
  return edges, sizes


def _bpt_reference(mixer, x_BxLxD, mask_BxL, drop_aliased):
  """Per-example official graph on the real length; leaf queries only."""
  x = np.asarray(x_BxLxD, np.float64)
  batch, length, dim = x.shape
  head_dim = dim // HEADS
  query, key, value = (x @ _kernel(layer) for layer in
                       (mixer.query, mixer.key, mixer.value))
  edge_types = np.asarray(mixer.edge_types[...], np.float64)
  out = np.zeros_like(x)
  for b in range(batch):
    real = int(mask_BxL[b].sum())
    edges, sizes = _official_bpt_edges(real, mixer.k, mixer.clip,
                                       drop_aliased)
    spans = [(j, p) for j, size in enumerate(sizes) for p in range(size)]
    for h in range(HEADS):
      part = slice(h * head_dim, (h + 1) * head_dim)
      for i in range(real):
        logits, values = [], []
        for src, dst, etype in edges:
          if dst != i:
            continue
          level, p = spans[src]
          leaves = list(range(p << level, min((p + 1) << level, real)))
          logits.append(query[b, i, part] @ (
              key[b, leaves, part].mean(0) + edge_types[etype]) / math.sqrt(
                  head_dim))
          values.append(value[b, leaves, part].mean(0))
        out[b, i, part] = _softmax(logits) @ np.array(values)
  return out @ _kernel(mixer.out)


@pytest.mark.parametrize('length', [1, 2, 5, 8, 13])
def test_bpt_graph_is_the_official_one(length):
  nodes, types, valid, _ = bpt.partition_graph(length, 2, 1)
  edges, _ = _official_bpt_edges(length, 2, 1)
  for i in range(length):
    official = sorted((src, etype) for src, dst, etype in edges if dst == i)
    ours = sorted(zip(nodes[i][valid[i]], types[i][valid[i]]))
    assert ours == official
  assert valid.shape[1] <= 1 + 2 * 2 * max(1, math.ceil(math.log2(length)))


@pytest.mark.parametrize('length,masked,drop_aliased', [
    (16, False, False), (13, False, True), (13, True, True)])
def test_bpt_matches_reference(length, masked, drop_aliased):
  mixer = _mixer('bpt', length=length, k=2, clip=1)
  x_BxLxD, mask_BxL = _inputs(length=length, masked=masked)
  _assert_real_rows_close(
      mixer(x_BxLxD, mask_BxL),
      _bpt_reference(mixer, x_BxLxD, mask_BxL, drop_aliased), mask_BxL)


def test_bpt_drops_the_official_alias_past_a_level_end():
  # At 5 real tokens (k=1) the official builder names the node one past a
  # level's end, i.e. the next level's first node; the masked form drops
  # that edge (bpt.py), so it follows the reference without the alias.
  official = set(_official_bpt_edges(5, 1, 5)[0])
  assert official - set(_official_bpt_edges(5, 1, 5, drop_aliased=True)[0])
  mixer = _mixer('bpt', length=8, k=1, clip=5)
  x_BxLxD, mask_BxL = _inputs(length=8)  # Real lengths 8 and 5.
  mixed = np.asarray(mixer(x_BxLxD, mask_BxL))
  _assert_real_rows_close(
      mixed, _bpt_reference(mixer, x_BxLxD, mask_BxL, drop_aliased=True),
      mask_BxL)
  aliased = _bpt_reference(mixer, x_BxLxD, mask_BxL, drop_aliased=False)
  assert not np.allclose(mixed[1, :5], aliased[1, :5], rtol=1e-4, atol=1e-5)


def test_bpt_memory_is_k_n_log_n():
  mixer = _mixer('bpt', k=2)
  ratio = _temp_bytes(mixer, 1024) / _temp_bytes(mixer, 256)
  # 4x the tokens, each with 1 + 2k log2(L) keys: 4 * 41 / 33 = 5.0.
  assert 3 < ratio < 6

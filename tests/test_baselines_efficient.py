"""Efficient-attention and state-space mixers against slow references.

Each reference is written from the published formula with explicit loops
over queries and keys (or over time), in float64 numpy, and shares only the
parameters with the mixer under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lra_ponet import tasks
from lra_ponet.baselines import nystromformer
from lra_ponet import models
from lra_ponet import optim
from lra_ponet.errors import UserError
from lra_ponet.input_pipeline import TaskInfo
from conftest import tiny_model_config

DIM, HEADS, LENGTH = 16, 2, 12


def _batch(masked, seed=0, length=LENGTH):
  """x_BxLxD and a mask: all real, or the second example 7 tokens long."""
  rng = np.random.default_rng(seed)
  x_BxLxD = rng.normal(size=(2, length, DIM)).astype(np.float32)
  lengths = np.array([length, 7 if masked else length])
  return x_BxLxD, np.arange(length)[None] < lengths[:, None]


def _project(linear, x):
  return (np.asarray(x, np.float64) @ np.asarray(linear.kernel[...], np.float64)
          + np.asarray(linear.bias[...], np.float64))


def _heads(linear, x_LxD):
  """Per-head rows: H x L x d."""
  return _project(linear, x_LxD).reshape(len(x_LxD), HEADS, -1).transpose(
      1, 0, 2)


def _merge(out, heads_HxLxd):
  return _project(out, heads_HxLxd.transpose(1, 0, 2).reshape(
      heads_HxLxd.shape[1], -1))


def _mixer(name, length=LENGTH, **fields):
  config = tiny_model_config(name, length=length)
  config[name].update(fields)
  rngs = nnx.Rngs(0, mixer=1)
  shared = models.shared_mixer_params(config, length, rngs=rngs) or {}
  return config, models.mixer_class(name).from_config(config, rngs=rngs,
                                                      **shared)


@pytest.mark.parametrize('masked', [False, True])
def test_linear_transformer_matches_kernel_sums(masked):
  _, mixer = _mixer('linear_transformer')
  x_BxLxD, mask_BxL = _batch(masked)
  phi = lambda t: np.where(t > 0, t + 1, np.exp(t))
  expected = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    q, k, v = (_heads(layer, x_LxD)
               for layer in (mixer.query, mixer.key, mixer.value))
    out = np.zeros_like(q)
    for h in range(HEADS):
      for l in range(LENGTH):
        weights = [phi(q[h, l]) @ phi(k[h, n]) for n in range(LENGTH)
                   if mask_L[n]]
        values = [v[h, n] for n in range(LENGTH) if mask_L[n]]
        out[h, l] = np.dot(weights, values) / (sum(weights) + 1e-6)
    expected.append(_merge(mixer.out, out))
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL), np.stack(expected),
                             rtol=1e-4, atol=1e-5)


def _performer_reference(mixer, x_BxLxD, mask_BxL, stabilizer):
  """Per-pair kernel sums with the mixer's own random features W."""
  w = np.asarray(mixer.features[...], np.float64)
  r = len(w)
  dash, diag = {}, {}
  for b, (x_LxD, mask_L) in enumerate(zip(x_BxLxD, mask_BxL)):
    d = DIM // HEADS
    for name, layer in (('q', mixer.query), ('k', mixer.key)):
      rows = _heads(layer, x_LxD) / np.sqrt(d)
      if name == 'k':
        rows = rows * mask_L[None, :, None]
      dash[name, b] = rows @ w.T
      diag[name, b] = 0.5 * (rows ** 2).sum(-1, keepdims=True)
  key_max = {b: dash['k', b].max(axis=(1, 2), keepdims=True)
             for b in range(len(x_BxLxD))}
  if stabilizer == 'batch':
    key_max = {b: max(m.max() for m in key_max.values()) for b in key_max}
  expected = []
  for b, (x_LxD, mask_L) in enumerate(zip(x_BxLxD, mask_BxL)):
    phi_q = (np.exp(dash['q', b] - diag['q', b]
                    - dash['q', b].max(-1, keepdims=True)) + 1e-4) / r ** .5
    phi_k = (np.exp(dash['k', b] - diag['k', b] - key_max[b]) + 1e-4) / r ** .5
    v = _heads(mixer.value, x_LxD) * mask_L[None, :, None]
    out = np.zeros_like(v)
    for h in range(HEADS):
      for l in range(LENGTH):
        weights = [phi_q[h, l] @ phi_k[h, n] for n in range(LENGTH)]
        out[h, l] = np.dot(weights, v[h]) / sum(weights)
    expected.append(_merge(mixer.out, out))
  return np.stack(expected)


@pytest.mark.parametrize('stabilizer', ['per_example', 'batch'])
@pytest.mark.parametrize('masked', [False, True])
def test_performer_matches_kernel_sums(masked, stabilizer):
  _, mixer = _mixer('performer', num_features=24, stabilizer=stabilizer)
  x_BxLxD, mask_BxL = _batch(masked)
  np.testing.assert_allclose(
      mixer(x_BxLxD, mask_BxL),
      _performer_reference(mixer, x_BxLxD, mask_BxL, stabilizer),
      rtol=1e-4, atol=1e-5)


def test_performer_estimates_softmax_with_scale_one_over_d():
  _, mixer = _mixer('performer', num_features=8192)
  x_BxLxD, mask_BxL = _batch(masked=True)
  expected = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    q, k, v = (_heads(layer, x_LxD)
               for layer in (mixer.query, mixer.key, mixer.value))
    logits = np.einsum('hld,hnd->hln', q, k * mask_L[None, :, None]) / 8
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected.append(_merge(mixer.out, probs @ (v * mask_L[None, :, None])))
  # About 0.09 off with these features; exp(q . k / sqrt(d)) is 0.7 off.
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL), np.stack(expected),
                             atol=0.15)


def test_performer_features_orthogonal_and_redrawn_per_step():
  _, fixed = _mixer('performer', num_features=20)
  w = np.asarray(fixed.features[...])
  gram = w[:8] @ w[:8].T
  np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-4)
  assert 'features' not in nnx.state(fixed, nnx.Param)
  x_BxLxD, mask_BxL = _batch(masked=True)
  np.testing.assert_array_equal(fixed(x_BxLxD, mask_BxL),
                                fixed(x_BxLxD, mask_BxL))
  _, redrawn = _mixer('performer', num_features=20, redraw='per_step')
  assert not np.allclose(redrawn(x_BxLxD, mask_BxL),
                         redrawn(x_BxLxD, mask_BxL))


def _softmax_rows(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def _nystrom_reference(mixer, x_BxLxD, mask_BxL, m, landmarks, pinv_init):
  """The official formula with loops over segments, taps and iterations."""
  length = x_BxLxD.shape[1]
  d = DIM // HEADS
  parts = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    q, k, v = (_heads(layer, x_LxD)
               for layer in (mixer.query, mixer.key, mixer.value))
    q, k = (t * mask_L[None, :, None] / d ** 0.25 for t in (q, k))
    c = -(-length // m)
    qt, kt = np.zeros((HEADS, m, d)), np.zeros((HEADS, m, d))
    for j in range(m):
      rows = range(j * c, min((j + 1) * c, length))
      count = c if landmarks == 'padded' else max(
          sum(mask_L[i] for i in rows), 1)
      qt[:, j] = sum((q[:, i] for i in rows), np.zeros((HEADS, d))) / count
      kt[:, j] = sum((k[:, i] for i in rows), np.zeros((HEADS, d))) / count
    fill = -1e9 * (1 - mask_L)
    parts.append((q, k, v, mask_L, qt, kt,
                  _softmax_rows(q @ kt.transpose(0, 2, 1)),
                  _softmax_rows(qt @ kt.transpose(0, 2, 1)),
                  _softmax_rows(qt @ k.transpose(0, 2, 1) + fill)))
  column_max = [p[7].sum(axis=1).max(axis=-1) for p in parts]  # per head
  if pinv_init == 'batch':
    column_max = [np.full(HEADS, max(c.max() for c in column_max))] * len(
        parts)
  taps = np.asarray(mixer.conv[...], np.float64)
  half = taps.shape[1] // 2
  expected = []
  for (q, k, v, mask_L, _, _, a1, a2, a3), scale in zip(parts, column_max):
    out = np.zeros_like(v)
    for h in range(HEADS):
      z = a2[h].T / scale[h]
      for _ in range(6):
        kz = a2[h] @ z
        eye = np.eye(m)
        z = 0.25 * z @ (13 * eye - kz @ (15 * eye - kz @ (7 * eye - kz)))
      out[h] = (a1[h] @ z) @ (a3[h] @ v[h])
      for l in range(length):
        for t in range(taps.shape[1]):
          if 0 <= l + t - half < length:
            out[h, l] += taps[h, t] * v[h, l + t - half] * mask_L[l + t - half]
    expected.append(_merge(mixer.out, out))
  return np.stack(expected)


@pytest.mark.parametrize('landmarks,pinv_init', [('padded', 'batch'),
                                                 ('real_tokens',
                                                  'per_example')])
@pytest.mark.parametrize('length', [12, 14])
@pytest.mark.parametrize('masked', [False, True])
def test_nystromformer_matches_official_formula(masked, length, landmarks,
                                                pinv_init):
  _, mixer = _mixer('nystromformer', length=length, num_landmarks=4,
                    conv_kernel_size=5, landmarks=landmarks,
                    pinv_init=pinv_init)
  x_BxLxD, mask_BxL = _batch(masked, length=length)
  np.testing.assert_allclose(
      mixer(x_BxLxD, mask_BxL),
      _nystrom_reference(mixer, x_BxLxD, mask_BxL, 4, landmarks, pinv_init),
      rtol=1e-4, atol=1e-5)


def test_nystromformer_is_exact_attention_when_every_token_is_a_landmark():
  _, mixer = _mixer('nystromformer', num_landmarks=LENGTH,
                    conv_kernel_size=0)
  x_BxLxD, mask_BxL = _batch(masked=True)
  expected = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    q, k, v = (_heads(layer, x_LxD)
               for layer in (mixer.query, mixer.key, mixer.value))
    # The official code zeroes padding queries too.
    logits = (q * mask_L[None, :, None]) @ k.transpose(0, 2, 1) / np.sqrt(
        DIM // HEADS)
    expected.append(_merge(mixer.out, _softmax_rows(
        np.where(mask_L, logits, -1e9)) @ v))
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL), np.stack(expected),
                             rtol=1e-4, atol=1e-5)


def test_nystromformer_pinv_converges_to_the_pseudo_inverse():
  rng = np.random.default_rng(0)
  matrix = _softmax_rows(rng.normal(size=(1, 2, 6, 6)))
  np.testing.assert_allclose(
      nystromformer.iterative_pinv(matrix.astype(np.float32), 20,
                                   per_example=True),
      np.linalg.pinv(matrix), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('masked', [False, True])
def test_linformer_matches_projected_attention(masked):
  _, mixer = _mixer('linformer', k=5)
  x_BxLxD, mask_BxL = _batch(masked)
  e = np.asarray(mixer.projection[...], np.float64)
  expected = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    q, k, v = (_heads(layer, x_LxD)
               for layer in (mixer.query, mixer.key, mixer.value))
    out = np.zeros_like(q)
    for h in range(HEADS):
      keys = [sum(e[h, p, n] * mask_L[n] * k[h, n] for n in range(LENGTH))
              for p in range(5)]
      values = [sum(e[h, p, n] * mask_L[n] * v[h, n] for n in range(LENGTH))
                for p in range(5)]
      for l in range(LENGTH):
        out[h, l] = _softmax_rows(
            np.array([q[h, l] @ key for key in keys]) / np.sqrt(DIM // HEADS)
        ) @ np.array(values)
    expected.append(_merge(mixer.out, out))
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL), np.stack(expected),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('pooling,positions', [('mean', 14), ('cls', 15)])
def test_linformer_one_projection_for_the_model(pooling, positions):
  config = tiny_model_config('linformer', pooling=pooling)
  model = models.build_model(config, TaskInfo('t', 5, 32, paired=True), 14,
                             rngs=nnx.Rngs(0))
  first, second = (block.mixer for block in model.encoder.blocks)
  assert first.projection is second.projection
  assert first.projection.shape == (HEADS, 256, positions)
  transformer = models.build_model(
      tiny_model_config('transformer', pooling=pooling),
      TaskInfo('t', 5, 32, paired=True), 14, rngs=nnx.Rngs(0))
  # Same projections as the Transformer's, plus E counted once.
  assert models.count_params(model) == (models.count_params(transformer)
                                        + HEADS * 256 * positions)
  with pytest.raises(UserError, match='longer than the Linformer projection'):
    first(np.zeros((1, positions + 1, DIM), np.float32),
          np.ones((1, positions + 1), bool))


@pytest.mark.parametrize('name,fields', [
    ('linear_transformer', {}),
    ('performer', dict(num_features=12)),
    ('nystromformer', dict(num_landmarks=4, conv_kernel_size=5)),
    ('linformer', dict(k=5)),
    ('s4d', dict(state_dim=8)),
])
def test_padding_content_never_reaches_real_positions(name, fields):
  _, mixer = _mixer(name, **fields)
  x_BxLxD, mask_BxL = _batch(masked=True)
  noise = np.random.default_rng(3).normal(size=x_BxLxD.shape) * 5
  other_BxLxD = np.where(mask_BxL[..., None], x_BxLxD, noise).astype(
      np.float32)
  assert models.mixer_class(name).masks_padding
  np.testing.assert_allclose(
      np.where(mask_BxL[..., None], mixer(other_BxLxD, mask_BxL), 0),
      np.where(mask_BxL[..., None], mixer(x_BxLxD, mask_BxL), 0),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('masked', [False, True])
def test_s4d_matches_the_recurrence(masked):
  _, mixer = _mixer('s4d', state_dim=8)
  x_BxLxD, mask_BxL = _batch(masked)
  dt = np.exp(np.asarray(mixer.log_dt[...], np.float64))[:, None]
  a = (-np.exp(np.asarray(mixer.log_a_real[...], np.float64))
       + 1j * np.asarray(mixer.a_imag[...], np.float64))
  c = np.asarray(mixer.c[...], np.float64)
  c_forward, c_backward = c[..., 0] + 1j * c[..., 1]
  decay, gain = np.exp(dt * a), (np.exp(dt * a) - 1) / a  # Both D x N.
  expected = []
  for x_LxD, mask_L in zip(x_BxLxD, mask_BxL):
    u = x_LxD * mask_L[:, None]
    y = u * np.asarray(mixer.skip[...])
    state = np.zeros_like(a)
    for t in range(LENGTH):  # Up to and including t.
      state = decay * state + gain * u[t][:, None]
      y[t] += 2 * (c_forward * state).sum(-1).real
    state = np.zeros_like(a)
    for t in reversed(range(LENGTH)):  # Strictly after t.
      y[t] += 2 * (c_backward * state).sum(-1).real
      state = decay * state + gain * u[t][:, None]
    gelu = 0.5 * y * (1 + np.vectorize(math.erf)(y / np.sqrt(2)))
    hidden = _project(mixer.output, gelu)
    expected.append(hidden[:, :DIM] / (1 + np.exp(-hidden[:, DIM:])))
  np.testing.assert_allclose(mixer(x_BxLxD, mask_BxL), np.stack(expected),
                             rtol=1e-4, atol=1e-5)


def test_s4d_state_space_parameters_get_their_own_lr_and_weight_decay():
  config = tasks.get_config('listops', 'ponet', 's4d')
  config.model.update(num_layers=1, dim=8, mlp_dim=16)
  config.model.s4d.state_dim = 4
  config.weight_decay = 0.5
  assert config.model.s4d.ssm.to_dict() == dict(learning_rate=1e-3,
                                                weight_decay=0.0)
  model = models.build_model(config.model, TaskInfo('t', 5, 32), 16,
                             rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config),
                            wrt=nnx.Param)
  before = nnx.state(model.encoder.blocks[0].mixer, nnx.Param)
  before = {name: np.asarray(value[...]) for name, value in before.items()
            if name != 'output'}
  optimizer.update(model, jax.tree.map(jnp.ones_like,
                                       nnx.state(model, nnx.Param)))
  mixer = model.encoder.blocks[0].mixer
  # Adam's first step moves every parameter by the learning rate, which the
  # one-cycle schedule starts at peak / 25; AdamW adds lr * wd * parameter.
  for name in ('log_dt', 'log_a_real', 'a_imag'):
    np.testing.assert_allclose(before[name] - getattr(mixer, name)[...],
                               1e-3 / 25, rtol=0, atol=1e-6)
  for name in ('c', 'skip'):
    np.testing.assert_allclose(before[name] - getattr(mixer, name)[...],
                               1e-4 / 25 * (1 + 0.5 * before[name]),
                               rtol=0, atol=1e-7)

"""Efficient-attention and state-space mixers against slow references.

Each reference is written from the published formula with explicit loops
over queries and keys (or over time), in float64 numpy, and shares only the
parameters with the mixer under test.
"""

import numpy as np
import pytest
from flax import nnx

from lra_ponet import models
from tests.test_models import tiny_model_config

DIM, HEADS, LENGTH = 16, 2, 12


def _batch(masked, seed=0, length=LENGTH):
  """x_BxLxD and a mask: all real, or 12 and 7 real tokens."""
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
  return config, models.mixer_class(name).from_config(
      config, rngs=nnx.Rngs(0, mixer=1))


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

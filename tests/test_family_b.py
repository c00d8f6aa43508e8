"""Cluster-Former, DeepPyramidion and LSTR against slow references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lra_ponet import tasks
from lra_ponet.baselines import cluster_former
from lra_ponet.baselines import lstr
from lra_ponet.baselines import pyramidion
from lra_ponet import checkpoint
from lra_ponet import models
from lra_ponet import steps
from lra_ponet.errors import UserError
from lra_ponet.input_pipeline import TaskInfo
from tests.test_models import tiny_model_config

LENGTHS = [14, 9, 3]


def _inputs(length=14, dim=16, seed=0, lengths=LENGTHS):
  rng = np.random.default_rng(seed)
  x_BxLxD = rng.normal(size=(len(lengths), length, dim)).astype(np.float32)
  mask_BxL = np.arange(length)[None] < np.array(lengths)[:, None]
  return x_BxLxD, mask_BxL


def _dense_attention(mixer, x_LxD, allowed_LxL):
  """Plain masked softmax attention with the mixer's projections, in numpy."""
  def project(linear, x):
    return x @ np.asarray(linear.kernel[...]) + np.asarray(linear.bias[...])

  heads = mixer.num_heads
  length, dim = x_LxD.shape
  q, k, v = (project(p, x_LxD).reshape(length, heads, -1).transpose(1, 0, 2)
             for p in (mixer.query, mixer.key, mixer.value))
  logits = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
  logits = np.where(allowed_LxL[None], logits, -1e30)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  mixed = (probs @ v).transpose(1, 0, 2).reshape(length, dim)
  return project(mixer.out, mixed)


def _cluster_mixer(layer_index, **own):
  config = tiny_model_config('cluster_former')
  config.cluster_former.update(own)
  mixer = cluster_former.ClusterFormerAttention.from_config(
      config, rngs=nnx.Rngs(0), layer_index=layer_index)
  mixer.eval()
  return mixer


@pytest.mark.parametrize('lengths', [[14, 14, 14], LENGTHS])
@pytest.mark.parametrize('window', [2, 5, 40])
def test_window_layer_matches_dense_band(lengths, window):
  mixer = _cluster_mixer(0, window=window)
  assert not mixer.clustered
  x_BxLxD, mask_BxL = _inputs(lengths=lengths)
  got = np.asarray(mixer(x_BxLxD, mask_BxL))
  for b, real in enumerate(lengths):
    allowed = np.zeros((14, 14), bool)
    for i in range(14):
      for j in range(real):
        allowed[i, j] = abs(i - j) <= window // 2
    want = _dense_attention(mixer, x_BxLxD[b], allowed)
    np.testing.assert_allclose(got[b, :real], want[:real], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('lengths', [[14, 14, 14], LENGTHS])
@pytest.mark.parametrize('chunk_size', [4, 14])
def test_cluster_layer_matches_loop_reference(lengths, chunk_size):
  mixer = _cluster_mixer(1, num_clusters=3, chunk_size=chunk_size)
  assert mixer.clustered
  x_BxLxD, mask_BxL = _inputs(lengths=lengths)
  got = np.asarray(mixer(x_BxLxD, mask_BxL))
  centroids = np.asarray(mixer.centroids[...])
  for b, real in enumerate(lengths):
    cluster = []
    for i in range(14):
      if i >= real:
        cluster.append(3)
        continue
      h = x_BxLxD[b, i] / np.linalg.norm(x_BxLxD[b, i])
      cosines = [h @ c / np.linalg.norm(c) for c in centroids]
      cluster.append(int(np.argmax(cosines)))
    order = sorted(range(14), key=lambda i: (cluster[i], i))
    allowed = np.zeros((14, 14), bool)
    for rank_i, i in enumerate(order):
      for rank_j, j in enumerate(order):
        same_chunk = rank_i // chunk_size == rank_j // chunk_size
        allowed[i, j] = same_chunk and j < real
    want = _dense_attention(mixer, x_BxLxD[b], allowed)
    np.testing.assert_allclose(got[b, :real], want[:real], rtol=1e-5,
                               atol=1e-5)
  assert len(set(cluster[:real])) > 1  # The test clusters for real.


def test_layers_alternate_window_and_cluster():
  config = tiny_model_config('cluster_former', num_layers=4)
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  assert [block.mixer.clustered for block in model.encoder.blocks] == [
      False, True, False, True]


def _tiny_train_config(name):
  config = tasks.get_config('listops', 'ponet', name)
  config.update(dict(max_len=14, padded_len=14, warmup_steps=1,
                     train_steps=10))
  config.model.update(dict(num_layers=2, dim=16, num_heads=2, mlp_dim=32))
  return config


def _batch():
  rng = np.random.default_rng(0)
  _, mask_BxL = _inputs()
  inputs = np.where(mask_BxL, rng.integers(1, 20, (3, 14)), 0)
  return {'inputs': jnp.asarray(inputs, jnp.int32),
          'label': jnp.array([0, 3, 4])}


def _centroids(graphdef, state):
  model, _ = nnx.merge(graphdef, state)
  return np.asarray(
      jax.tree.leaves(nnx.state(model, cluster_former.Centroids))[0])


def test_centroids_are_state_updated_only_in_training(tmp_path):
  config = _tiny_train_config('cluster_former')
  graphdef, eval_graphdef, state = steps.create_train_state(
      config, TaskInfo('t', 10, 32))
  model, _ = nnx.merge(graphdef, state)
  assert not jax.tree.leaves(
      nnx.state(nnx.state(model, nnx.Param), cluster_former.Centroids))
  before = _centroids(graphdef, state)
  batch = _batch()

  evaluated, optimizer = nnx.merge(eval_graphdef, state)
  evaluated(batch['inputs'], batch['inputs'] > 0)
  np.testing.assert_array_equal(
      _centroids(eval_graphdef, nnx.state((evaluated, optimizer))), before)

  step = jax.jit(steps.make_train_step(graphdef, True))
  state, metrics = step(state, batch)
  assert np.isfinite(metrics['loss'])
  after = _centroids(graphdef, state)
  # Only the clusters that received real tokens moved.
  moved = ~np.all(after == before, axis=1)
  assert 0 < moved.sum() < len(before)

  saver = checkpoint.Checkpoints(tmp_path, keep=1)
  saver.save(1, state, state[0], {})
  _, restored, _, _ = saver.restore_latest(state, state[0])
  saver.close()
  np.testing.assert_array_equal(_centroids(graphdef, restored), after)


def _reference_halving(x_LxD, score_L, mask_L, rounds, base=20,
                       flip_right=True, sort_back=False):
  """A per-example loop port of `our_topk`, padding excluded from pairs."""
  x, score, mask = list(x_LxD), list(score_L), list(mask_L)
  for _ in range(rounds):
    if len(score) % 2:
      x, score, mask = x + [0 * x[0]], score + [1e-5], mask + [False]
    order = sorted(range(len(score)),
                   key=lambda i: (not mask[i], -score[i], i))
    top, rest = order[:len(order) // 2], order[len(order) // 2:]
    if flip_right:
      rest = rest[::-1]
    merged = []
    for best, worst in zip(top, rest):
      members = [i for i in (best, worst) if mask[i]] or [best, worst]
      weights = np.array([np.exp(base ** score[i]) for i in members])
      weights /= weights.sum()
      merged.append((sum(w * x[i] for w, i in zip(weights, members)),
                     sum(w * score[i] for w, i in zip(weights, members)),
                     mask[best] or mask[worst], best))
    if sort_back:
      merged.sort(key=lambda item: item[3])
    x, score, mask, _ = map(list, zip(*merged))
  return np.array(x), np.array(mask)


@pytest.mark.parametrize('lengths', [[16, 16, 16], [16, 11, 3]])
@pytest.mark.parametrize('width,rounds,flip_right,sort_back', [
    (4, 2, True, False), (None, 1, True, False), (2, 3, False, True),
    (16, 0, True, False)])
def test_topk_pool_matches_loop_reference(lengths, width, rounds, flip_right,
                                          sort_back):
  pool = pyramidion.TopKPool(16, rngs=nnx.Rngs(0), width=width,
                             keeps_first=False, flip_right=flip_right,
                             sort_back=sort_back)
  x_BxLxD, mask_BxL = _inputs(length=16, lengths=lengths)
  logits = x_BxLxD @ np.asarray(pool.scorer.kernel[...])[:, 0]
  score_BxL = 1 / (1 + np.exp(-(logits + float(pool.scorer.bias[0])))) + 1e-5
  got_x, got_mask = map(np.asarray, pool(x_BxLxD, mask_BxL))
  assert got_x.shape == (3, 16 // 2 ** rounds, 16)
  for b in range(3):
    want_x, want_mask = _reference_halving(
        x_BxLxD[b], score_BxL[b], mask_BxL[b], rounds, flip_right=flip_right,
        sort_back=sort_back)
    np.testing.assert_array_equal(got_mask[b], want_mask)
    np.testing.assert_allclose(got_x[b][want_mask], want_x[want_mask],
                               rtol=1e-5, atol=1e-5)


def test_cls_pooling_has_no_pooling_after_the_last_layer():
  config = tiny_model_config('pyramidion', pooling='cls')
  model = models.build_model(config, TaskInfo('t', 5, 32), 14,
                             rngs=nnx.Rngs(0))
  assert [block.pool is None for block in model.encoder.blocks] == [
      False, True]


def test_odd_lengths_gain_a_padding_row_and_cls_stays_first():
  pool = pyramidion.TopKPool(16, rngs=nnx.Rngs(0), width=None,
                             keeps_first=True)
  x_BxLxD, mask_BxL = _inputs(length=14, lengths=LENGTHS)
  pooled_BxWxD, pooled_BxW = pool(x_BxLxD, mask_BxL)
  # 13 tokens after the CLS token -> 7 (one padding row added).
  assert pooled_BxWxD.shape == (3, 8, 16)
  np.testing.assert_array_equal(pooled_BxWxD[:, 0], x_BxLxD[:, 0])
  # min(real, 7) real tokens survive, after the CLS token.
  np.testing.assert_array_equal(pooled_BxW.sum(1), [8, 8, 3])
  assert pyramidion.halvings(14, 2) == 3
  with pytest.raises(UserError, match='cannot be reached'):
    pyramidion.halvings(14, 5)


@pytest.mark.parametrize('lengths', [[14, 14, 14], LENGTHS])
def test_blockwise_attention_matches_dense_blocks(lengths):
  config = tiny_model_config('pyramidion')
  config.pyramidion.chunk_size = 4
  mixer = pyramidion.PyramidionAttention.from_config(config,
                                                     rngs=nnx.Rngs(0))
  mixer.eval()
  x_BxLxD, mask_BxL = _inputs(lengths=lengths)
  got = np.asarray(mixer(x_BxLxD, mask_BxL))
  for b, real in enumerate(lengths):
    allowed = np.zeros((14, 14), bool)
    for i in range(14):
      for j in range(real):
        allowed[i, j] = i // 4 == j // 4
    want = _dense_attention(mixer.attention, x_BxLxD[b], allowed)
    np.testing.assert_allclose(got[b, :real], want[:real], rtol=1e-5,
                               atol=1e-5)


def test_gradients_reach_every_scorer():
  config = tiny_model_config('pyramidion')
  config.pyramidion.widths = '7,2'  # Two halvings in the second layer.
  model = models.build_model(config, TaskInfo('t', 10, 32), 14,
                             rngs=nnx.Rngs(0))
  batch = _batch()

  def loss_fn(model):
    logits = model(batch['inputs'], batch['inputs'] > 0)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']).mean()

  grads = nnx.jit(nnx.grad(loss_fn))(model)
  pools = [block['pool'] for block in grads['encoder']['blocks'].values()
           if 'pool' in block]
  assert len(pools) == 2
  for pool in pools:
    kernel = np.asarray(pool['scorer']['kernel'][...])
    assert np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 0


def _scorer_leaves(model_state):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(model_state)
          if 'scorer' in jax.tree_util.keystr(path)}


def test_pyramid_train_step_updates_every_scorer():
  config = _tiny_train_config('pyramidion')
  config.model.pyramidion.widths = '7,2'
  graphdef, _, state = steps.create_train_state(config, TaskInfo('t', 10, 32))
  before = _scorer_leaves(state[0])
  step = jax.jit(steps.make_train_step(graphdef, True))
  for _ in range(2):  # The schedule's first step has learning rate 0.
    state, metrics = step(state, _batch())
  after = _scorer_leaves(state[0])
  assert np.isfinite(metrics['loss']) and np.isfinite(metrics['grad_norm'])
  assert metrics['learning_rate'] > 0
  # Both layers pool (widths 7, then 2), so both scorers have a kernel.
  assert sum('kernel' in path for path in before) == 2
  for path, value in before.items():
    assert not np.array_equal(after[path], value), path


def test_malformed_widths_and_stages_are_refused():
  config = tiny_model_config('pyramidion')
  for widths in ('7', '7,x', '7,0'):
    config.pyramidion.widths = widths
    with pytest.raises(UserError, match='one positive width per layer'):
      models.build_model(config, TaskInfo('t', 5, 32), 14, rngs=nnx.Rngs(0))
  config = tiny_model_config('lstr')
  config.lstr.stages = '16x1,32'
  with pytest.raises(UserError, match="e.g. '16x1,32x2'"):
    lstr.LSTRMixer.from_config(config, rngs=nnx.Rngs(0))


def _np_attention(attention, x_QxD, memory_MxD, memory_mask_M):
  allowed = np.broadcast_to(memory_mask_M[None], (len(x_QxD), len(memory_MxD)))
  heads = attention.num_heads

  def project(linear, x):
    return x @ np.asarray(linear.kernel[...]) + np.asarray(linear.bias[...])

  def split(x):
    return x.reshape(len(x), heads, -1).transpose(1, 0, 2)

  q = split(project(attention.query, x_QxD))
  k = split(project(attention.key, memory_MxD))
  v = split(project(attention.value, memory_MxD))
  logits = np.where(allowed[None], q @ k.transpose(0, 2, 1)
                    / np.sqrt(q.shape[-1]), -1e30)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return project(attention.out,
                 (probs @ v).transpose(1, 0, 2).reshape(len(x_QxD), -1))


def _np_norm(norm, x):
  centred = x - x.mean(-1, keepdims=True)
  scaled = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
  return scaled * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])


@pytest.mark.parametrize('lengths', [[14, 14, 14], LENGTHS])
def test_lstr_matches_latent_reference(lengths):
  config = tiny_model_config('lstr')
  config.lstr.stages = '3x1,5x2'
  mixer = lstr.LSTRMixer.from_config(config, rngs=nnx.Rngs(0))
  mixer.eval()
  x_BxLxD, mask_BxL = _inputs(lengths=lengths)
  got = np.asarray(mixer(x_BxLxD, mask_BxL))
  for b, real in enumerate(lengths):
    memory, memory_mask = x_BxLxD[b], mask_BxL[b]
    for stage in mixer.stages:
      z = np.asarray(stage.queries[...])
      for layer in stage.layers:
        everyone = np.ones(len(z), bool)
        z = _np_norm(layer.norms[0], z + _np_attention(
            layer.self_attention, z, z, everyone))
        z = _np_norm(layer.norms[1], z + _np_attention(
            layer.cross_attention, z, memory, memory_mask))
        hidden = np.maximum(z @ np.asarray(layer.ffn_in.kernel[...])
                            + np.asarray(layer.ffn_in.bias[...]), 0)
        z = _np_norm(layer.norms[2], z + hidden
                     @ np.asarray(layer.ffn_out.kernel[...])
                     + np.asarray(layer.ffn_out.bias[...]))
      memory, memory_mask = _np_norm(stage.norm, z), np.ones(len(z), bool)
    want = _np_attention(mixer.read, x_BxLxD[b], memory, memory_mask)
    np.testing.assert_allclose(got[b, :real], want[:real], rtol=1e-4,
                               atol=1e-5)

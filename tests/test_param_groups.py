"""Gradient clipping with a mixer's parameter groups (S4D's `ssm` group).

The clip runs before the groups' AdamWs (`optax.chain(clip,
multi_transform)`), so it bounds the norm over every group together; each
group then steps at its own peak learning rate and weight decay, and the
metrics report the default group's rates. Tested through the optimizer
alone and through a tiny training run.
"""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from lra_ponet import models
from lra_ponet import optim
from lra_ponet import tasks
from lra_ponet import train

CLIP = 1.0


def s4d_config(**overrides):
  """Tiny S4D on ListOps (`ponet` preset: OneCycle, warm-up 2 of 4)."""
  config = tasks.get_config('listops', 'ponet', 's4d')
  config.update(dict(max_len=16, padded_len=16, batch_size=2,
                     eval_batch_size=8, train_steps=4, warmup_steps=2,
                     eval_every=2, grad_clip_norm=CLIP, **overrides))
  config.model.update(dict(num_layers=1, dim=8, mlp_dim=16))
  config.model.s4d.state_dim = 4
  return config


def _by_path(tree):
  """Path -> array of the leaves that a group holds (MaskedNode: not)."""
  masked = lambda node: isinstance(node, optax.MaskedNode)
  return {path: leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=masked) if not masked(leaf)}


def _first_moments(opt_state):
  """Adam's mu of every parameter, merged over the groups, by path."""
  adam = lambda node: isinstance(node, optax.ScaleByAdamState)
  moments = {}
  for state in jax.tree.leaves(opt_state, is_leaf=adam):
    if adam(state):
      moments.update(_by_path(state.mu))
  return moments


def _in_ssm_group(path):
  names = models.mixer_class('s4d').param_groups['ssm']
  keys = [getattr(key, 'key', None) for key in path]
  return 'mixer' in keys and keys[keys.index('mixer') + 1] in names


def one_update(config):
  """(params, gradients, updates, optimizer state) of update 0, by path.

  The optimizer is the trainer's, on the model's parameter tree (the
  `nnx.State` that nnx.Optimizer hands it); gradients are large enough to
  be clipped.
  """
  model = models.build_model(config.model, tasks.get_task('listops').INFO,
                             config.padded_len, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(1), len(_by_path(params))))
  grads = jax.tree.map(lambda p: 10 * jax.random.normal(next(keys), p.shape),
                       params)
  transform = optim.make_optimizer(config)
  updates, state = transform.update(grads, transform.init(params), params)
  return _by_path(params), _by_path(grads), _by_path(updates), state


def test_clipping_bounds_the_norm_over_every_group_together():
  _, grads, _, state = one_update(s4d_config())
  norm = float(optax.tree.norm(list(grads.values())))
  assert norm > 10 * CLIP
  moments = _first_moments(state)
  assert moments.keys() == grads.keys()  # Each parameter in one group.
  assert any(_in_ssm_group(path) for path in moments)
  # Update 0: mu = (1 - beta1) * g * CLIP / |g|, beta1 = b1_max at k = 0.
  scale = (1 - s4d_config().b1_max) * CLIP / norm
  for path, mu in moments.items():
    np.testing.assert_allclose(mu, scale * grads[path], rtol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_each_group_steps_at_its_own_rate_and_weight_decay():
  config = s4d_config(weight_decay=0.1)
  assert config.model.s4d.ssm.weight_decay == 0.0
  params, grads, updates, state = one_update(config)
  norm = float(optax.tree.norm(list(grads.values())))
  # OneCycleLR starts at peak / 25: 4e-6 for the default group, 4e-5 (the
  # ssm group's peak 1e-3) for log_dt, log_a_real and a_imag.
  rates = {'default': (config.learning_rate / 25, config.weight_decay),
           'ssm': (config.model.s4d.ssm.learning_rate / 25,
                   config.model.s4d.ssm.weight_decay)}
  for path, param in params.items():
    rate, decay = rates['ssm' if _in_ssm_group(path) else 'default']
    clipped = grads[path] * CLIP / norm
    adam = clipped / (np.abs(clipped) + config.eps)  # Update 0, debiased.
    np.testing.assert_allclose(updates[path], -rate * (adam + decay * param),
                               rtol=1e-4, err_msg=jax.tree_util.keystr(path))
  used = optim.injected_hyperparams(state)
  assert float(used['learning_rate'][...]) == pytest.approx(
      config.learning_rate / 25, rel=1e-6)


@pytest.mark.parametrize('model,clip', [('ponet', 0.0), ('ponet', CLIP),
                                        ('s4d', 0.0), ('s4d', CLIP)])
def test_reported_rates_are_the_default_groups(model, clip):
  config = tasks.get_config('listops', 'ponet', model)
  config.grad_clip_norm = clip
  params = {'encoder': {'mixer': {'log_dt': np.ones(3, np.float32)},
                        'kernel': np.ones(3, np.float32)}}
  transform = optim.make_optimizer(config)
  state = transform.init(params)
  _, state = transform.update(params, state, params)
  used = optim.injected_hyperparams(state)
  assert float(used['learning_rate']) == pytest.approx(
      config.learning_rate / 25, rel=1e-6)
  assert float(used['b1']) == pytest.approx(config.b1_max)


def test_tiny_run_trains_s4d_with_clipping(tiny_listops_dir, tmp_path):
  # Before the fix this run ended in a traceback at its first step.
  config = s4d_config(data_dir=str(tiny_listops_dir))
  results = train.train_and_evaluate(config, tmp_path)
  assert results['train_steps'] == 4
  assert results['config']['grad_clip_norm'] == CLIP
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  # Updates 1 and 3 of OneCycleLR (warm-up 2 of 4): the default group's
  # peak, then its end peak / (25 * 10^4); the ssm group's are 10x these.
  assert [record['learning_rate'] for record in records] == pytest.approx(
      [config.learning_rate, config.learning_rate / 25e4], rel=1e-5)
  assert all(np.isfinite(record['train_loss']) for record in records)

"""The optimiser: AdamW on the schedules of PoNet and of the LRA code.

Schedules are functions of the update index k (from 0), which optax's
injected hyperparameters record, so the rates an update used can be read
back from the optimizer state.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lra_ponet import models

# The multi_transform label of the parameters outside every mixer group.
DEFAULT_GROUP = 'default'


def one_cycle(warmup_steps: int, total_steps: int, *, start: float,
              middle: float, end: float):
  """PyTorch's OneCycleLR (linear anneal, three_phase=False) by update index.

  Update k (from 0) runs at `last_epoch = k`, with pct_start = warmup_steps /
  total_steps: start -> middle over k = 0 .. warmup_steps - 1, then middle ->
  end over k = warmup_steps - 1 .. total_steps - 1.
  """
  rise_end, fall_end = warmup_steps - 1, total_steps - 1

  def anneal(low, high, step, first, last):
    # Weights from exact integer differences keep float32 accurate near
    # either end (low + (high - low) * pct loses a tiny end value).
    length = max(last - first, 1)  # A zero-length phase is never used.
    return ((last - step) * low + (step - first) * high) / length

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return jnp.where(step <= rise_end,
                     anneal(start, middle, step, 0, rise_end),
                     anneal(middle, end, step, rise_end, fall_end))

  return schedule


def learning_rate_schedule(config):
  """The learning rate of update k (from 0), for `config.schedule`.

  one_cycle: the PoNet paper's PyTorch OneCycleLR (linear): peak/25 rising to
  the peak at update warmup_steps - 1, then down to peak/(25 * 10^4) at the
  last update.
  rsqrt and cosine: the original LRA code's product of factors, `min(1, k /
  warmup)` times `1 / sqrt(max(k, warmup))` or, for cosine, the cyclic
  `max(0, 0.5 * (1 + cos(pi * (p % 1))))` with p = max(0, (k - warmup) /
  train_steps): LRA's cycle is num_train_steps, so the rate does not reach 0
  at the last update.
  """
  peak, warmup = config.learning_rate, config.warmup_steps
  total = config.train_steps
  if config.schedule == 'one_cycle':
    return one_cycle(warmup, total, start=peak / 25, middle=peak,
                     end=peak / (25 * 1e4))

  def lra_schedule(step):
    step = jnp.asarray(step, jnp.float32)
    rate = peak * jnp.minimum(1.0, step / warmup)
    if config.schedule == 'rsqrt':
      return rate / jnp.sqrt(jnp.maximum(step, warmup))
    progress = jnp.maximum(0.0, (step - warmup) / total)
    return rate * jnp.maximum(
        0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))

  return lra_schedule


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW; under one_cycle beta1 cycles b1_max -> b1_min -> b1_max.

  A mixer may put parameters in groups with their own peak learning rate (on
  the same schedule) and weight decay, see `_grouped`.
  """
  b1 = config.get('b1')
  if config.schedule == 'one_cycle':
    b1 = one_cycle(config.warmup_steps, config.train_steps,
                   start=config.b1_max, middle=config.b1_min,
                   end=config.b1_max)

  def adamw(peak, weight_decay):
    peak_config = ml_collections.ConfigDict(config.to_dict())
    peak_config.learning_rate = peak
    return optax.inject_hyperparams(optax.adamw)(
        learning_rate=learning_rate_schedule(peak_config), b1=b1,
        b2=config.b2, eps=config.eps, weight_decay=weight_decay)

  adamw = _grouped(config, adamw)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
  return adamw


def _grouped(config, adamw):
  """AdamW per parameter group of the mixer, or one AdamW for all.

  A mixer class declares `param_groups = {group: (attribute names)}`; its
  parameters of those names follow `config.model.<mixer>.<group>`
  (learning_rate and weight_decay), the rest the top-level settings.
  """
  mixer_name = config.model.name
  groups = getattr(models.mixer_class(mixer_name), 'param_groups', {})
  default = adamw(config.learning_rate, config.weight_decay)
  if not groups:
    return default
  settings = config.model[mixer_name]
  transforms = {group: adamw(settings[group].learning_rate,
                             settings[group].weight_decay)
                for group in groups}
  transforms[DEFAULT_GROUP] = default
  group_of = {name: group for group, names in groups.items()
              for name in names}

  def label(path, _):
    keys = [getattr(key, 'key', getattr(key, 'name', None)) for key in path]
    for parent, name in zip(keys, keys[1:]):
      if parent == 'mixer' and name in group_of:
        return group_of[name]
    return DEFAULT_GROUP

  return optax.multi_transform(
      transforms, lambda params: jax.tree_util.tree_map_with_path(
          label, params))


def injected_hyperparams(opt_state) -> dict:
  """AdamW's hyperparameters as of the last update (the rates it used).

  They are found wherever they sit in the state tree (inside the clipping
  chain, the parameter groups' multi_transform, or both); with parameter
  groups, those of the default group (the top-level config).
  """
  found = [(path, node) for path, node in jax.tree_util.tree_leaves_with_path(
      opt_state, is_leaf=_is_injected) if _is_injected(node)]
  if len(found) > 1:
    found = [(path, node) for path, node in found
             if jax.tree_util.DictKey(DEFAULT_GROUP) in path]
  if len(found) != 1:
    raise ValueError(f'the optimizer state holds {len(found)} default sets of '
                     'injected hyperparameters; make_optimizer builds one')
  return found[0][1].hyperparams


def _is_injected(node) -> bool:
  return isinstance(node, (optax.InjectHyperparamsState,
                           optax.InjectStatefulHyperparamsState))

"""The pure jitted steps: one training update, one evaluation batch.

They are pure functions of arrays: the model and optimizer are split once
with `nnx.split` and merged inside the step, so no Python walks the module
graph per step and the state can be donated and sharded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from lra_ponet import input_pipeline
from lra_ponet import models
from lra_ponet import optim


def masks_zero_tokens(config, info) -> bool:
  """Whether token id 0 is padding; pixel tasks only under the quirk switch."""
  return info.zero_is_padding or config.official_pixel_quirks


def create_train_state(config, info):
  """Builds model and optimizer; returns (graphdef, eval_graphdef, state).

  `state` holds the model (index 0) and the optimizer (index 1), RNG counts
  included. The two graph definitions differ only in dropout being active.
  """
  rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1,
                  mixer=config.seed + 2)
  model = models.build_model(config.model, info, config.padded_len,
                             rngs=rngs)
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config),
                            wrt=nnx.Param)
  model.eval()
  eval_graphdef, _ = nnx.split((model, optimizer))
  model.train()
  graphdef, state = nnx.split((model, optimizer))
  return graphdef, eval_graphdef, state


def _mask(inputs, mask_zero_tokens: bool):
  if mask_zero_tokens:
    return inputs != input_pipeline.PAD_ID
  return jnp.ones(inputs.shape, bool)


def make_train_step(graphdef, mask_zero_tokens: bool):
  """`train_step(state, batch) -> (state, metrics)`, pure; jit it.

  The metrics include the global gradient norm and whether every updated
  parameter is finite, so that the loop can stop at a non-finite value, and
  the learning rate and beta1 this update used (the optimizer's injected
  hyperparameters).
  """

  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    inputs = batch['inputs'].astype(jnp.int32)
    mask = _mask(inputs, mask_zero_tokens)

    def loss_fn(model):
      logits = model(inputs, mask)
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['label']).mean()
      return loss, logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    used = optim.injected_hyperparams(optimizer.opt_state)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    return nnx.state((model, optimizer)), {
        'loss': loss, 'accuracy': accuracy,
        'grad_norm': optax.tree.norm(grads),
        'params_finite': jnp.all(jnp.stack(
            [jnp.isfinite(x).all() for x in params])),
        'learning_rate': used['learning_rate'][...], 'b1': used['b1'][...]}

  return train_step


def make_eval_step(eval_graphdef, mask_zero_tokens: bool):
  """`eval_step(state, batch) -> sums of loss, correct and weight`.

  Also each example's predicted class (`prediction`, padding rows included).
  """

  def eval_step(state, batch):
    model, _ = nnx.merge(eval_graphdef, state)
    inputs = batch['inputs'].astype(jnp.int32)
    logits = model(inputs, _mask(inputs, mask_zero_tokens))
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label'])
    weight = batch['weight']
    prediction = logits.argmax(-1)
    return {'loss': (losses * weight).sum(),
            'correct': ((prediction == batch['label']) * weight).sum(),
            'count': weight.sum(), 'prediction': prediction}

  return eval_step


def evaluate(eval_step, state, split, batch_size: int, put,
             progress: str | None = None) -> dict:
  """Mean loss and accuracy over a split; `put` places each batch.

  Also `predictions`: the predicted class of every example, in split order.
  With `progress` (a description), a progress bar counts the batches.
  """
  totals = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
  predictions = []
  batches = input_pipeline.eval_batches(split, batch_size)
  if progress:
    batches = tqdm(batches, desc=progress, unit='batch',
                   total=-(-len(split) // batch_size))
  for batch in batches:
    sums = jax.device_get(eval_step(state, put(batch)))
    predictions.append(sums.pop('prediction')[batch['weight'] > 0])
    for name, value in sums.items():
      totals[name] += float(value)
  return {'loss': totals['loss'] / totals['count'],
          'accuracy': totals['correct'] / totals['count'],
          'predictions': np.concatenate(predictions)}

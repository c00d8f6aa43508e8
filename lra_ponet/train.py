"""Training and evaluation: optimiser, pure jitted steps and the loop.

The jitted steps are pure functions of arrays: the model and optimizer are
split once with `nnx.split` and merged inside the step, so no Python walks the
module graph per step and the state can be donated and sharded. The state is
replicated and each batch split over all devices (see `parallel`); the loop
checkpoints, resumes and stops cleanly (see `checkpoint`).
"""

import contextlib
import json
import math
import pathlib
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

import tasks
from lra_ponet import checkpoint
from lra_ponet import input_pipeline
from lra_ponet import models
from lra_ponet import parallel
from lra_ponet import tensorboard as tensorboard_lib
from lra_ponet.errors import UserError

SCHEDULES = ('one_cycle', 'rsqrt', 'cosine')


def one_cycle(peak: float, warmup_steps: int, total_steps: int, *,
              start: float, middle: float, end: float):
  """Linear start -> middle over warm-up, then middle -> end at the last step."""
  return optax.join_schedules(
      [optax.linear_schedule(start, middle, warmup_steps),
       optax.linear_schedule(middle, end, total_steps - warmup_steps)],
      [warmup_steps])


def learning_rate_schedule(config):
  """The learning rate at each step, for `config.schedule`.

  one_cycle: the PoNet paper's PyTorch OneCycleLR (linear): peak/25 rising to
  the peak at the end of warm-up, then down to peak/(25 * 10^4).
  rsqrt and cosine: the original LRA schedules, a product of a linear warm-up
  `min(1, step / warmup)` with `1 / sqrt(max(step, warmup))` or a half-cosine.
  """
  peak, warmup = config.learning_rate, config.warmup_steps
  total = config.train_steps
  if config.schedule == 'one_cycle':
    return one_cycle(peak, warmup, total, start=peak / 25, middle=peak,
                     end=peak / (25 * 1e4))

  def lra_schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, step / max(warmup, 1))
    if config.schedule == 'rsqrt':
      return peak * warm / jnp.sqrt(jnp.maximum(step, warmup))
    progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    return peak * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

  return lra_schedule


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW; under one_cycle beta1 cycles 0.95 -> 0.85 -> 0.95 like OneCycleLR.

  A mixer may put parameters in groups with their own peak learning rate (on
  the same schedule) and weight decay, see `_grouped`.
  """
  b1 = config.b1
  if config.schedule == 'one_cycle':
    b1 = one_cycle(config.b1, config.warmup_steps, config.train_steps,
                   start=0.95, middle=0.85, end=0.95)

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
  transforms['default'] = default
  group_of = {name: group for group, names in groups.items()
              for name in names}

  def label(path, _):
    keys = [getattr(key, 'key', getattr(key, 'name', None)) for key in path]
    for parent, name in zip(keys, keys[1:]):
      if parent == 'mixer' and name in group_of:
        return group_of[name]
    return 'default'

  return optax.multi_transform(
      transforms, lambda params: jax.tree_util.tree_map_with_path(
          label, params))


def validate_config(config):
  """Catches impossible settings before any data is loaded or compiled."""
  if config.schedule not in SCHEDULES:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(SCHEDULES)}')
  models.validate_config(config, tasks.get_task(config.task).INFO)
  for field in ('max_len', 'padded_len', 'batch_size', 'eval_batch_size',
                'train_steps', 'eval_every', 'log_every', 'checkpoint_every',
                'checkpoint_keep'):
    if config[field] < 1:
      raise UserError(f'config.{field} must be positive, got {config[field]}')
  if config.padded_len < config.max_len:
    raise UserError(f'config.padded_len ({config.padded_len}) is shorter than '
                    f'config.max_len ({config.max_len}); set padded_len >= '
                    'max_len')
  if config.warmup_steps < 0:
    raise UserError(f'config.warmup_steps must be >= 0, got '
                    f'{config.warmup_steps}')
  # The LRA schedules accept a warm-up longer than training (LRA's own
  # retrieval config has 8,000 of 5,000); the one-cycle schedule does not.
  if (config.schedule == 'one_cycle'
      and config.warmup_steps > config.train_steps):
    raise UserError(f'config.warmup_steps ({config.warmup_steps}) exceeds '
                    f'config.train_steps ({config.train_steps}); the one_cycle '
                    'schedule needs warmup_steps <= train_steps')
  if config.model.dim % config.model.num_heads:
    raise UserError(f'config.model.dim ({config.model.dim}) must be divisible '
                    f'by config.model.num_heads ({config.model.num_heads})')
  if config.model.dtype not in ('float32', 'bfloat16', 'float16'):
    raise UserError(f'config.model.dtype {config.model.dtype!r}: use float32, '
                    'bfloat16 or float16')


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
  optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
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

  The metrics include the global gradient norm, so that the loop can stop at
  a non-finite loss or gradient.
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
    return nnx.state((model, optimizer)), {
        'loss': loss, 'accuracy': accuracy,
        'grad_norm': optax.tree.norm(grads)}

  return train_step


def make_eval_step(eval_graphdef, mask_zero_tokens: bool):
  """`eval_step(state, batch) -> sums of loss, correct and weight`."""

  def eval_step(state, batch):
    model, _ = nnx.merge(eval_graphdef, state)
    inputs = batch['inputs'].astype(jnp.int32)
    logits = model(inputs, _mask(inputs, mask_zero_tokens))
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label'])
    weight = batch['weight']
    return {'loss': (losses * weight).sum(),
            'correct': ((logits.argmax(-1) == batch['label']) * weight).sum(),
            'count': weight.sum()}

  return eval_step


def evaluate(eval_step, state, split, batch_size: int, put) -> dict:
  """Mean loss and accuracy over a split; `put` places each batch."""
  totals = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
  for batch in input_pipeline.eval_batches(split, batch_size):
    for name, value in jax.device_get(eval_step(state, put(batch))).items():
      totals[name] += float(value)
  return {'loss': totals['loss'] / totals['count'],
          'accuracy': totals['correct'] / totals['count']}


def device_description() -> str:
  device = jax.devices()[0]
  return (f'{jax.device_count()} x {device.device_kind} '
          f'({jax.default_backend()})')


def write_json(path, payload):
  """Writes JSON atomically: a reader sees the old file or the new one."""
  checkpoint.write_text_atomically(
      path, json.dumps(payload, indent=2, sort_keys=True) + '\n')


class NonFiniteError(UserError):
  """The loss or gradient became NaN or infinite; that state was not saved."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after it saved a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # The shell's convention: 130 for Ctrl-C.


class StopRequests:
  """SIGINT (Ctrl-C) and SIGTERM ask the loop to checkpoint and stop.

  The handler only records the request; the loop acts on it between steps,
  because an exception raised mid-step could leave the donated state half
  updated. A second signal aborts at once, without a checkpoint. In runs of
  several processes JAX's preemption service owns SIGTERM and picks a step at
  which every process stops, so no handler is installed there.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum
    print(f'\n{signal.Signals(signum).name}: saving a checkpoint after this '
          'step, then stopping (send it again to abort without saving)',
          file=sys.stderr, flush=True)

  def requested(self, step: int, checkpoints) -> bool:
    if (self.signum is None and jax.process_count() > 1
        and checkpoints.reached_preemption(step)):
      self.signum = signal.SIGTERM
    return self.signum is not None


def _add_to_window(window, fetched_metrics, first_step: int, checkpoints):
  """Sums fetched step metrics into window; stops at a non-finite one."""
  for step, fetched in enumerate(fetched_metrics, start=first_step):
    loss, grad_norm = float(fetched['loss']), float(fetched['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      latest = checkpoints.latest_step()
      kept = (f'the last good checkpoint, step {latest}, is kept in '
              f'{checkpoints.directory / str(latest)}' if latest is not None
              else 'no checkpoint had been saved yet')
      raise NonFiniteError(
          f'non-finite training loss or gradient at step {step} (loss '
          f'{loss}, gradient norm {grad_norm}); the run stopped and {kept}; '
          'a lower learning_rate or a grad_clip_norm may help (in a new '
          '--workdir)')
    window['loss'] += loss
    window['accuracy'] += float(fetched['accuracy'])
    window['steps'] += 1


def _new_progress():
  """The loop's bookkeeping, saved in every checkpoint as JSON."""
  return {'records': [],  # One per evaluation: the lines of metrics.jsonl.
          'best': {'accuracy': -1.0, 'step': 0},
          # Train-metric sums since the last evaluation.
          'window': {'loss': 0.0, 'accuracy': 0.0, 'steps': 0}}


def _write_metrics(workdir, records):
  checkpoint.write_text_atomically(
      workdir / 'metrics.jsonl',
      ''.join(json.dumps(record) + '\n' for record in records))


def _copy(tree):
  """New buffers: the training step donates (deletes) the state's."""
  return jax.tree.map(jnp.copy, tree)


def train_and_evaluate(config, workdir, *, overwrite: bool = False,
                       tensorboard: bool = False) -> dict:
  """Trains, evaluates on validation every eval_every steps, tests the best.

  Writes config.json, metrics.jsonl (one line per evaluation), checkpoints/
  and results.json into workdir and returns the results. If workdir holds
  checkpoints of the same config the run resumes from the latest and ends as
  the uninterrupted run would have; a workdir of another config is refused
  unless `overwrite`, which starts afresh. With `tensorboard`, the records of
  metrics.jsonl also go to TensorBoard event files in workdir/tensorboard. Raises NonFiniteError at a NaN or
  infinite loss or gradient, and Interrupted on SIGINT or SIGTERM once a
  checkpoint is saved.
  """
  start_time = time.time()
  task = tasks.get_task(config.task)
  info = task.INFO
  validate_config(config)
  if tensorboard:
    tensorboard_lib.check_available()
  mask_zero_tokens = masks_zero_tokens(config, info)
  if not mask_zero_tokens and config.padded_len != config.max_len:
    raise UserError(f'the {config.task} task has no padding id (pixel 0 is '
                    f'black): set config.padded_len = config.max_len '
                    f'({config.max_len})')
  mesh = parallel.data_mesh()
  parallel.check_divisible(config, mesh)
  is_writer = jax.process_index() == 0
  workdir = pathlib.Path(workdir)
  checkpoint.prepare_workdir(workdir, config.to_dict(), overwrite=overwrite,
                             is_writer=is_writer)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('lra_ponet: workdir prepared')

  data = task.load(config)
  print(f'Data: {data.source}' + (f'; {data.notes}' if data.notes else ''))
  graphdef, eval_graphdef, state = create_train_state(config, info)
  num_params = models.count_params(nnx.merge(graphdef, state)[0])
  replicated = parallel.replicated(mesh)
  batch_sharded = parallel.batch_sharded(mesh)
  train_step = jax.jit(make_train_step(graphdef, mask_zero_tokens),
                       in_shardings=(replicated, batch_sharded),
                       out_shardings=replicated, donate_argnums=0)
  eval_step = jax.jit(make_eval_step(eval_graphdef, mask_zero_tokens),
                      in_shardings=(replicated, batch_sharded),
                      out_shardings=replicated)
  schedule = learning_rate_schedule(config)

  def put(batch):
    return parallel.put_batch(batch, batch_sharded)

  state = parallel.replicate(state, mesh)
  best_model = _copy(state[0])
  progress = _new_progress()
  checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint_keep)
  metric_writer = (tensorboard_lib.Writer(workdir)
                   if tensorboard and is_writer else None)
  try:
    restored = checkpoints.restore_latest(state, best_model)
    start = 0
    if restored:
      start, state, best_model, progress = restored
      print(f'Resuming from step {start} of {config.train_steps} '
            f'({checkpoints.directory / str(start)})')
    if is_writer:
      # Drops the lines an interrupted run wrote after its last checkpoint.
      _write_metrics(workdir, progress['records'])

    batches = input_pipeline.prefetch(
        input_pipeline.train_batches(data.train, config.batch_size,
                                     config.seed, start_step=start), put)
    window, best = progress['window'], progress['best']
    # Zero until a timed interval exists (none when resuming a finished run).
    train_seconds, timed_steps, steps_per_second = 0.0, 0, 0.0
    pending = []
    tick = time.perf_counter()
    with tqdm(total=config.train_steps, initial=start, unit='step',
              dynamic_ncols=True, disable=not is_writer,
              desc=f'{config.task}/{config.model.name}') as progress_bar, \
        StopRequests() as stops, contextlib.closing(batches):
      for step in range(start + 1, config.train_steps + 1):
        state, metrics = train_step(state, next(batches))
        pending.append(metrics)
        stopping = stops.requested(step, checkpoints)
        evaluating = (step % config.eval_every == 0
                      or step == config.train_steps)
        saving = (step % config.checkpoint_every == 0
                  or step == config.train_steps or stopping)
        if step % config.log_every and not (evaluating or saving):
          continue
        # Fetching is the only host sync, so non-finite values are caught
        # here, before anything is evaluated or saved.
        _add_to_window(window, jax.device_get(pending),
                       step - len(pending) + 1, checkpoints)
        now = time.perf_counter()
        # The first interval includes compilation; it is not a training speed.
        if step - len(pending) > start:
          train_seconds += now - tick
          timed_steps += len(pending)
        progress_bar.update(len(pending))
        steps_per_second = timed_steps / train_seconds if train_seconds else 0.0
        pending = []
        progress_bar.set_postfix(
            loss=f'{window["loss"] / window["steps"]:.4f}',
            acc=f'{window["accuracy"] / window["steps"]:.3f}',
            steps_per_s=f'{steps_per_second:.2f}')
        if evaluating:
          validation = evaluate(eval_step, state, data.validation,
                                config.eval_batch_size, put)
          progress['records'].append({
              'step': step,
              'train_loss': window['loss'] / window['steps'],
              'train_accuracy': window['accuracy'] / window['steps'],
              'val_loss': validation['loss'],
              'val_accuracy': validation['accuracy'],
              'learning_rate': float(schedule(step - 1)),
              'steps_per_second': steps_per_second})
          if is_writer:
            _write_metrics(workdir, progress['records'])
          if metric_writer:
            metric_writer.write(progress['records'][-1])
          window.update(loss=0.0, accuracy=0.0, steps=0)
          if validation['accuracy'] > best['accuracy']:
            best.update(accuracy=validation['accuracy'], step=step)
            best_model = _copy(state[0])
          progress_bar.write(
              f'step {step}: val_loss {validation["loss"]:.4f} '
              f'val_acc {validation["accuracy"]:.4f} (best '
              f'{best["accuracy"]:.4f} at step {best["step"]})')
        if saving:
          checkpoints.save(step, state, best_model, progress)
        if stopping:
          raise Interrupted(
              f'stopped by {signal.Signals(stops.signum).name} at step '
              f'{step}; checkpoint saved in {checkpoints.directory / str(step)}'
              f'; resume with the same command and --workdir={workdir}',
              stops.signum)
        tick = time.perf_counter()
  finally:
    checkpoints.close()
    if metric_writer:
      metric_writer.close()

  state[0] = best_model
  test = evaluate(eval_step, state, data.test, config.eval_batch_size, put)
  results = {
      'task': config.task,
      'model': config.model.name,
      'num_params': num_params,
      'best_val_accuracy': best['accuracy'],
      'best_step': best['step'],
      'test_accuracy': test['accuracy'],
      'test_loss': test['loss'],
      'train_steps': config.train_steps,
      'steps_per_second': steps_per_second,
      'wall_seconds': time.time() - start_time,
      'device': device_description(),
      'data_source': data.source,
      'data_notes': data.notes,
      'mask_zero_tokens': mask_zero_tokens,
      'mean_over': config.model.mean_over,
      'jax_version': jax.__version__,
      'config': config.to_dict(),
  }
  if is_writer:
    write_json(workdir / 'results.json', results)
  return results

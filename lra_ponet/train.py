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
from configs import base
from lra_ponet import checkpoint
from lra_ponet import input_pipeline
from lra_ponet import models
from lra_ponet import parallel
from lra_ponet import tensorboard as tensorboard_lib
from lra_ponet.errors import UserError

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


def injected_hyperparams(opt_state) -> dict:
  """AdamW's hyperparameters as of the last update (the rates it used).

  With parameter groups, those of the default group (the top-level config).
  """
  if hasattr(opt_state, 'inner_states'):  # optax.multi_transform.
    opt_state = opt_state.inner_states['default'].inner_state
  if not hasattr(opt_state, 'hyperparams'):  # The chain with clipping.
    opt_state = opt_state[-1]
  return opt_state.hyperparams


def _check_schedule(config):
  schedule, warmup = config.schedule, config.warmup_steps
  for field, owners in base.SCHEDULE_FIELDS.items():
    if (field in config) != (schedule in owners):
      state = 'is not used by' if field in config else 'is needed by'
      raise UserError(
          f'config.{field} {state} the {schedule} schedule; pick a schedule '
          f'with --schedule={schedule}, which sets exactly its fields')
  if warmup < 0:
    raise UserError(f'config.warmup_steps must be >= 0, got {warmup}')
  if schedule != 'one_cycle' and warmup == 0:
    raise UserError(f'the {schedule} schedule needs config.warmup_steps >= 1 '
                    '(LRA\'s linear warm-up divides by it: 0 gives a NaN '
                    'learning rate at step 0)')
  # The LRA schedules accept a warm-up longer than training (LRA's own
  # retrieval config has 8,000 of 5,000); the one-cycle schedule does not.
  if schedule == 'one_cycle' and (warmup == 1
                                  or warmup > config.train_steps):
    raise UserError(f'config.warmup_steps ({warmup}) must be 0 or 2 .. '
                    f'config.train_steps ({config.train_steps}) under '
                    'one_cycle (OneCycleLR divides by warmup_steps - 1)')


def _check_model(config, info):
  """Builds the model and one forward pass abstractly (no arrays, seconds).

  A bad mixer argument fails here, before any data is loaded or generated.
  """
  def forward():
    model = models.build_model(
        config.model, info, config.padded_len,
        rngs=nnx.Rngs(params=0, dropout=1, mixer=2))
    shape = (1, 2, config.padded_len) if info.paired else (
        1, config.padded_len)
    tokens = jnp.ones(shape, jnp.int32)
    return model(tokens, tokens > 0)

  try:
    jax.eval_shape(forward)
  except (ValueError, TypeError, ZeroDivisionError) as error:
    message = (str(error).strip().splitlines() or [''])[0]
    raise UserError(f'config.model ({config.model.name}): '
                    f'{message}') from None


def validate_config(config):
  """Catches impossible settings before any data is loaded or compiled."""
  if config.schedule not in base.SCHEDULES:
    raise UserError(f'unknown schedule {config.schedule!r}; use one of '
                    f'{", ".join(base.SCHEDULES)}')
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
  _check_schedule(config)
  if config.model.dim % config.model.num_heads:
    raise UserError(f'config.model.dim ({config.model.dim}) must be divisible '
                    f'by config.model.num_heads ({config.model.num_heads})')
  if config.model.dtype == 'float16':
    raise UserError('config.model.dtype float16 cannot be trained here: it '
                    'needs dynamic loss scaling, which this trainer does not '
                    'do; use bfloat16 or float32')
  if config.model.dtype not in ('float32', 'bfloat16'):
    raise UserError(f'config.model.dtype {config.model.dtype!r}: use float32 '
                    'or bfloat16')
  _check_model(config, tasks.get_task(config.task).INFO)


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
    used = injected_hyperparams(optimizer.opt_state)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    return nnx.state((model, optimizer)), {
        'loss': loss, 'accuracy': accuracy,
        'grad_norm': optax.tree.norm(grads),
        'params_finite': jnp.all(jnp.stack(
            [jnp.isfinite(x).all() for x in params])),
        'learning_rate': used['learning_rate'][...], 'b1': used['b1'][...]}

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
  """A loss, gradient or updated parameter became NaN or infinite.

  The state of that step was not saved.
  """


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
  """Sums fetched step metrics into window; stops at a non-finite one.

  Returns the learning rate of the last step.
  """
  for step, fetched in enumerate(fetched_metrics, start=first_step):
    loss, grad_norm = float(fetched['loss']), float(fetched['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)
            and fetched['params_finite']):
      latest = checkpoints.latest_step()
      kept = (f'the last good checkpoint, step {latest}, is kept in '
              f'{checkpoints.directory / str(latest)}' if latest is not None
              else 'no checkpoint had been saved yet')
      params = 'finite' if fetched['params_finite'] else 'not finite'
      raise NonFiniteError(
          f'non-finite training loss, gradient or updated parameters at step '
          f'{step} (loss {loss}, gradient norm {grad_norm}, parameters '
          f'{params}); the run stopped and {kept}; a lower learning_rate or '
          'a grad_clip_norm may help (in a new --workdir)')
    window['loss'] += loss
    window['accuracy'] += float(fetched['accuracy'])
    window['steps'] += 1
  return float(fetched_metrics[-1]['learning_rate'])


def _new_progress():
  """The loop's bookkeeping, saved in every checkpoint as JSON."""
  return {'records': [],  # One per evaluation: the lines of metrics.jsonl.
          'best': {'accuracy': -1.0, 'step': 0},
          # Train-metric sums since the last evaluation.
          'window': {'loss': 0.0, 'accuracy': 0.0, 'steps': 0},
          # Summed over every invocation of the run (resumes included): timed
          # training steps, their seconds (first interval of each invocation
          # left out: it compiles) and wall time up to the latest checkpoint.
          'timing': {'train_seconds': 0.0, 'timed_steps': 0,
                     'wall_seconds': 0.0}}


def _speed(timing) -> float:
  """Steps per second over every timed interval; 0 until one exists."""
  if not timing['train_seconds']:
    return 0.0
  return timing['timed_steps'] / timing['train_seconds']


def _finished_results(workdir, start: int, config):
  """The stored results of a run that already finished, or None."""
  path = workdir / 'results.json'
  if start < config.train_steps or not path.exists():
    return None
  print(f'{workdir} holds a finished run; its results.json is unchanged')
  return json.loads(path.read_text(encoding='utf-8'))


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
  unless `overwrite`, which starts afresh; a finished run's stored results
  are returned untouched. With `tensorboard`, the records of metrics.jsonl
  also go to TensorBoard event files in workdir/tensorboard. Raises
  NonFiniteError at a NaN or infinite loss, gradient or updated parameter,
  and Interrupted on SIGINT or SIGTERM once a
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
    finished = _finished_results(workdir, start, config)
    if finished:
      return finished
    timing = progress.setdefault('timing', _new_progress()['timing'])
    wall_before = timing['wall_seconds']
    if is_writer:
      # Drops the lines an interrupted run wrote after its last checkpoint.
      _write_metrics(workdir, progress['records'])

    batches = input_pipeline.prefetch(
        input_pipeline.train_batches(data.train, config.batch_size,
                                     config.seed, start_step=start), put)
    window, best = progress['window'], progress['best']
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
        learning_rate = _add_to_window(window, jax.device_get(pending),
                                       step - len(pending) + 1, checkpoints)
        now = time.perf_counter()
        # The first interval includes compilation; it is not a training speed.
        if step - len(pending) > start:
          timing['train_seconds'] += now - tick
          timing['timed_steps'] += len(pending)
        progress_bar.update(len(pending))
        steps_per_second = _speed(timing)
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
              # The rate of this step's update (index step - 1, from 0).
              'learning_rate': learning_rate,
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
          timing['wall_seconds'] = wall_before + time.time() - start_time
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
      'steps_per_second': _speed(timing),
      'wall_seconds': wall_before + time.time() - start_time,
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

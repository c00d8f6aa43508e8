r"""Tests a run's best-validation parameters again, on its data or other data.

  python -m lra_ponet.evaluate --workdir=runs/cpu_listops/fnet_seed0 \
      --config.generator.num_test=20000
  python -m lra_ponet.evaluate --workdir=RUN --config.data_dir=.../lra_release

The run's config is rebuilt from config.json in --workdir. Only the fields
that choose the data may be overridden (`DATA_FIELDS`), so the parameters fit
the model and the preprocessing stays the run's. The best-validation
parameters of the latest checkpoint are evaluated on --split; the result is
printed and appended to <workdir>/evaluations.jsonl with the data source,
the overrides and the stamp (`lra_ponet.stamp`: device, library and code
versions). With --predictions, each example's label and predicted class are
saved beside it (`PREDICTIONS`), for analyses that need more than the
accuracy (`python -m lra_ponet.spread`).

Generated ListOps keeps its first examples when a split grows: with the same
seed, `generator.num_test=20000` gives the same training and validation
splits and a test split that starts with the original 2,000, none of them
seen in training. Evaluating a finished run without overrides reproduces the
test accuracy in its results.json.
"""

import datetime
import hashlib
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from lra_ponet import tasks
from lra_ponet import checkpoint
from lra_ponet import config_lib
from lra_ponet import host_memory
from lra_ponet import errors
from lra_ponet import parallel
from lra_ponet import stamp
from lra_ponet import steps
from lra_ponet import validation
from lra_ponet.errors import UserError

# Overridable fields (and field prefixes): what data is read, not how.
DATA_FIELDS = ('data_dir', 'data_seed', 'eval_batch_size', 'generator.',
               'generated_examples', 'split_order')
# Fields of the suite's generators, meaningless with data_dir.
GENERATED_ONLY = ('data_seed', 'generated_examples')
SPLITS = ('test', 'validation')
EVALUATIONS = 'evaluations.jsonl'
# Split, number of examples and a digest of the overrides: evaluations of
# other data never share a file.
PREDICTIONS = 'predictions_{split}_{examples}_{digest}.npz'

FLAGS = flags.FLAGS


def define_flags():
  """Defined on running the command, so that importing has no effect.

  --config follows in `parse_flags`, once --workdir names the run.
  """
  flags.DEFINE_string('workdir', None, 'Workdir of a run of lra_ponet.run.')
  flags.DEFINE_enum('split', 'test', SPLITS, 'The split to evaluate.')
  flags.DEFINE_boolean('predictions', False,
                       "Also save each example's label and predicted class "
                       'in the workdir (named in the evaluation record).')


def rebuild_config(workdir: pathlib.Path):
  """The ConfigDict of the run in workdir (its config.json), rebuilt."""
  path = workdir / 'config.json'
  if not path.exists():
    raise UserError(f'{workdir} has no config.json; point --workdir at the '
                    'folder of a run of python -m lra_ponet.run')
  try:
    return config_lib.rebuild(json.loads(path.read_text(encoding='utf-8')))
  except json.JSONDecodeError as error:
    raise UserError(f'{path} is not the config of a run ({error!r})'
                    ) from None
  except UserError as error:
    raise UserError(f'{path}: {error}') from None


def _refuse_model_fields(field: str):
  if not any(field == name or (name.endswith('.') and field.startswith(name))
             for name in DATA_FIELDS):
    return ('it would change the trained model; an evaluation may override '
            f'only {", ".join(DATA_FIELDS)} (a trailing dot: any field under '
            'it)')
  return None


def evaluate_run(workdir, config, split: str = 'test',
                 overrides: dict | None = None,
                 save_predictions: bool = False) -> dict:
  """Evaluates the latest checkpoint's best parameters; returns the record."""
  workdir = pathlib.Path(workdir)
  generated = [field for field in overrides or {}
               if field.startswith('generator.') or field in GENERATED_ONLY]
  if generated and config.data_dir:
    raise UserError(f'--config.{generated[0]} applies to generated data, but '
                    f'the data is read from data_dir={config.data_dir}; set '
                    "--config.data_dir='' to evaluate on generated data")
  validation.validate_config(config)
  task = tasks.get_task(config.task)
  mask_zero_tokens = steps.masks_zero_tokens(config, task.INFO)
  mesh = parallel.data_mesh()
  parallel.check_divisible(config, mesh)
  data = task.load(config)
  eval_graphdef, state, step, best_step = _restore_best(
      workdir, config, task.INFO, mesh)
  batch_sharded = parallel.batch_sharded(mesh)
  eval_step = jax.jit(steps.make_eval_step(eval_graphdef, mask_zero_tokens),
                      in_shardings=(parallel.replicated(mesh), batch_sharded),
                      out_shardings=parallel.replicated(mesh))
  examples = getattr(data, split)
  result = steps.evaluate(
      eval_step, state, examples, config.eval_batch_size,
      lambda batch: parallel.put_batch(batch, batch_sharded),
      progress=(f'{config.task}/{config.model.name} {split}'
                if jax.process_index() == 0 else None))
  record = {
      'split': split,
      'accuracy': result['accuracy'],
      'loss': result['loss'],
      'examples': len(examples),
      'checkpoint_step': step,
      'best_step': best_step,
      'data_source': data.source,
      'data_notes': data.notes,
      'overrides': overrides or {},
      'device': stamp.device(),
      **stamp.versions(),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
  }
  if save_predictions:
    record['predictions'] = _save_predictions(
        workdir, record, config, examples.labels, result['predictions'])
  if jax.process_index() == 0:
    with open(workdir / EVALUATIONS, 'a', encoding='utf-8') as file:
      file.write(json.dumps(record) + '\n')
  return record


def _restore_best(workdir, config, task_info, mesh):
  """The latest checkpoint's best parameters, placed for evaluation.

  Returns the eval graphdef, the state, the checkpoint's step and the step
  whose validation accuracy was best.
  """
  _, eval_graphdef, state = steps.create_train_state(config, task_info)
  state = parallel.replicate(state, mesh)
  checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint_keep)
  step = checkpoints.latest_step()
  if step is None:
    raise UserError(f'{workdir} has no checkpoint to evaluate')
  try:
    state, best_model, progress = checkpoints.restore(
        step, state, jax.tree.map(jnp.copy, state[0]))
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise UserError(f'the checkpoint of step {step} in {workdir} cannot be '
                    f'restored ({str(error).splitlines()[0]})') from None
  finally:
    checkpoints.close()
  state[0] = best_model
  return eval_graphdef, state, step, progress['best']['step']


def _save_predictions(workdir, record, config, labels, predictions) -> str:
  """Writes labels and predictions with what they are of; returns the name."""
  # Here, not at the top: the report's reader brings pandas to start-up.
  from lra_ponet.report import load  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256(json.dumps(
      record['overrides'], sort_keys=True).encode()).hexdigest()[:8]
  name = PREDICTIONS.format(split=record['split'],
                            examples=record['examples'], digest=digest)
  if jax.process_index() == 0:
    with open(workdir / name, 'wb') as file:
      np.savez_compressed(
          file, label=np.asarray(labels, np.int16),
          prediction=np.asarray(predictions, np.int16),
          model=config.model.name, seed=config.seed, task=config.task,
          # The run's config as trained (the report's groups), not the
          # data overrides of this evaluation.
          config_hash=load.config_hash(config_lib.migrate(json.loads(
              (workdir / 'config.json').read_text(encoding='utf-8')))),
          best_step=record['best_step'], split=record['split'],
          data_source=record['data_source'])
  return name


def parse_flags(argv):
  """Reads --workdir first: the run's config decides the valid overrides."""
  try:
    FLAGS(argv, known_only=True)
    if not FLAGS.workdir:
      raise UserError('--workdir is required: the folder of a run of '
                      'python -m lra_ponet.run')
    config = rebuild_config(pathlib.Path(FLAGS.workdir))
    config_lib.check_overrides(argv, config, allowed=_refuse_model_fields)
  except (UserError, flags.Error) as error:
    sys.exit(f'error: {error}')
  config_flags.DEFINE_config_dict('config', config)
  return errors.parse_flags(argv)


def main(argv):
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  del argv  # The overrides are read from the parsed config.
  overrides = {field: config_lib.lookup(FLAGS.config, field)
               for field in config_lib.override_fields(sys.argv)}
  try:
    host_memory.retain_freed_memory()
    record = evaluate_run(FLAGS.workdir, FLAGS.config, FLAGS.split, overrides,
                          save_predictions=FLAGS.predictions)
  except UserError as error:
    sys.exit(f'error: {error}')
  except KeyboardInterrupt:
    print('evaluation aborted; nothing was recorded', file=sys.stderr)
    sys.exit(130)
  print(f'{FLAGS.config.task} / {FLAGS.config.model.name}, {FLAGS.split}: '
        f'accuracy {record["accuracy"]:.4f}, loss {record["loss"]:.4f} on '
        f'{record["examples"]:,} examples, parameters of step '
        f'{record["best_step"]} (checkpoint {record["checkpoint_step"]}).\n'
        f'Data: {record["data_source"]}. Appended to '
        f'{FLAGS.workdir}/{EVALUATIONS}'
        + (f'; predictions in {FLAGS.workdir}/{record["predictions"]}'
           if FLAGS.predictions else ''))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)

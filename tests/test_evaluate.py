"""`python -m lra_ponet.evaluate`: a run's best parameters tested again."""

import json

import numpy as np
import pytest

from lra_ponet import tasks
from conftest import run_cli
from lra_ponet import checkpoint
from lra_ponet import config_lib
from lra_ponet import evaluate
from lra_ponet import models
from lra_ponet import train
from lra_ponet.report import load
from lra_ponet.tasks import listops_generator

TINY = dict(max_len=256, padded_len=256, batch_size=4, eval_batch_size=8,
            train_steps=4, eval_every=2, warmup_steps=2)
TINY_MODEL = dict(num_layers=1, dim=16, mlp_dim=32, ponet=dict(segment_num=8))


@pytest.fixture(scope='module')
def finished_run(tiny_listops_dir, tmp_path_factory):
  config = tasks.get_config('listops')
  config.update(TINY, data_dir=str(tiny_listops_dir))
  config.model.update(TINY_MODEL)
  workdir = tmp_path_factory.mktemp('run')
  return workdir, train.train_and_evaluate(config, workdir)


def test_the_config_is_rebuilt_exactly(finished_run):
  workdir, results = finished_run
  config = evaluate.rebuild_config(workdir)
  assert not config_lib.differences(results['config'], config.to_dict(),
                                    ignored=frozenset())


def test_evaluation_reproduces_the_run_and_records_itself(finished_run):
  workdir, results = finished_run
  config = evaluate.rebuild_config(workdir)
  test = evaluate.evaluate_run(workdir, config, 'test')
  assert (test['accuracy'], test['loss']) == pytest.approx(
      (results['test_accuracy'], results['test_loss']), abs=1e-6)
  validation = evaluate.evaluate_run(workdir, config, 'validation')
  assert validation['accuracy'] == pytest.approx(results['best_val_accuracy'])
  assert test['best_step'] == results['best_step'] and test['examples'] == 16
  records = [json.loads(line) for line in
             (workdir / evaluate.EVALUATIONS).read_text().splitlines()]
  assert [record['split'] for record in records] == ['test', 'validation']
  assert records[0]['data_source'] == results['data_source']
  # The stamp of results.json (git_clean may change as the checkout does).
  for key in ('device', 'jax_version', 'jaxlib_version', 'flax_version',
              'optax_version', 'numpy_version', 'git_commit'):
    assert records[0][key] == results[key]
  assert records[0]['git_clean'] in (True, False, None)


def test_predictions_are_saved_with_what_they_are_of(finished_run):
  workdir, results = finished_run
  config = evaluate.rebuild_config(workdir)
  config.eval_batch_size = 5  # An override of the data side.
  record = evaluate.evaluate_run(workdir, config, 'test',
                                 {'eval_batch_size': 5},
                                 save_predictions=True)
  with np.load(workdir / record['predictions']) as saved:
    correct = saved['prediction'] == saved['label']
    assert str(saved['model']) == 'ponet' and int(saved['best_step']) == (
        results['best_step'])
    # The group of `python -m lra_ponet.report`, whatever data it was tested on.
    assert str(saved['config_hash']) == load.config_hash(results['config'])
    labels = saved['label']
  assert correct.mean() == pytest.approx(record['accuracy'])
  data = tasks.get_task('listops').load(config)
  np.testing.assert_array_equal(labels, data.test.labels)
  # Other data (here the validation split) never overwrites them.
  other = evaluate.evaluate_run(workdir, config, 'validation',
                                save_predictions=True)
  assert other['predictions'] != record['predictions']


def test_a_grown_generated_split_keeps_its_first_examples(tmp_path):
  sizes = dict(num_train=8, num_val=4, workers=1, progress=False,
               limits=listops_generator.Limits(max_depth=3, max_args=3,
                                               min_length=5, max_length=60))
  listops_generator.generate_listops(tmp_path / 'a', num_test=4, **sizes)
  listops_generator.generate_listops(tmp_path / 'b', num_test=12, **sizes)
  for name in ('basic_train.tsv', 'basic_val.tsv'):
    assert (tmp_path / 'a' / name).read_text() == (
        tmp_path / 'b' / name).read_text()
  small, grown = ((tmp_path / folder / 'basic_test.tsv').read_text()
                  .splitlines() for folder in ('a', 'b'))
  assert len(grown) == len(small) + 8 and grown[:len(small)] == small


@pytest.mark.parametrize('args,message', [
    (('--config.model.dim=8',), '--config.model.dim: it would change the '
     'trained model'),
    (('--config.eval_batch_sise=8',), "unknown config field "
     "'eval_batch_sise'"),
    (('--config.data_dir=/no/such/dir',),
     '/no/such/dir/listops-1000/basic_train.tsv'),
    (('--config.generator.num_test=20',), '--config.generator.num_test '
     'applies to generated data'),
])
def test_bad_input_gets_one_line(finished_run, args, message):
  workdir, _ = finished_run
  done = run_cli(f'--workdir={workdir}', *args, module='lra_ponet.evaluate')
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last


def test_a_folder_without_a_run_is_refused(tmp_path):
  done = run_cli(f'--workdir={tmp_path}', module='lra_ponet.evaluate')
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: {tmp_path} has no config.json; point --workdir at the folder '
      'of a run of python -m lra_ponet.run')


@pytest.mark.parametrize('model', sorted(models.MIXERS))
def test_every_model_config_is_rebuilt_from_its_json(tmp_path, model):
  # config.json turns tuple fields (lsra's kernel_sizes, ...) into lists.
  config = tasks.get_config('listops', 'ponet', model)
  checkpoint.prepare_workdir(tmp_path, config.to_dict(), overwrite=False,
                             is_writer=True)
  assert evaluate.rebuild_config(tmp_path).to_dict() == config.to_dict()

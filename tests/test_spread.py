"""`python -m lra_ponet.spread`: one test set's pull on accuracies."""

import numpy as np
import pytest

from conftest import run_cli
from lra_ponet import spread
from lra_ponet.errors import UserError

EXAMPLES = 4000


def _correct(rng, accuracy):
  return rng.random(EXAMPLES) < accuracy


def test_runs_right_or_wrong_everywhere_never_move():
  correct = np.stack([np.ones(EXAMPLES, bool), np.zeros(EXAMPLES, bool)])
  report = spread.spread(correct, ['a', 'b'], 500, 20, 0,
                                  {'a': 100.0, 'b': 0.5})
  always, never = report['models']['a'], report['models']['b']
  assert always['full'] == 100 and never['full'] == 0
  assert always['sd'] == never['sd'] == never['first'] == 0
  # A published number at the accuracy is always reached, one above never.
  assert (always['share'], never['share']) == (1.0, 0.0)
  assert report['joint_mean_shift'] == 0.0
  assert not report['correlations']  # Undefined without any spread.


def test_the_spread_is_binomial_and_shared_by_agreeing_models():
  rng = np.random.default_rng(1)
  first = _correct(rng, 0.37)
  agreeing = first.copy()
  agreeing[rng.choice(EXAMPLES, 40, replace=False)] ^= True
  independent = _correct(rng, 0.37)
  report = spread.spread(
      np.stack([first, agreeing, independent]), ['a', 'b', 'c'], 500, 4000,
      0, {})
  entry = report['models']['a']
  assert entry['sd'] == pytest.approx(entry['sd_binomial'], rel=0.06)
  correlations = report['correlations']
  assert correlations[('a', 'b')] > 0.95
  assert abs(correlations[('a', 'c')]) < 0.1
  # The first 500 examples are one such test set.
  assert entry['first'] == pytest.approx(
      100 * (first[:500].mean() - first.mean()))


def test_shares_count_the_draws_above_the_published_gap():
  rng = np.random.default_rng(2)
  correct = np.stack([_correct(rng, 0.37), _correct(rng, 0.36),
                      _correct(rng, 0.37)])
  models = ['ponet', 'ponet', 'fnet']
  report = spread.spread(correct, models, 500, 2000, 3,
                                  {'ponet': 38.0, 'fnet': 36.0})
  accuracy_RxD = spread.draw_accuracies(correct, 500, 2000, 3)
  ponet_D = accuracy_RxD[:2].mean(axis=0)
  expected = np.mean(ponet_D >= 38.0)
  assert report['models']['ponet']['share'] == pytest.approx(expected)
  fnet_D = accuracy_RxD[2]
  assert report['joint_mean_shift'] == pytest.approx(
      np.mean((ponet_D >= 38.0) & (fnet_D >= 36.0)))


def _write(path, labels, predictions, model='ponet', config_hash='0a1b2c3d'):
  np.savez(path, label=labels, prediction=predictions, model=model,
           config_hash=config_hash)


def test_the_cli_writes_a_report(tmp_path):
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 10, 1000)
  for seed, model in enumerate(['ponet', 'ponet', 'fnet']):
    predictions = np.where(rng.random(1000) < 0.4, labels, (labels + 1) % 10)
    _write(tmp_path / f'{model}_{seed}.npz', labels, predictions, model)
  output = tmp_path / 'spread.md'
  done = run_cli(f'--prediction_files={tmp_path}/*.npz', '--size=200',
                 '--draws=300', '--published=ponet=41,fnet=39',
                 f'--output={output}', module='lra_ponet.spread')
  assert done.returncode == 0, done.stderr
  text = output.read_text()
  assert text == done.stdout
  assert '| ponet | 2 |' in text and '| fnet | 1 |' in text
  assert 'Correlation of the shifts (mean of runs), fnet and ponet' in text


@pytest.mark.parametrize('setup,args,message', [
    ('none', ('--size=10',), 'no prediction file matches'),
    ('other_labels', ('--size=10',), 'holds another test split'),
    ('same', ('--size=5000',), '--size=5000 must be between 1 and the 100'),
    ('same', ('--size=10', '--published=lstr=30'), '--published names lstr'),
    ('same', ('--size=10', '--published=ponet'), 'model=accuracy pairs'),
])
def test_bad_input_gets_one_line(tmp_path, setup, args, message):
  labels = np.arange(100) % 10
  if setup != 'none':
    _write(tmp_path / 'a.npz', labels, labels)
    other = labels[::-1] if setup == 'other_labels' else labels
    _write(tmp_path / 'b.npz', other, other)
  done = run_cli(f'--prediction_files={tmp_path}/*.npz', *args,
                 module='lra_ponet.spread')
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last


def test_runs_of_one_model_in_two_configs_are_kept_apart(tmp_path):
  labels = np.arange(100) % 10
  for name, digest in (('a', '11111111'), ('b', '11111111'),
                       ('c', '22222222'), ('d', '33333333')):
    _write(tmp_path / f'{name}.npz', labels, labels,
           'fnet' if name == 'd' else 'ponet', digest)
  _, _, groups = spread.load_runs([str(tmp_path / '*.npz')])
  assert groups == ['ponet 11111111', 'ponet 11111111', 'ponet 22222222',
                    'fnet']


def test_a_file_of_something_else_is_refused(tmp_path):
  np.savez(tmp_path / 'x.npz', weights=np.zeros(3))
  with pytest.raises(UserError, match='is not a prediction file'):
    spread.load_runs([str(tmp_path / 'x.npz')])

"""The ListOps generator against an evaluator written from the task's rules."""

import collections
import random
import statistics

import pytest

from lra_ponet.tasks import listops_generator

SPLIT_FILES = ('basic_train.tsv', 'basic_val.tsv', 'basic_test.tsv')
SMALL = dict(num_train=200, num_val=20, num_test=20, progress=False)


def tokenize(source):
  return source.replace(']', 'X').replace('(', '').replace(')', '').split()


def evaluate(source):
  """Value of a rendered expression, computed apart from the generator."""
  stack = []
  for token in tokenize(source):
    if token == 'X':
      arguments = []
      while isinstance(stack[-1], int):
        arguments.append(stack.pop())
      operator = stack.pop()
      if operator == '[MIN':
        stack.append(min(arguments))
      elif operator == '[MAX':
        stack.append(max(arguments))
      elif operator == '[MED':
        stack.append(int(statistics.median(arguments)))
      elif operator == '[SM':
        stack.append(sum(arguments) % 10)
      else:
        raise ValueError(f'Unknown operator {operator!r}.')
    elif token.startswith('['):
      stack.append(token)
    else:
      stack.append(int(token))
  (value,) = stack
  return value


def read_split(path):
  header, *lines = path.read_text().split('\n')[:-1]
  assert header == 'Source\tTarget'
  return [(source, int(target))
          for source, target in (line.split('\t') for line in lines)]


def file_bytes(out_dir):
  return [(out_dir / name).read_bytes() for name in SPLIT_FILES]


@pytest.fixture(scope='module')
def small_dir(tmp_path_factory):
  return listops_generator.generate_listops(
      tmp_path_factory.mktemp('seed0_workers2'), seed=0, workers=2, **SMALL)


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  """About 1,000 examples for the statistics."""
  out_dir = listops_generator.generate_listops(
      tmp_path_factory.mktemp('sample'), seed=1, num_train=900, num_val=50,
      num_test=50, workers=2, progress=False)
  return [example for name in SPLIT_FILES
          for example in read_split(out_dir / name)]


def test_render_nests_arguments_left_to_right():
  assert (listops_generator.render(('[MAX', [2, 9]))
          == '( ( ( [MAX 2 ) 9 ) ] )')
  assert (listops_generator.render(('[SM', [('[MIN', [3, 1]), 7]))
          == '( ( ( [SM ( ( ( [MIN 3 ) 1 ) ] ) ) 7 ) ] )')


def nested_pairs(tree):
  """The original's form: ((op, c1), c2) ... then (that, ']')."""
  if isinstance(tree, int):
    return tree
  operator, children = tree
  pair = operator
  for child in children:
    pair = (pair, nested_pairs(child))
  return (pair, ']')


def pairs_to_string(pair):
  if not isinstance(pair, tuple):
    return str(pair)
  return f'( {pairs_to_string(pair[0])} {pairs_to_string(pair[1])} )'


def test_render_matches_the_original_pair_printing():
  rng = random.Random('render')
  for _ in range(300):
    tree, _ = listops_generator._draw_tree(rng, 1, listops_generator.OFFICIAL)
    assert (listops_generator.render(tree)
            == pairs_to_string(nested_pairs(tree)))


def test_evaluator_follows_the_rules():
  assert evaluate('( ( ( [MAX 2 ) 9 ) ] )') == 9
  # MED of an even count: the mean of the middle two, truncated.
  assert evaluate('( ( ( ( ( [MED 1 ) 2 ) 4 ) 9 ) ] )') == 3
  assert evaluate('( ( ( ( [SM 5 ) 6 ) 7 ) ] )') == 8


def test_files_header_and_split_sizes(small_dir):
  assert sorted(path.name for path in small_dir.iterdir()) == sorted(
      SPLIT_FILES)  # No temporary file is left behind.
  sizes = [len(read_split(small_dir / name)) for name in SPLIT_FILES]
  assert sizes == [200, 20, 20]


def test_labels_lengths_and_uniqueness(small_dir):
  examples = [example for name in SPLIT_FILES
              for example in read_split(small_dir / name)]
  for source, target in examples:
    assert 0 <= target <= 9
    assert target == evaluate(source)
    assert 500 < len(tokenize(source)) < 2000
  sources = [source for source, _ in examples]
  assert len(set(sources)) == len(sources)


def test_same_seed_same_files_for_any_worker_count(small_dir, tmp_path):
  one_worker = listops_generator.generate_listops(
      tmp_path / 'one', seed=0, workers=1, **SMALL)
  assert file_bytes(one_worker) == file_bytes(small_dir)
  again = listops_generator.generate_listops(
      tmp_path / 'again', seed=0, workers=2, **SMALL)
  assert file_bytes(again) == file_bytes(small_dir)


def test_different_seed_different_files(small_dir, tmp_path):
  other = listops_generator.generate_listops(
      tmp_path / 'other', seed=1, workers=1, **SMALL)
  for ours, theirs in zip(file_bytes(small_dir), file_bytes(other)):
    assert ours != theirs


def test_label_and_length_statistics(sample):
  counts = collections.Counter(target for _, target in sample)
  # Official: 0 and 9 near 17% each, every other class near 8%.
  assert (counts[0] + counts[9]) / len(sample) > 0.25
  assert all(counts[label] > 0 for label in range(10))
  mean_length = statistics.mean(len(tokenize(source)) for source, _ in sample)
  assert 950 < mean_length < 1170  # Official: about 1,060.


def depth(source):
  """Operators nested along the deepest path of a rendered expression."""
  deepest = current = 0
  for token in tokenize(source):
    if token.startswith('['):
      current += 1
      deepest = max(deepest, current)
    elif token == 'X':
      current -= 1
  return deepest


def test_limits_bound_depth_arguments_and_length(tmp_path):
  limits = listops_generator.Limits(max_depth=2, max_args=4, min_length=3,
                                    max_length=9)
  out = listops_generator.generate_listops(
      tmp_path, seed=0, num_train=300, num_val=20, num_test=20,
      limits=limits, workers=1, progress=False)
  examples = [example for name in SPLIT_FILES
              for example in read_split(out / name)]
  assert len(examples) == 340
  for source, target in examples:
    assert target == evaluate(source)
    assert 3 < len(tokenize(source)) < 9
    assert depth(source) <= 1  # Depth 2 holds the operator's digits.
    assert len(tokenize(source)) - 2 <= 4  # Arguments of the one operator.
  with pytest.raises(ValueError, match='max_depth must be >= 1'):
    listops_generator.Limits(max_depth=0)
  with pytest.raises(ValueError, match='min_length \\+ 2 <= max_length'):
    listops_generator.Limits(min_length=10, max_length=11)

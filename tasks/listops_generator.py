"""Generates the LRA ListOps splits, reproducibly.

The algorithm is the official Long Range Arena ListOps generator (Tay et al.
2021, "Long Range Arena: A Benchmark for Efficient Transformers",
lra_benchmarks/data/listops.py, itself after Nangia & Bowman 2018): trees of
MIN, MAX, MED and SM (sum mod 10) over digits, at most 10 deep with 2 to 10
arguments per operator, kept when 500 < length < 2000 tokens and not drawn
before. The same draws in the same order, with the same `random` calls.

The original drew from the unseeded global `random` and wrote its splits in
set order. Here the draws are seeded: candidates come in chunks, chunk c draws
from `random.Random(f'{seed}:{c}')`, and chunks are taken in order whatever
the number of worker processes, so one seed always gives byte-identical files.
The files are the official ones: `basic_{train,val,test}.tsv`, tab-separated,
a `Source Target` header, then one rendered expression and its value a line.
Lines end in a bare LF where the original's csv writer wrote CRLF.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import multiprocessing
import os
import pathlib
import random

import tqdm

VALUE_P = 0.25  # A node is a leaf with probability 1 - VALUE_P.
OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')
END = ']'
VALUES = range(10)

# About 180 accepted trees a chunk: big enough to outweigh the cost of a task,
# small enough that little is drawn past the requested total.
DRAWS_PER_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class Limits:
  """The generator's bounds; the defaults are the official LRA ones.

  Trees are at most max_depth deep with 2 to max_args arguments per operator,
  and kept when min_length < length < max_length tokens (brackets `(` `)`
  not counted). Smaller limits give short, shallow expressions, e.g. for a
  quick check that a model learns.
  """
  max_depth: int = 10
  max_args: int = 10
  min_length: int = 500
  max_length: int = 2000

  def __post_init__(self):
    if self.max_depth < 1 or self.max_args < 2:
      raise ValueError(f'max_depth must be >= 1 and max_args >= 2, got '
                       f'{self.max_depth} and {self.max_args}')
    if self.min_length < 0 or self.max_length < self.min_length + 2:
      raise ValueError(f'need 0 <= min_length and min_length + 2 <= '
                       f'max_length (lengths are kept strictly between '
                       f'them), got {self.min_length} and {self.max_length}')


OFFICIAL = Limits()


def _draw_tree(rng, depth, limits):
  """Returns (tree, length in tokens): a digit, or (operator, children)."""
  r = rng.random() if depth < limits.max_depth else 1
  if r > VALUE_P:
    return rng.choice(VALUES), 1
  num_children = rng.randint(2, limits.max_args)
  children = []
  length = 2  # The operator token and the closing bracket.
  for _ in range(num_children):
    child, child_length = _draw_tree(rng, depth + 1, limits)
    children.append(child)
    length += child_length
  # Drawn after the children, as in the original, to keep its random stream.
  return (rng.choice(OPERATORS), children), length


def _append_tokens(tree, tokens):
  if isinstance(tree, int):
    tokens.append(str(tree))
    return
  operator, children = tree
  # The original nests (op, c1), then (that, c2), ..., then (that, END), and
  # prints each pair as "( A B )": all the opening parentheses come first.
  tokens.extend(['('] * (len(children) + 1))
  tokens.append(operator)
  for child in children:
    _append_tokens(child, tokens)
    tokens.append(')')
  tokens.extend((END, ')'))


def render(tree):
  """The official rendering: (MAX, [2, 9]) -> '( ( ( [MAX 2 ) 9 ) ] )'."""
  tokens = []
  _append_tokens(tree, tokens)
  return ' '.join(tokens)


def _value(tree):
  if isinstance(tree, int):
    return tree
  operator, children = tree
  values = [_value(child) for child in children]
  if operator == '[MIN':
    return min(values)
  if operator == '[MAX':
    return max(values)
  if operator == '[SM':
    return sum(values) % 10
  # '[MED': int(np.median(values)) in the original; with an even count the mean
  # of the middle two is truncated, which for digits is floor division.
  values.sort()
  middle = len(values) // 2
  if len(values) % 2:
    return values[middle]
  return (values[middle - 1] + values[middle]) // 2


def _draw_chunk(seed, limits, chunk):
  """The accepted (source, target) pairs among this chunk's draws, in order."""
  rng = random.Random(f'{seed}:{chunk}')
  examples = []
  for _ in range(DRAWS_PER_CHUNK):
    tree, length = _draw_tree(rng, 1, limits)
    # Most draws are a single digit or a small tree: only render the kept ones.
    if limits.min_length < length < limits.max_length:
      examples.append((render(tree), _value(tree)))
  return examples


def _chunks_in_order(seed, limits, executor, lookahead):
  """Yields the examples of chunk 0, 1, 2, ..., drawn `lookahead` ahead."""
  draw = functools.partial(_draw_chunk, seed, limits)
  if executor is None:
    yield from map(draw, itertools.count())
    return
  pending = collections.deque(
      executor.submit(draw, chunk) for chunk in range(lookahead))
  for chunk in itertools.count(lookahead):
    yield pending.popleft().result()
    pending.append(executor.submit(draw, chunk))


def _unique_examples(seed, limits, workers):
  """Yields the distinct accepted examples in draw order, without end."""
  executor = None
  if workers > 1:
    # Spawned, not forked: the caller may have started JAX's threads already.
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn'))
  try:
    seen = set()
    for examples in _chunks_in_order(seed, limits, executor,
                                     lookahead=2 * workers):
      for source, target in examples:
        if source not in seen:
          seen.add(source)
          yield source, target
  finally:
    if executor is not None:
      executor.shutdown(cancel_futures=True)


def generate_listops(out_dir, *, seed=0, num_train=96_000, num_val=2_000,
                     num_test=2_000, limits=OFFICIAL, workers=None,
                     progress=True):
  """Writes basic_{train,val,test}.tsv into out_dir and returns out_dir.

  The first num_train distinct accepted trees are the training split, the next
  num_val validation and the next num_test test. Files appear only once all
  three are written, so a killed run leaves no truncated file behind under a
  final name (only a hidden .tmp file).

  Args:
    out_dir: directory to write to, created if missing.
    seed: any int; the same seed gives the same files for any `workers`.
    num_train: training examples (official: 96,000).
    num_val: validation examples (official: 2,000).
    num_test: test examples (official: 2,000).
    limits: depth, argument and length bounds (default: the official ones).
      Bounds that admit too few distinct trees never finish: keep them
      loose enough for the requested number of examples.
    workers: processes drawing trees; default os.cpu_count(). Above 1 they
      are spawned, so a calling script needs an `if __name__ == '__main__'`
      guard (and cannot be read from stdin).
    progress: show a progress bar of accepted examples on stderr.
  """
  splits = {'basic_train.tsv': num_train, 'basic_val.tsv': num_val,
            'basic_test.tsv': num_test}
  if min(splits.values()) < 0:
    raise ValueError(f'Split sizes must be >= 0, got {splits}.')
  if workers is None:
    workers = os.cpu_count() or 1
  if workers < 1:
    raise ValueError(f'workers must be >= 1, got {workers}.')
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  temp_paths = {name: out_dir / f'.{name}.{os.getpid()}.tmp' for name in splits}
  examples = _unique_examples(seed, limits, workers)
  try:
    with tqdm.tqdm(total=sum(splits.values()), desc='ListOps',
                   unit=' examples', disable=not progress) as bar:
      for name, count in splits.items():
        with open(temp_paths[name], 'w', encoding='ascii', newline='') as f:
          f.write('Source\tTarget\n')
          for source, target in itertools.islice(examples, count):
            f.write(f'{source}\t{target}\n')
            bar.update()
          f.flush()
          os.fsync(f.fileno())  # So a crash after the rename can't show less.
    for name, temp_path in temp_paths.items():
      os.replace(temp_path, out_dir / name)
  finally:
    examples.close()  # Stops the worker processes.
    for temp_path in temp_paths.values():
      temp_path.unlink(missing_ok=True)
  return out_dir

"""Task data containers, on-disk cache location and the batch iterators."""

import contextlib
import dataclasses
import hashlib
import itertools
import os
import pathlib
import queue
import threading

import numpy as np

from lra_ponet.errors import UserError

PAD_ID = 0


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What the model needs to know about a task."""
  name: str
  num_classes: int
  vocab_size: int  # Embedding table size, padding id 0 included.
  paired: bool = False  # Two documents per example (retrieval).
  zero_is_padding: bool = True  # False for pixel tasks: pixel 0 is black.


@dataclasses.dataclass
class Split:
  """One split: inputs_NxL (or inputs_Nx2xL for paired tasks) and labels_N.

  Inputs are integer token ids, already truncated and padded with PAD_ID to
  the task's padded length.
  """
  inputs: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class TaskData:
  train: Split
  validation: Split
  test: Split
  source: str  # Where the data came from, printed and stored in results.json.
  notes: str = ''  # E.g. "validation = test split (IMDb has none)".


def cache_dir() -> pathlib.Path:
  """Root of generated data and tokenisation caches ($LRA_PONET_CACHE)."""
  root = os.environ.get('LRA_PONET_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'lra_ponet')
  path = pathlib.Path(root)
  path.mkdir(parents=True, exist_ok=True)
  return path


def pack(sequences, max_len: int, padded_len: int, dtype) -> np.ndarray:
  """Truncates each id sequence to max_len and pads it with PAD_ID to L."""
  packed_NxL = np.full((len(sequences), padded_len), PAD_ID, dtype=dtype)
  for row, ids in enumerate(sequences):
    ids = ids[:max_len]
    packed_NxL[row, :len(ids)] = ids
  return packed_NxL


def code_hash(*modules) -> str:
  """A short hash of the modules' source: the recipe part of cache keys.

  Any change to the code that produces cached data, the tokeniser or the
  grayscale conversion included, changes the hash, so stale data is never
  reused (at worst an unrelated edit of those files rebuilds a cache).
  """
  digest = hashlib.sha256()
  for module in modules:
    digest.update(pathlib.Path(module.__file__).read_bytes())
  return digest.hexdigest()[:16]


def cached_arrays(kind: str, key: str, build, *, recipe: str):
  """Returns build()'s dict of arrays, stored under the cache after one call.

  `key` must identify everything the arrays depend on (source file, its size
  and modification time, lengths) and `recipe` the code that builds them
  (`code_hash` of its modules). The file is written under a temporary name
  and renamed, so an interrupted run never leaves a truncated cache.
  """
  digest = hashlib.sha256(f'{recipe}:{key}'.encode()).hexdigest()[:20]
  path = cache_dir() / kind / f'{digest}.npz'
  if path.exists():
    with np.load(path) as stored:
      return dict(stored)
  arrays = build()
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(f'{path.stem}.{os.getpid()}.partial.npz')
  np.savez(partial, **arrays)
  os.replace(partial, path)
  return arrays


def file_key(path) -> str:
  """Identity of a source file for cache keys: path, size, mtime."""
  stat = os.stat(path)
  return f'{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}'


def text_lines(path, expected: str):
  """Yields (line number, line without its newline) of a UTF-8 text file.

  A line that is not UTF-8 is a UserError naming the file, the line, the
  byte and `expected` (what the file should hold), not a decode traceback.
  """
  with open(path, 'rb') as lines:
    for line_number, raw in enumerate(lines, start=1):
      try:
        yield line_number, raw.decode('utf-8').rstrip('\r\n')
      except UnicodeDecodeError as error:
        raise UserError(
            f'{path}:{line_number}: byte 0x{raw[error.start]:02x} at column '
            f'{error.start + 1} is not UTF-8 text; expected {expected}'
        ) from None


def tsv_splits(task: str, directory, split_files: dict, read_tsv,
               config, *, recipe: str) -> dict:
  """Reads every split's TSV file through the array cache.

  `read_tsv(path, max_len, padded_len)` returns the task's arrays dataclass;
  `recipe` identifies its code (see cached_arrays); a missing file is named
  in the error.
  """
  splits = {}
  for split, name in split_files.items():
    path = pathlib.Path(directory) / name
    if not path.exists():
      raise UserError(f'{task} data not found: expected {path}')
    key = f'{file_key(path)}:{config.max_len}:{config.padded_len}'
    arrays = cached_arrays(task, key, lambda path=path: vars(
        read_tsv(path, config.max_len, config.padded_len)), recipe=recipe)
    splits[split] = Split(**arrays)
  return splits


def train_batches(split: Split, batch_size: int, seed: int,
                  start_step: int = 0):
  """Yields training batches from start_step on, reshuffled every epoch.

  The batch of a step is a pure function of (seed, step), so a resumed run
  sees exactly the batches the uninterrupted run would have seen.
  """
  num_examples = len(split)
  if num_examples < batch_size:
    raise UserError(f'the training split has {num_examples} examples, fewer '
                    f'than batch_size {batch_size}')
  epoch, order = None, None
  for step in itertools.count(start_step):
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    indices = np.empty(batch_size, dtype=np.int64)
    for batch_epoch in np.unique(positions // num_examples):
      if batch_epoch != epoch:
        epoch = batch_epoch
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
      in_epoch = positions // num_examples == batch_epoch
      indices[in_epoch] = order[positions[in_epoch] % num_examples]
    yield {'inputs': split.inputs[indices], 'label': split.labels[indices]}


def eval_batches(split: Split, batch_size: int):
  """Yields every example once; the last batch is padded, with weight 0."""
  for start in range(0, len(split), batch_size):
    stop = min(start + batch_size, len(split))
    filler = batch_size - (stop - start)
    weight = np.concatenate([np.ones(stop - start, np.float32),
                             np.zeros(filler, np.float32)])
    take = np.concatenate([np.arange(start, stop),
                           np.zeros(filler, np.int64)])
    yield {'inputs': split.inputs[take], 'label': split.labels[take],
           'weight': weight}


def prefetch(batches, put, size: int = 2):
  """Runs `put(batch)` (e.g. a device transfer) in a background thread.

  Keeps `size` batches ready ahead of the training step so that host-side
  gathering never stalls the accelerator. Exceptions reach the consumer.
  Closing the generator waits for the thread to end: a thread still inside a
  device transfer when the interpreter exits aborts the process.
  """
  ready = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def produce():
    try:
      for batch in batches:
        if stop.is_set():
          return
        ready.put(put(batch))
      ready.put(done)
    except BaseException as error:  # Re-raised in the consuming thread.
      ready.put(error)

  producer = threading.Thread(target=produce, daemon=True)
  producer.start()
  try:
    while (item := ready.get()) is not done:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    while producer.is_alive():  # Room in the queue lets it see `stop`.
      with contextlib.suppress(queue.Empty):
        ready.get_nowait()
      producer.join(timeout=0.01)

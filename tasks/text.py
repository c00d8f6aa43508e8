"""Text: byte-level IMDb sentiment (as in LRA), 2 classes, up to 4,000 bytes.

Data: tensorflow-datasets `imdb_reviews` (25,000 train, 25,000 test) read
from array_record files in `config.data_dir` (a tensorflow-datasets data dir)
or, when it is empty, in `$LRA_PONET_CACHE/tensorflow_datasets`, where
`python -m lra_ponet.data prepare --task=text` puts it. Tokens are the UTF-8
bytes of a review + 1, so 0 stays padding. IMDb has no validation split: as in
LRA, the test split is used for validation too, which makes the selected
parameters' test accuracy optimistic; every result says so.
"""

import sys

import numpy as np

from lra_ponet import input_pipeline
from lra_ponet.tasks import tfds_reader

TFDS_NAME = 'imdb_reviews'
NOTES = ('validation = test split: IMDb has no validation split, so the test '
         'split selects the parameters too, as in LRA')

INFO = input_pipeline.TaskInfo(name='text', num_classes=2, vocab_size=257)
# Cache key of the tokenised arrays: the code that makes them.
RECIPE = input_pipeline.code_hash(sys.modules[__name__])


def byte_ids(texts, max_len: int, padded_len: int) -> np.ndarray:
  """Bytes + 1, truncated to max_len and padded to L: ids_NxL uint16.

  uint16, not uint8: byte 255 becomes id 256.
  """
  ids_NxL = np.zeros((len(texts), padded_len), np.uint16)
  for row, text in enumerate(texts):
    head = np.frombuffer(text[:max_len], np.uint8)
    ids_NxL[row, :len(head)] = head.astype(np.uint16) + 1
  return ids_NxL


def _tokenize(source, max_len: int, padded_len: int) -> dict:
  texts, labels = [], []
  for example in source:
    text = example['text']
    # Prepared data yields bytes; tfds.testing.mock_data yields str.
    texts.append(text.encode('utf-8') if isinstance(text, str) else text)
    labels.append(example['label'])
  return {'inputs': byte_ids(texts, max_len, padded_len),
          'labels': np.asarray(labels, np.int32)}


def load(config) -> input_pipeline.TaskData:
  builder, sources = tfds_reader.open_splits(
      TFDS_NAME, 'text', tfds_reader.tfds_dir(config.data_dir),
      {'train': 'train', 'test': 'test'})
  splits = {}
  for split, source in sources.items():
    key = (f'{tfds_reader.files_key(builder)}:{split}:{len(source)}:'
           f'{config.max_len}:{config.padded_len}')
    arrays = input_pipeline.cached_arrays(
        'text', key, lambda source=source: _tokenize(
            source, config.max_len, config.padded_len), recipe=RECIPE)
    splits[split] = input_pipeline.Split(**arrays)
  return input_pipeline.TaskData(
      train=splits['train'], validation=splits['test'], test=splits['test'],
      source=tfds_reader.describe(builder), notes=NOTES)


def prepare(data_dir: str) -> str:
  """Downloads the data set into the tfds dir (`contract.Task`)."""
  return tfds_reader.prepare('text', TFDS_NAME, data_dir)

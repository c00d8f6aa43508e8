"""Image: grayscale CIFAR-10 as a sequence of 1,024 pixels (as in LRA).

Data: tensorflow-datasets `cifar10` read from array_record files in
`config.data_dir` (a tensorflow-datasets data dir) or, when it is empty, in
`$LRA_PONET_CACHE/tensorflow_datasets`, where
`python -m lra_ponet.data prepare --task=image` puts it. Splits as in LRA:
train = `train[:90%]` (45,000), validation = `train[90%:]` (5,000), test =
`test` (10,000). Each image becomes gray exactly as LRA's
`tf.image.rgb_to_grayscale`, and its pixels, row by row, are the tokens
(vocabulary 256): no normalisation, no augmentation.

Pixel value 0 (black) is a real token here. The official PoNet code masked
every black pixel as padding (its mask is `token != 0`, as the official LRA
code's `inputs > 0`) and divided the mean pooling by the padded length;
`--config.official_pixel_quirks=True` restores the mask (the `lra` preset
sets it) (the mean over the padded length is already the default,
`model.mean_over='padded_length'`). results.json records both
(`mask_zero_tokens`, `mean_over`). The same holds for Pathfinder and Path-X.
"""

import sys

import numpy as np

from lra_ponet import input_pipeline
from lra_ponet.tasks import tfds_reader

TFDS_NAME = 'cifar10'
SPLITS = {'train': 'train[:90%]', 'validation': 'train[90%:]',
          'test': 'test'}
# TensorFlow's rgb_to_grayscale weights, applied in float32 as TF does.
RGB_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)

INFO = input_pipeline.TaskInfo(name='image', num_classes=10, vocab_size=256,
                               zero_is_padding=False)
# Cache key of the gray pixel arrays: the code that makes them.
RECIPE = input_pipeline.code_hash(sys.modules[__name__], input_pipeline)


def grayscale(images_NxHxWx3: np.ndarray) -> np.ndarray:
  """uint8 RGB -> uint8 gray, as tf.image.rgb_to_grayscale on uint8 images.

  TF converts to float32 in [0, 1] (x * 1/255), takes the weighted sum,
  converts back with convert_image_dtype (x * 255.5) and truncates toward
  zero: gray = uint8(((0.2989 R + 0.5870 G + 0.1140 B) / 255) * 255.5).
  """
  unit_NxHxWx3 = images_NxHxWx3.astype(np.float32) * np.float32(1 / 255)
  gray_NxHxW = (unit_NxHxWx3[..., 0] * RGB_WEIGHTS[0]
                + unit_NxHxWx3[..., 1] * RGB_WEIGHTS[1]
                + unit_NxHxWx3[..., 2] * RGB_WEIGHTS[2])
  return (gray_NxHxW * np.float32(255.5)).astype(np.uint8)


def pixel_tokens(images_NxHxW: np.ndarray, max_len: int,
                 padded_len: int) -> np.ndarray:
  """Row-major pixels, truncated to max_len and padded to L: uint8 NxL."""
  pixels_NxHW = images_NxHxW.reshape(len(images_NxHxW), -1)[:, :max_len]
  if pixels_NxHW.shape[1] == padded_len:
    return pixels_NxHW
  tokens_NxL = np.full((len(pixels_NxHW), padded_len), input_pipeline.PAD_ID,
                       np.uint8)
  tokens_NxL[:, :pixels_NxHW.shape[1]] = pixels_NxHW
  return tokens_NxL


def _tokenize(source, max_len: int, padded_len: int) -> dict:
  images, labels = [], []
  for example in source:
    images.append(example['image'])
    labels.append(example['label'])
  return {'inputs': pixel_tokens(grayscale(np.stack(images)), max_len,
                                 padded_len),
          'labels': np.asarray(labels, np.int32)}


def load(config) -> input_pipeline.TaskData:
  builder, sources = tfds_reader.open_splits(
      TFDS_NAME, 'image', tfds_reader.tfds_dir(config.data_dir), SPLITS)
  splits = {}
  for split, source in sources.items():
    key = (f'{tfds_reader.files_key(builder)}:{SPLITS[split]}:{len(source)}:'
           f'{config.max_len}:{config.padded_len}')
    arrays = input_pipeline.cached_arrays(
        'image', key, lambda source=source: _tokenize(
            source, config.max_len, config.padded_len), recipe=RECIPE)
    splits[split] = input_pipeline.Split(**arrays)
  return input_pipeline.TaskData(source=tfds_reader.describe(builder),
                                 **splits)


def prepare(data_dir: str) -> str:
  """Downloads the data set into the tfds dir (`contract.Task`)."""
  return tfds_reader.prepare('image', TFDS_NAME, data_dir)

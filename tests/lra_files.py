"""Writes small task data in the exact official formats, for the task tests.

The tensorflow-datasets writers subclass the real `imdb_reviews` and
`cifar10` builders so the files, names and dataset_info.json are the real
ones; images are handed over as PIL images, which tfds encodes without
TensorFlow.
"""

import pathlib

from PIL import Image


def write_imdb(data_dir, train, test):
  """`train`, `test`: lists of (review bytes, label) -> array_record files."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.datasets.imdb_reviews import (
      imdb_reviews_dataset_builder)

  with tfds.core.registered.skip_registration():

    class FakeImdb(imdb_reviews_dataset_builder.Builder):
      name = 'imdb_reviews'
      # Metadata (description, citation) is found next to the real builder.
      pkg_dir_path = imdb_reviews_dataset_builder.Builder._get_pkg_dir_path()

      def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': _examples(train), 'test': _examples(test)}

  def _examples(rows):
    for index, (text, label) in enumerate(rows):
      yield index, {'text': text, 'label': label}

  FakeImdb(data_dir=str(data_dir), config='plain_text').download_and_prepare(
      file_format='array_record')


def write_cifar10(data_dir, train, test):
  """`train`, `test`: (images_NxHxWx3 uint8, labels_N) -> array_record."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.image_classification import cifar

  with tfds.core.registered.skip_registration():

    class FakeCifar10(cifar.Cifar10):
      name = 'cifar10'

      def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': _examples('train', *train),
                'test': _examples('test', *test)}

  def _examples(split, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'id': f'{split}_{index}', 'label': int(label),
                    'image': Image.fromarray(image)}

  FakeCifar10(data_dir=str(data_dir)).download_and_prepare(
      file_format='array_record')


def write_aan(directory, rows_by_split):
  """new_aan_pairs.{train,eval,test}.tsv: no header, label written `1.0`."""
  directory = pathlib.Path(directory) / 'tsv_data'
  directory.mkdir(parents=True, exist_ok=True)
  for split, rows in rows_by_split.items():
    lines = [b'\t'.join([f'{float(label)}'.encode(), b'id1_%d' % index,
                         b'id2_%d' % index, text1, text2])
             for index, (label, text1, text2) in enumerate(rows)]
    (directory / f'new_aan_pairs.{split}.tsv').write_bytes(
        b''.join(line + b'\n' for line in lines))
  return directory


def write_pathfinder(root, resolution, images_NxHxW, labels_N, *,
                     empty=(), per_metadata_file=4):
  """The release layout under root/pathfinder<res>/curv_contour_length_14.

  Metadata files `metadata/<k>.npy` are text, one line per image:
  `imgs/<k> sample_<i>.png <i> <label> ...`. Indices in `empty` get an empty
  PNG file, as some release images are.
  """
  split_dir = (pathlib.Path(root) / f'pathfinder{resolution}'
               / 'curv_contour_length_14')
  (split_dir / 'metadata').mkdir(parents=True, exist_ok=True)
  lines_by_file = {}
  for index, (image, label) in enumerate(zip(images_NxHxW, labels_N)):
    folder = index // per_metadata_file
    image_dir = split_dir / 'imgs' / str(folder)
    image_dir.mkdir(parents=True, exist_ok=True)
    name = f'sample_{index}.png'
    if index in empty:
      (image_dir / name).write_bytes(b'')
    else:
      Image.fromarray(image, mode='L').save(image_dir / name)
    lines_by_file.setdefault(folder, []).append(
        f'imgs/{folder} {name} {index} {int(label)} 1.0 14 4 2 0.5 1 1\n')
  for folder, lines in lines_by_file.items():
    (split_dir / 'metadata' / f'{folder}.npy').write_text(''.join(lines))
  return split_dir

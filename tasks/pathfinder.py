"""Pathfinder: are the two markers connected by a path? 2 classes, 32x32.

Data, by `config.data_dir`:
- set: the LRA release, `pathfinder<resolution>/curv_contour_length_14/` under
  it (the unpacked `lra_release/`), or that split folder itself. Each
  `metadata/<k>.npy` is a text file, one line per image: field 0 the folder
  (`imgs/<k>`), field 1 the file name, field 3 the label. Images are 8-bit
  grayscale PNGs; empty image files (the release has some) are skipped.
- empty: images drawn by tasks/pathfinder_generator.py (`generated_examples`
  images at `resolution`, seed `data_seed`), cached under the suite's cache.
  They follow the release's recipe but are not its images: results say so.

Splits, by `config.split_order`: 'metadata_order' takes 80/10/10 of the
listed images in metadata order (files by number k, lines in file order) and
then drops the empty ones. That is not LRA's split: LRA took `[:80%]`,
`[80%:90%]` and `[90%:]` of its tensorflow-datasets build, whose order
tensorflow-datasets shuffles by example key, and the official PoNet code
shuffled too; neither order is reproduced here. 'random42' drops the
empty images and splits the rest 80/10/10 by numpy's
`default_rng(42).permutation`, like the random seed-42 split of the
state-space-model papers (whose permutation came from PyTorch, so the
examples differ).

Tokens are the pixel values row by row (vocabulary 256); pixel 0 is a real
token unless `official_pixel_quirks` is set (see tasks/image.py).
"""

import io
import pathlib
import sys

import numpy as np
from PIL import Image

from lra_ponet import input_pipeline
from lra_ponet.errors import UserError
from lra_ponet.tasks import image
from lra_ponet.tasks import pathfinder_generator

SPLIT_DIR = 'curv_contour_length_14'  # The "hard" split LRA uses.
# config.split_order -> how results describe it.
SPLIT_ORDERS = {'metadata_order': ('80/10/10 split in metadata listing order '
                                   "(not LRA's split)"),
                'random42': '80/10/10 random split (numpy, seed 42)'}
RANDOM_SPLIT_SEED = 42

INFO = input_pipeline.TaskInfo(name='pathfinder', num_classes=2,
                               vocab_size=256, zero_is_padding=False)
# Cache keys: the code that decodes release images and the generator's.
RECIPE = input_pipeline.code_hash(sys.modules[__name__])
GENERATOR_RECIPE = input_pipeline.code_hash(pathfinder_generator)


def read_metadata(split_dir: pathlib.Path):
  """(image path, label, 'metadata file:line') of every listed image."""
  files = sorted((split_dir / 'metadata').glob('*.npy'),
                 key=_metadata_number)
  if not files:
    raise UserError(f'no metadata files found: expected '
                    f'{split_dir / "metadata"}/<k>.npy')
  listed = []
  for path in files:
    lines = input_pipeline.text_lines(
        path, 'text lines "imgs/<k> sample_<i>.png <index> <label> ..."')
    for line_number, line in lines:
      fields = line.split()
      if not fields:
        continue
      where = f'{path}:{line_number}'
      if len(fields) < 4:
        raise UserError(f'{where}: expected at least 4 space-separated '
                        f'fields (folder, file, index, label), found '
                        f'{len(fields)}')
      if fields[3] not in ('0', '1'):
        raise UserError(f'{where}: the label {fields[3][:40]!r} (field 4) '
                        'is not 0 or 1')
      listed.append((split_dir / fields[0] / fields[1], int(fields[3]),
                     where))
  return listed


def _metadata_number(path: pathlib.Path) -> int:
  if not path.stem.isdigit():
    raise UserError(f'unexpected metadata file {path}: the release names '
                    'them metadata/<k>.npy with k a number')
  return int(path.stem)


def read_release(split_dir: pathlib.Path, resolution: int) -> dict:
  """Decodes every listed non-empty PNG.

  Returns images_NxHxW (uint8), labels_N, positions_N (each image's index in
  the metadata listing, for the LRA split) and num_listed.
  """
  listed = read_metadata(split_dir)
  images, labels, positions = [], [], []
  for position, (path, label, where) in enumerate(listed):
    try:
      encoded = path.read_bytes()
    except FileNotFoundError:
      raise UserError(f'{where}: the listed image {path} does not '
                      'exist') from None
    if not encoded:
      continue
    images.append(_decode_png(encoded, path, where, resolution))
    labels.append(label)
    positions.append(position)
  if not images:
    raise UserError(f'{split_dir}: every listed image is empty')
  return {'images': np.stack(images), 'labels': np.asarray(labels, np.int32),
          'positions': np.asarray(positions, np.int64),
          'num_listed': np.asarray(len(listed))}


def _decode_png(encoded: bytes, path, where: str, resolution: int):
  expected = f'an 8-bit grayscale (mode L) {resolution}x{resolution} PNG'
  try:
    with Image.open(io.BytesIO(encoded)) as png:
      if png.mode != 'L' or png.size != (resolution, resolution):
        raise UserError(f'{path}: expected {expected}, found mode '
                        f'{png.mode} {png.size[0]}x{png.size[1]}')
      return np.asarray(png)
  except (OSError, SyntaxError, ValueError) as error:
    # PIL's errors for bytes that are no image, or a truncated one.
    raise UserError(f'{path} (listed at {where}): cannot decode the image '
                    f'({error}); expected {expected}') from None


def split_indices(positions_N: np.ndarray, num_listed: int,
                  split_order: str) -> dict:
  """Index (a slice or an array) of each split into the kept images.

  split_order is one of SPLIT_ORDERS.
  """
  if split_order == 'metadata_order':
    starts = np.searchsorted(positions_N,
                             [num_listed * 8 // 10, num_listed * 9 // 10])
    return {'train': slice(0, starts[0]),
            'validation': slice(starts[0], starts[1]),
            'test': slice(starts[1], len(positions_N))}
  order = np.random.default_rng(RANDOM_SPLIT_SEED).permutation(
      len(positions_N))
  num_eval = len(positions_N) // 10
  num_train = len(positions_N) - 2 * num_eval
  return {'train': order[:num_train],
          'validation': order[num_train:num_train + num_eval],
          'test': order[num_train + num_eval:]}


def _release_dir(data_dir: str, resolution: int, title: str) -> pathlib.Path:
  """Accepts the release root (`lra_release/`) or the split folder itself."""
  root = pathlib.Path(data_dir).expanduser()
  expected = root / f'pathfinder{resolution}' / SPLIT_DIR
  for candidate in (expected, root):
    if (candidate / 'metadata').is_dir():
      return candidate
  raise UserError(f'{title} data not found: expected {expected}/metadata '
                  '(the unpacked LRA release, lra_release.gz); omit '
                  f'--config.data_dir to generate {title} images instead')


def _release_images(config, title: str):
  split_dir = _release_dir(config.data_dir, config.resolution, title)
  metadata_key = ':'.join(input_pipeline.file_key(path) for path in
                          sorted((split_dir / 'metadata').glob('*.npy')))
  arrays = input_pipeline.cached_arrays(
      'pathfinder', f'{metadata_key}:{config.resolution}',
      lambda: read_release(split_dir, config.resolution), recipe=RECIPE)
  skipped = int(arrays['num_listed']) - len(arrays['labels'])
  source = (f'LRA release files {split_dir} ({len(arrays["labels"])} '
            f'images; {skipped} empty image files skipped)')
  return arrays, source


def _generated_images(config, title: str):
  resolution, count = config.resolution, config.generated_examples
  if resolution not in pathfinder_generator.SETTINGS:
    raise UserError(f'the {title} generator draws resolutions '
                    f'{", ".join(map(str, pathfinder_generator.SETTINGS))}; '
                    f'config.resolution is {resolution}')
  def generate():
    print(f'Generating {count} {title} images at {resolution}x{resolution} '
          f'(seed {config.data_seed}); they are cached for later runs')
    images, labels = pathfinder_generator.generate_pathfinder(
        count, resolution, seed=config.data_seed)
    return {'images': images, 'labels': labels.astype(np.int32),
            'positions': np.arange(count), 'num_listed': np.asarray(count)}

  arrays = input_pipeline.cached_arrays(
      'pathfinder_generated',
      f'{resolution}:{config.data_seed}:{count}', generate,
      recipe=GENERATOR_RECIPE)
  source = (f'generated by tasks/pathfinder_generator.py: {count} images at '
            f'{resolution}x{resolution}, seed {config.data_seed} (the LRA '
            'recipe, not the LRA release images)')
  return arrays, source


def load_images(config, title: str) -> input_pipeline.TaskData:
  """Pathfinder and Path-X: release files or generated images, split."""
  if config.split_order not in SPLIT_ORDERS:
    raise UserError(f'unknown config.split_order {config.split_order!r}; use '
                    f'one of {", ".join(SPLIT_ORDERS)}')
  if config.data_dir:
    arrays, source = _release_images(config, title)
  else:
    arrays, source = _generated_images(config, title)
  indices = split_indices(arrays['positions'], int(arrays['num_listed']),
                          config.split_order)
  splits = {}
  for split, index in indices.items():
    labels = arrays['labels'][index]
    if not len(labels):
      raise UserError(f'the {title} {split} split is empty: '
                      f'{len(arrays["labels"])} images are too few for an '
                      '80/10/10 split')
    splits[split] = input_pipeline.Split(
        inputs=image.pixel_tokens(arrays['images'][index], config.max_len,
                                  config.padded_len),
        labels=labels)
  return input_pipeline.TaskData(
      source=f'{source}; {SPLIT_ORDERS[config.split_order]}', **splits)


def load(config) -> input_pipeline.TaskData:
  return load_images(config, 'Pathfinder')

"""The five tasks beside ListOps: loaders on files in the official formats.

Every loader reads small data written here in the release's exact format
(tests/lra_files.py) or served by `tfds.testing.mock_data`; no TensorFlow and
no download is needed. The CLI runs are in tests/test_tasks_cli.py.
"""

import ml_collections
import numpy as np
import pytest
from flax import nnx

from lra_ponet import tasks
from lra_ponet import data
from lra_ponet import models
from lra_ponet import steps
from lra_ponet import validation
from lra_ponet.errors import UserError
from lra_ponet.tasks import image
from lra_ponet.tasks import pathfinder
from lra_ponet.tasks import retrieval
from lra_ponet.tasks import text

import lra_files


@pytest.fixture
def tfds():
  return pytest.importorskip('tensorflow_datasets')


NEEDS_TFDS = pytest.mark.usefixtures('tfds')


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LRA_PONET_CACHE', str(tmp_path / 'cache'))


def make_config(**fields):
  return ml_collections.ConfigDict({'data_dir': '', 'data_seed': 0, **fields})


def decode(ids_L) -> bytes:
  """Byte ids back to bytes, padding dropped."""
  return bytes(int(token) - 1 for token in ids_L if token)


# Grayscale and the retrieval head.


def test_grayscale_is_tensorflow_rgb_to_grayscale_truncated():
  # gray = uint8(((0.2989 R + 0.5870 G + 0.1140 B) / 255) * 255.5), by hand:
  cases = {
      (0, 0, 0): 0,
      (255, 255, 255): 255,  # 0.9999 * 255.5 = 255.47
      (255, 0, 0): 76,  # 0.2989 * 255.5 = 76.37
      (0, 255, 0): 149,  # 0.5870 * 255.5 = 149.98: truncated, not rounded
      (0, 0, 255): 29,  # 0.1140 * 255.5 = 29.13
      (1, 1, 1): 1,  # 0.9999 / 255 * 255.5 = 1.0018
      (128, 128, 128): 128,  # 127.987 / 255 * 255.5 = 128.24
      (200, 100, 50): 124,  # 124.18 / 255 * 255.5 = 124.42
      (10, 20, 30): 18,  # 18.149 / 255 * 255.5 = 18.18
  }
  rgb_1xNx3 = np.array([list(cases)], np.uint8)
  gray = image.grayscale(rgb_1xNx3)
  assert gray.dtype == np.uint8
  assert gray[0].tolist() == list(cases.values())


def test_pair_features_are_u_v_product_difference():
  u_BxD = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
  v_BxD = np.array([[3.0, 5.0], [2.0, 4.0]], np.float32)
  features = np.asarray(models.pair_features(u_BxD, v_BxD))
  np.testing.assert_allclose(features, [
      [1, 2, 3, 5, 3, 10, -2, -3],
      [0.5, -1, 2, 4, 1, -4, -1.5, -5]])
  np.testing.assert_allclose(models.pair_features(u_BxD, v_BxD, 'concat'),
                             [[1, 2, 3, 5], [0.5, -1, 2, 4]])


def _relu_mlp(features_BxF, layers):
  """The head's maths from its kernels and biases, in numpy."""
  for index, layer in enumerate(layers):
    features_BxF = (features_BxF @ np.asarray(layer.kernel[...])
                    + np.asarray(layer.bias[...]))
    if index < len(layers) - 1:
      features_BxF = np.maximum(features_BxF, 0)
  return features_BxF


@pytest.mark.parametrize('preset,features,widths', [
    ('ponet', 'nli', [32, 16, 2]),  # Linear(4D -> 2D), ReLU, Linear(2D -> 2).
    ('lra', 'concat', [16, 12, 6, 2]),  # [u, v], mlp_dim, mlp_dim // 2.
])
def test_two_tower_head_maths(preset, features, widths):
  config = tasks.get_config('retrieval', preset)
  config.model.update(num_layers=1, dim=8, num_heads=2, mlp_dim=12,
                      ponet=dict(segment_num=2))
  model = models.build_model(config.model, retrieval.INFO, 16,
                             rngs=nnx.Rngs(0))
  model.eval()
  layers = list(model.head.layers)
  assert [layers[0].kernel.shape[0]] + [
      layer.kernel.shape[1] for layer in layers] == widths
  rng = np.random.default_rng(0)
  tokens_Bx2xL = rng.integers(1, 257, (3, 2, 16))
  mask_Bx2xL = np.arange(16) < rng.integers(1, 17, (3, 2, 1))
  tokens_Bx2xL = np.where(mask_Bx2xL, tokens_Bx2xL, 0)
  u_BxD = np.asarray(model.encoder(tokens_Bx2xL[:, 0], mask_Bx2xL[:, 0]))
  v_BxD = np.asarray(model.encoder(tokens_Bx2xL[:, 1], mask_Bx2xL[:, 1]))
  assert not np.allclose(u_BxD, v_BxD)
  pair_BxF = np.concatenate(
      [u_BxD, v_BxD] + ([u_BxD * v_BxD, u_BxD - v_BxD]
                        if features == 'nli' else []), axis=1)
  np.testing.assert_allclose(model(tokens_Bx2xL, mask_Bx2xL),
                             _relu_mlp(pair_BxF, layers), rtol=1e-5,
                             atol=1e-5)


# Text: IMDb from tensorflow-datasets.


@NEEDS_TFDS
def test_text_on_a_real_array_record_dataset(tmp_path):
  train_rows = [('café au lait'.encode(), 1), (b'x' * 50, 0),
                (bytes([0xff, 0x00, 0x41]), 1)]
  test_rows = [(b'bad film', 0), ('naïve'.encode(), 1)]
  lra_files.write_imdb(tmp_path / 'tfds', train_rows, test_rows)
  config = make_config(data_dir=str(tmp_path / 'tfds'), max_len=10,
                       padded_len=12)
  loaded = text.load(config)
  assert loaded.train.inputs.shape == (3, 12)
  assert loaded.train.inputs.dtype == np.uint16
  # tfds shuffles on write: compare as sets of (bytes, label).
  assert set(zip(map(decode, loaded.train.inputs), loaded.train.labels)) == {
      ('café au lait'.encode()[:10], 1), (b'x' * 10, 0),
      (bytes([0xff, 0x00, 0x41]), 1)}
  byte_255 = [row for row in loaded.train.inputs if row[0] == 256]
  assert byte_255[0][:4].tolist() == [256, 1, 66, 0]  # 0xff, 0x00, 'A', pad.
  assert loaded.validation is loaded.test
  assert len(loaded.test) == 2
  assert 'validation = test split' in loaded.notes
  assert 'imdb_reviews/plain_text/1.0.0' in loaded.source
  assert str(tmp_path / 'tfds') in loaded.source
  again = text.load(config)  # From the cache.
  np.testing.assert_array_equal(again.train.inputs, loaded.train.inputs)


def test_text_on_tfds_mock_data(tfds):
  config = make_config(max_len=20, padded_len=24)
  with tfds.testing.mock_data(num_examples=5):
    loaded = text.load(config)
    expected = [example['text'].encode()[:20] for example in
                tfds.data_source('imdb_reviews', split='test')]
  assert loaded.train.inputs.shape == (5, 24)
  assert [decode(row) for row in loaded.test.inputs] == expected
  assert set(loaded.train.labels.tolist()) <= {0, 1}
  assert loaded.validation is loaded.test


@NEEDS_TFDS
def test_text_without_data_names_the_dir_and_the_prepare_command(tmp_path):
  config = make_config(data_dir=str(tmp_path / 'nothing'), max_len=8,
                       padded_len=8)
  with pytest.raises(UserError) as error:
    text.load(config)
  message = str(error.value)
  assert f'imdb_reviews not found in tensorflow-datasets dir {tmp_path}' in (
      message)
  assert 'python -m lra_ponet.data prepare --task=text' in message
  assert '\n' not in message


@NEEDS_TFDS
def test_text_prepared_as_tfrecord_says_so(tmp_path):
  lra_files.write_imdb(tmp_path, [(b'good', 1)], [(b'bad', 0)])
  info = next(tmp_path.glob('imdb_reviews/*/*/dataset_info.json'))
  info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
  with pytest.raises(UserError, match='was prepared as tfrecord, which '
                     'needs TensorFlow to read'):
    text.load(make_config(data_dir=str(tmp_path), max_len=8, padded_len=8))


# Image: CIFAR-10 from tensorflow-datasets.


@NEEDS_TFDS
def test_image_on_a_real_array_record_dataset(tmp_path):
  rng = np.random.default_rng(0)
  train_rgb = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
  train_rgb[0] = 0  # All black: pixel 0 must stay a token.
  test_rgb = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  lra_files.write_cifar10(tmp_path / 'tfds', (train_rgb, np.arange(10)),
                          (test_rgb, np.arange(4)))
  loaded = image.load(make_config(data_dir=str(tmp_path / 'tfds'),
                                  max_len=1024, padded_len=1024))
  assert [len(loaded.train), len(loaded.validation), len(loaded.test)] == [
      9, 1, 4]  # train[:90%], train[90%:], test.
  assert loaded.train.inputs.dtype == np.uint8
  expected = image.grayscale(train_rgb).reshape(10, 1024)
  seen = np.concatenate([loaded.train.inputs, loaded.validation.inputs])
  seen_labels = np.concatenate([loaded.train.labels,
                                loaded.validation.labels])
  np.testing.assert_array_equal(seen, expected[seen_labels])
  assert 'cifar10/3.0.2' in loaded.source
  assert not image.INFO.zero_is_padding


def test_image_truncates_and_pads_pixels():
  images_NxHxW = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
  tokens = image.pixel_tokens(images_NxHxW, max_len=6, padded_len=8)
  assert tokens.tolist() == [[0, 1, 2, 3, 4, 5, 0, 0],
                             [16, 17, 18, 19, 20, 21, 0, 0]]


def test_image_on_tfds_mock_data(tfds):
  with tfds.testing.mock_data(num_examples=3):
    loaded = image.load(make_config(max_len=1024, padded_len=1024))
    examples = list(tfds.data_source('cifar10', split='test'))
  assert loaded.test.inputs.shape == (3, 1024)
  np.testing.assert_array_equal(
      loaded.test.inputs,
      image.grayscale(np.stack([ex['image'] for ex in examples])).reshape(
          3, 1024))


@NEEDS_TFDS
def test_image_without_data_names_the_dir(tmp_path):
  with pytest.raises(UserError, match=r'cifar10 not found in tensorflow-'
                     r'datasets dir .*--task=image'):
    image.load(make_config(data_dir=str(tmp_path), max_len=8, padded_len=8))


# Retrieval: the AAN pairs TSVs of the LRA release.


def aan_rows(count, seed=0):
  rng = np.random.default_rng(seed)
  return [(index % 2,
           bytes(rng.integers(1, 256, int(rng.integers(1, 30)),
                              dtype=np.uint8)).replace(b'\t', b' ')
           .replace(b'\n', b' ').replace(b'\r', b' '),
           f'second document {index} ü'.encode())
          for index in range(count)]


def test_retrieval_reads_the_release_tsv(tmp_path):
  rows = aan_rows(6)
  directory = lra_files.write_aan(tmp_path, {'train': rows})
  path = directory / 'new_aan_pairs.train.tsv'
  assert path.read_bytes().startswith(b'0.0\t')  # Labels written as floats.
  split = retrieval.read_tsv(path, max_len=12, padded_len=16)
  assert split.inputs.shape == (6, 2, 16)
  assert split.labels.tolist() == [0, 1, 0, 1, 0, 1]
  for (_, first, second), ids_2xL in zip(rows, split.inputs):
    assert decode(ids_2xL[0]) == first[:12]
    assert decode(ids_2xL[1]) == second[:12]


def test_retrieval_keeps_the_first_10000_bytes_of_a_document(tmp_path):
  rows = [(1, b'a' * 10_000 + b'b' * 500, b'c' * 20)]
  directory = lra_files.write_aan(tmp_path, {'train': rows})
  split = retrieval.read_tsv(directory / 'new_aan_pairs.train.tsv',
                             max_len=12_000, padded_len=12_000)
  assert decode(split.inputs[0, 0]) == b'a' * 10_000
  assert decode(split.inputs[0, 1]) == b'c' * 20


@pytest.mark.parametrize('line, problem', [
    (b'1.0\tid1\tid2\tonly four', 'expected 5 tab-separated fields'),
    (b'yes\tid1\tid2\tdoc one\tdoc two', "the label 'yes' is not a number"),
    (b'2.0\tid1\tid2\tdoc one\tdoc two', "the label '2.0' is not 0 or 1"),
])
def test_retrieval_malformed_rows_name_file_and_line(tmp_path, line,
                                                     problem):
  path = tmp_path / 'new_aan_pairs.train.tsv'
  path.write_bytes(b'1.0\tid1\tid2\tdoc one\tdoc two\n' + line + b'\n')
  with pytest.raises(UserError) as error:
    retrieval.read_tsv(path, max_len=8, padded_len=8)
  assert str(error.value).startswith(f'{path}:2: {problem}')


def test_retrieval_load_accepts_release_root_or_tsv_data(tmp_path):
  splits = {'train': aan_rows(4), 'eval': aan_rows(2, 1),
            'test': aan_rows(3, 2)}
  directory = lra_files.write_aan(tmp_path / 'lra_release', splits)
  for data_dir in (tmp_path / 'lra_release', directory):
    loaded = retrieval.load(make_config(data_dir=str(data_dir), max_len=8,
                                        padded_len=8))
    assert [len(loaded.train), len(loaded.validation), len(loaded.test)] == [
        4, 2, 3]
    assert loaded.source == f'LRA release files {directory}'


def test_retrieval_without_data_names_the_expected_file(tmp_path):
  with pytest.raises(UserError, match=str(
      tmp_path / 'tsv_data' / 'new_aan_pairs.train.tsv')):
    retrieval.load(make_config(data_dir=str(tmp_path), max_len=8,
                               padded_len=8))
  with pytest.raises(UserError, match='--config.data_dir=.../lra_release'):
    retrieval.load(make_config(max_len=8, padded_len=8))


# Pathfinder and Path-X: release PNGs and metadata, or generated images.


def pathfinder_images(count, resolution=32, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, resolution, resolution),
                        dtype=np.uint8)
  images[rng.random(images.shape) < 0.7] = 0  # Mostly black, as released.
  return images, rng.integers(0, 2, count)


def pathfinder_config(tmp_path=None, **fields):
  config = tasks.get_config('pathfinder')
  config.data_dir = str(tmp_path) if tmp_path else ''
  config.update(fields)
  return config


@pytest.fixture
def release(tmp_path):
  """24 images listed 2 per metadata file (0.npy .. 11.npy), 2 empty."""
  images, labels = pathfinder_images(24)
  split_dir = lra_files.write_pathfinder(
      tmp_path, 32, images, labels, empty={3, 20}, per_metadata_file=2)
  return tmp_path, split_dir, images, labels


def test_pathfinder_metadata_order_split(release):
  root, split_dir, images, labels = release
  loaded = pathfinder.load(pathfinder_config(root))
  # 80/10/10 of the 24 listed in metadata order (10.npy after 9.npy), then
  # the empty images 3 and 20 are dropped.
  expected = {'train': [i for i in range(19) if i != 3], 'validation': [19],
              'test': [21, 22, 23]}
  for split, indices in expected.items():
    got = getattr(loaded, split)
    np.testing.assert_array_equal(got.inputs,
                                  images[indices].reshape(-1, 1024))
    assert got.labels.tolist() == labels[indices].tolist()
  assert loaded.train.inputs.dtype == np.uint8
  assert (loaded.train.inputs == 0).any()  # Black pixels stay tokens.
  assert f'LRA release files {split_dir}' in loaded.source
  assert '2 empty image files skipped' in loaded.source
  assert "metadata listing order (not LRA's split)" in loaded.source
  assert pathfinder_config().split_order == 'metadata_order'


def test_pathfinder_random42_split(release):
  root, split_dir, images, labels = release
  del split_dir
  loaded = pathfinder.load(pathfinder_config(root, split_order='random42'))
  kept = np.array([i for i in range(24) if i not in (3, 20)])
  order = kept[np.random.default_rng(42).permutation(22)]
  expected = {'train': order[:18], 'validation': order[18:20],
              'test': order[20:]}
  for split, indices in expected.items():
    got = getattr(loaded, split)
    np.testing.assert_array_equal(got.inputs,
                                  images[indices].reshape(-1, 1024))
    assert got.labels.tolist() == labels[indices].tolist()
  assert 'random split (numpy, seed 42)' in loaded.source


def test_pathfinder_accepts_the_split_folder_itself(release):
  root, split_dir, _, _ = release
  del root
  loaded = pathfinder.load(pathfinder_config(split_dir))
  assert len(loaded.train) == 18


def test_pathfinder_truncates_to_tiny_lengths(release):
  root, _, images, _ = release
  loaded = pathfinder.load(pathfinder_config(root, max_len=5, padded_len=8))
  assert loaded.train.inputs.shape == (18, 8)
  np.testing.assert_array_equal(loaded.train.inputs[0, :5],
                                images[0].reshape(-1)[:5])
  assert not loaded.train.inputs[:, 5:].any()


def test_pathfinder_malformed_metadata_names_file_and_line(release):
  root, split_dir, _, _ = release
  metadata = split_dir / 'metadata' / '5.npy'
  lines = metadata.read_text().splitlines()
  fields = lines[1].split()
  fields[3] = 'x'
  metadata.write_text(f'{lines[0]}\n{" ".join(fields)}\n')
  with pytest.raises(UserError, match=rf"{metadata}:2: the label 'x'"):
    pathfinder.load(pathfinder_config(root))


def test_pathfinder_missing_listed_image_is_named(release):
  root, split_dir, _, _ = release
  (split_dir / 'imgs' / '4' / 'sample_9.png').unlink()
  with pytest.raises(UserError, match=r'4\.npy:2: the listed image .*'
                     r'sample_9\.png does not exist'):
    pathfinder.load(pathfinder_config(root))


def test_pathfinder_wrong_image_size_is_named(tmp_path):
  images, labels = pathfinder_images(10, resolution=16)
  lra_files.write_pathfinder(tmp_path, 32, images, labels)
  with pytest.raises(UserError, match='expected an 8-bit grayscale .* 32x32 '
                     'PNG, found mode L 16x16'):
    pathfinder.load(pathfinder_config(tmp_path))


def test_pathfinder_without_data_names_the_expected_dir(tmp_path):
  expected = tmp_path / 'pathfinder32' / 'curv_contour_length_14'
  with pytest.raises(UserError, match=f'{expected}/metadata'):
    pathfinder.load(pathfinder_config(tmp_path))
  with pytest.raises(UserError, match=str(
      tmp_path / 'pathfinder128' / 'curv_contour_length_14')):
    pathx_config = tasks.get_config('pathx')
    pathx_config.data_dir = str(tmp_path)
    tasks.get_task('pathx').load(pathx_config)


@pytest.fixture
def fake_generator(monkeypatch):
  """Replaces the generator by a quick one that records its calls."""
  calls = []

  def generate(num_images, resolution, *, seed=0, workers=None,
               progress=True):
    del workers, progress
    calls.append((num_images, resolution, seed))
    rng = np.random.default_rng([seed, resolution])
    return (rng.integers(0, 256, (num_images, resolution, resolution),
                         dtype=np.uint8),
            np.arange(num_images) % 2)

  monkeypatch.setattr(pathfinder.pathfinder_generator, 'generate_pathfinder',
                      generate)
  return calls


def test_pathfinder_generates_once_and_caches(fake_generator):
  config = pathfinder_config(generated_examples=50, data_seed=3)
  first = pathfinder.load(config)
  second = pathfinder.load(config)
  assert fake_generator == [(50, 32, 3)]
  assert [len(first.train), len(first.validation), len(first.test)] == [
      40, 5, 5]
  np.testing.assert_array_equal(first.test.inputs, second.test.inputs)
  assert first.source.startswith('generated by tasks/pathfinder_generator.py:'
                                 ' 50 images at 32x32, seed 3')
  pathfinder.load(pathfinder_config(generated_examples=50, data_seed=4))
  assert fake_generator[-1] == (50, 32, 4)  # A new key, a new data set.


def test_pathfinder_resolution_sets_the_lengths(fake_generator):
  config = pathfinder_config(generated_examples=20, resolution=64)
  assert (config.max_len, config.padded_len) == (4096, 4096)
  loaded = pathfinder.load(config)
  assert loaded.train.inputs.shape == (16, 4096)
  assert fake_generator == [(20, 64, 0)]
  pathx = tasks.get_config('pathx')
  assert (pathx.resolution, pathx.max_len, pathx.padded_len) == (
      128, 16384, 16384)


def test_pathfinder_generator_rejects_other_resolutions(fake_generator):
  with pytest.raises(UserError, match='resolutions 32, 64, 128, 256'):
    pathfinder.load(pathfinder_config(resolution=48))
  with pytest.raises(UserError, match="split_order 'sorted'"):
    pathfinder.load(pathfinder_config(split_order='sorted'))
  with pytest.raises(UserError, match='validation split is empty'):
    pathfinder.load(pathfinder_config(generated_examples=5))
  assert not fake_generator[1:]


# Configs and registry.


@pytest.mark.parametrize('task', list(tasks.TASKS))
@pytest.mark.parametrize('preset', ['ponet', 'lra'])
def test_every_task_and_preset_is_a_valid_config(task, preset):
  config = tasks.get_config(task, preset)
  assert config.task == task
  validation.validate_config(config)


# The PoNet paper's per-task settings (Path-X: Pathfinder's setting).
PONET_TABLE = {
    'text': (4000, 4096, 32, 8000, 20000, 500, 4096),
    'retrieval': (4000, 4096, 32, 800, 30000, 300, 64),
    'image': (1024, 1024, 256, 175, 35000, 175, 32),
    'pathfinder': (1024, 1024, 256, 312, 62400, 312, 1),
    'pathx': (16384, 16384, 256, 312, 62400, 312, 1),
}
# The official LRA code's transformer_base.py settings per task.
LRA_TABLE = {
    'text': ((4, 256, 4, 1024), 32, 0.05, 8000, 'rsqrt', 20000, 0.1, 'cls'),
    'retrieval': ((4, 128, 4, 512), 32, 0.05, 8000, 'rsqrt', 5000, 0.1,
                  'first'),
    'image': ((1, 128, 8, 128), 256, 5e-4, 175, 'cosine', 35000, 0.0, 'cls'),
    'pathfinder': ((4, 32, 4, 32), 512, 1e-3, 312, 'cosine', 62400, 0.0,
                   'mean'),
    'pathx': ((1, 32, 2, 32), 64, 1e-3, 2500, 'cosine', 500000, 0.0,
              'mean'),
}


@pytest.mark.parametrize('task', list(PONET_TABLE))
def test_ponet_preset_is_the_paper_table(task):
  config = tasks.get_config(task)
  assert (config.max_len, config.padded_len, config.batch_size,
          config.warmup_steps, config.train_steps, config.eval_every,
          config.model.ponet.segment_num) == PONET_TABLE[task]
  assert (config.model.num_layers, config.model.dim, config.model.num_heads,
          config.model.mlp_dim, config.model.pooling) == (2, 64, 2, 128,
                                                          'mean')
  assert (config.schedule, config.learning_rate) == ('one_cycle', 1e-4)


@pytest.mark.parametrize('task', list(LRA_TABLE))
def test_lra_preset_is_the_original_table(task):
  config = tasks.get_config(task, 'lra')
  model = config.model
  assert ((model.num_layers, model.dim, model.num_heads, model.mlp_dim),
          config.batch_size, config.learning_rate, config.warmup_steps,
          config.schedule, config.train_steps, config.weight_decay,
          model.pooling) == LRA_TABLE[task]


def test_task_info():
  assert (text.INFO.vocab_size, text.INFO.num_classes) == (257, 2)
  assert retrieval.INFO.paired and retrieval.INFO.vocab_size == 257
  for task in ('image', 'pathfinder', 'pathx'):
    info = tasks.get_task(task).INFO
    assert (info.vocab_size, info.zero_is_padding) == (256, False)
    config = tasks.get_config(task)
    assert not steps.masks_zero_tokens(config, info)
    config.official_pixel_quirks = True
    assert steps.masks_zero_tokens(config, info)


# The prepare command.


def test_prepare_retrieval_says_where_the_release_is():
  with pytest.raises(UserError, match='lra_release.gz'):
    data.prepare('retrieval', '')


@NEEDS_TFDS
def test_prepare_tfds_without_tensorflow_names_the_install(tmp_path):
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    pytest.skip('TensorFlow is installed: prepare would download')
  except ImportError:
    pass
  with pytest.raises(UserError, match=r'pip install -e \.\[prepare\]'):
    data.prepare('text', str(tmp_path))


# Caches keyed by recipe, undecodable data.


def test_cached_arrays_are_keyed_by_recipe(tmp_path):
  from lra_ponet import input_pipeline
  builds = []

  def build():
    builds.append(1)
    return {'x': np.arange(len(builds))}

  first = input_pipeline.cached_arrays('kind', 'key', build, recipe='v1')
  again = input_pipeline.cached_arrays('kind', 'key', build, recipe='v1')
  other = input_pipeline.cached_arrays('kind', 'key', build, recipe='v2')
  assert len(builds) == 2
  assert again['x'].tolist() == first['x'].tolist() == [0]
  assert other['x'].tolist() == [0, 1]


def test_code_hash_changes_with_the_code(tmp_path):
  import types
  from lra_ponet import input_pipeline
  module = types.SimpleNamespace(__file__=str(tmp_path / 'recipe.py'))
  (tmp_path / 'recipe.py').write_text('GRAY = (0.2989, 0.5870, 0.1140)\n')
  before = input_pipeline.code_hash(module)
  (tmp_path / 'recipe.py').write_text('GRAY = (0.299, 0.587, 0.114)\n')
  assert input_pipeline.code_hash(module) != before


def test_pathfinder_undecodable_metadata_and_images(release):
  root, split_dir, _, _ = release
  metadata = split_dir / 'metadata' / '1.npy'
  metadata.write_bytes(metadata.read_bytes() + b'imgs/1 sample_\xe9.png\n')
  with pytest.raises(UserError, match=r'1.npy:3: byte 0xe9 at column 15 is '
                     'not UTF-8 text; expected text lines'):
    pathfinder.load(pathfinder_config(root))
  metadata.write_bytes(b''.join(metadata.read_bytes().splitlines(True)[:2]))
  (split_dir / 'imgs' / '0' / 'sample_1.png').write_bytes(b'\x89PNG garbage')
  with pytest.raises(UserError, match=r'sample_1.png \(listed at .*0.npy:2\):'
                     ' cannot decode the image .*expected an 8-bit'):
    pathfinder.load(pathfinder_config(root))


def test_retrieval_label_that_is_not_utf8_is_named(tmp_path):
  path = tmp_path / 'new_aan_pairs.train.tsv'
  path.write_bytes(b'\xff1\tid1\tid2\tdoc \xfe one\tdoc two\n')
  with pytest.raises(UserError, match=r'train.tsv:1: the label .* is not a '
                     'number'):
    retrieval.read_tsv(path, 16, 16)
  path.write_bytes(b'1\tid1\tid2\tdoc \xfe one\tdoc two\n')
  split = retrieval.read_tsv(path, 16, 16)  # Documents are bytes: any byte.
  assert decode(split.inputs[0, 0]) == b'doc \xfe one'


# Presets: what the official code does.


def test_ponet_preset_uses_the_official_pytorch_settings():
  for task in tasks.TASKS:
    model = tasks.get_config(task).model
    assert (model.layer_norm_epsilon, model.linear_init,
            model.embedding_init_std, model.position_embedding, model.head,
            model.pair_features, model.gelu_approximate) == (
                1e-5, 'pytorch', 0.02, 'learned', 'ponet', 'nli', False)
    own = tasks.get_config(task, 'ponet', 'transformer').model.transformer
    assert (own.attention, own.attention_bias, own.qkv_dim) == (
        'xla', True, model.dim)


LRA_CODE = {  # position embedding, qkv_dim, dropout, attention dropout,
    # black pixels masked, length (lra_benchmarks @cd31e5c configs).
    'listops': ('sinusoidal', 512, 0.1, 0.1, False, 2000),
    'text': ('sinusoidal', 256, 0.1, 0.1, False, 1000),
    'retrieval': ('sinusoidal', 128, 0.1, 0.1, False, 4000),
    'image': ('learned', 64, 0.3, 0.2, True, 1024),
    'pathfinder': ('sinusoidal', 16, 0.2, 0.1, True, 1024),
    'pathx': ('learned', 16, 0.1, 0.1, True, 16384),
}


@pytest.mark.parametrize('task', list(LRA_CODE))
def test_lra_preset_is_the_official_code(task):
  config = tasks.get_config(task, 'lra', 'transformer')
  model = config.model
  assert (model.position_embedding, model.transformer.qkv_dim, model.dropout,
          model.attention_dropout, config.official_pixel_quirks,
          config.max_len) == LRA_CODE[task]
  assert (model.embedding_init_std, model.head, model.linear_init,
          model.layer_norm_epsilon, model.transformer.attention_bias,
          model.gelu_approximate) == (1.0, 'lra', 'lra', 1e-6, False, True)
  assert model.pair_features == 'concat'  # Used by retrieval only.
  validation.validate_config(config)


def test_text_segments_of_two_tokens_at_any_length():
  config = tasks.get_config('text')
  config.max_len, config.padded_len = 1000, 1024  # As --config.X= does.
  assert config.model.ponet.segment_num == 1024
  assert config.padded_len // config.model.ponet.segment_num + 1 == 2
  # config.json.
  assert config.to_dict()['model']['ponet']['segment_num'] == 1024
  config.model.ponet.segment_num = 8
  assert (config.padded_len, config.model.ponet.segment_num) == (1024, 8)
  assert tasks.get_config('text', 'lra').model.ponet.segment_num == 1000


def test_cudnn_attention_refused_with_black_pixels_masked():
  config = tasks.get_config('image', 'ponet', 'transformer')
  config.model.update(transformer=dict(attention='cudnn'), dtype='bfloat16')
  config.official_pixel_quirks = True
  with pytest.raises(UserError, match='attention=cudnn masks only padding at '
                     'the end.*attention=xla'):
    validation.validate_config(config)
  # All pixels real (a prefix), or padding at the end: past the mask rule,
  # only a GPU is missing here.
  config.official_pixel_quirks = False
  text_config = tasks.get_config('text', 'ponet', 'transformer')
  text_config.model.transformer.attention = 'cudnn'
  for accepted in (config, text_config):
    with pytest.raises(UserError, match='attention=cudnn needs an NVIDIA GPU'):
      validation.validate_config(accepted)

"""Tests of tasks/pathfinder_generator.py.

Labels are checked against the drawn pixels, not the generator's bookkeeping:
a flood fill over lit pixels must join the two markers exactly when the label
is 1.
"""

import numpy as np
import pytest

from lra_ponet.tasks import pathfinder_generator


def _connected_to_first_marker(lit_NxHxW, marker_pixels_Nx2x2):
  """8-connected flood fill of lit pixels from each image's first marker."""
  num_images, height, width = lit_NxHxW.shape
  images = np.arange(num_images)
  reached_NxHxW = np.zeros_like(lit_NxHxW)
  reached_NxHxW[images, marker_pixels_Nx2x2[:, 0, 0],
                marker_pixels_Nx2x2[:, 0, 1]] = True
  reached_NxHxW &= lit_NxHxW
  while True:
    padded = np.pad(reached_NxHxW, ((0, 0), (1, 1), (1, 1)))
    grown_NxHxW = reached_NxHxW.copy()
    for row_shift in range(3):
      for column_shift in range(3):
        grown_NxHxW |= padded[:, row_shift:row_shift + height,
                              column_shift:column_shift + width]
    grown_NxHxW &= lit_NxHxW
    if (grown_NxHxW == reached_NxHxW).all():
      return reached_NxHxW[images, marker_pixels_Nx2x2[:, 1, 0],
                           marker_pixels_Nx2x2[:, 1, 1]]
    reached_NxHxW = grown_NxHxW


@pytest.mark.parametrize('resolution, num_images', [(32, 400), (64, 100),
                                                    (128, 100)])
def test_label_matches_connectivity_of_drawn_image(resolution, num_images):
  labels_N = np.random.default_rng(7).permutation(np.arange(num_images) % 2)
  images_NxHxW, marker_centres_Nx2x2 = (
      pathfinder_generator.draw_pathfinder_images(
          labels_N, pathfinder_generator.SETTINGS[resolution],
          np.random.default_rng(resolution)))
  marker_pixels_Nx2x2 = np.rint(marker_centres_Nx2x2).astype(int)
  # The markers are really drawn where they are said to be.
  images = np.arange(num_images)[:, None]
  assert (images_NxHxW[images, marker_pixels_Nx2x2[..., 0],
                       marker_pixels_Nx2x2[..., 1]] == 255).all()
  connected_N = _connected_to_first_marker(images_NxHxW > 0,
                                           marker_pixels_Nx2x2)
  np.testing.assert_array_equal(connected_N.astype(int), labels_N)


def test_images_and_labels_are_balanced_and_well_formed():
  images_NxHxW, labels_N = pathfinder_generator.generate_pathfinder(
      300, 32, seed=1, workers=1, progress=False)
  assert images_NxHxW.shape == (300, 32, 32)
  assert images_NxHxW.dtype == np.uint8
  assert labels_N.shape == (300,)
  assert np.issubdtype(labels_N.dtype, np.integer)
  assert set(np.unique(labels_N)) == {0, 1}
  assert labels_N.sum() == 150
  assert not np.array_equal(labels_N, np.arange(300) % 2)  # Shuffled.
  _, odd_labels_N = pathfinder_generator.generate_pathfinder(
      7, 32, seed=1, workers=1, progress=False)
  assert odd_labels_N.sum() in (3, 4)


@pytest.mark.parametrize('resolution', [32, 128])
def test_images_are_not_trivial(resolution):
  images_NxHxW, _ = pathfinder_generator.generate_pathfinder(
      20, resolution, seed=2, workers=1, progress=False)
  lit_fraction_N = (images_NxHxW > 0).mean(axis=(1, 2))
  assert (lit_fraction_N > 0.01).all()
  assert (lit_fraction_N < 0.5).all()  # Mostly black background.
  assert images_NxHxW.min() == 0 and images_NxHxW.max() == 255
  # Anti-aliased: intermediate grey levels appear, not just 0 and 255.
  assert len(np.unique(images_NxHxW)) > 10


def test_generation_is_deterministic_and_independent_of_workers():
  # More than one chunk, so the pool really splits the work.
  num_images = pathfinder_generator.CHUNK_SIZE * 2 + 10
  serial = pathfinder_generator.generate_pathfinder(
      num_images, 32, seed=3, workers=1, progress=False)
  parallel = pathfinder_generator.generate_pathfinder(
      num_images, 32, seed=3, workers=2, progress=False)
  again = pathfinder_generator.generate_pathfinder(
      num_images, 32, seed=3, workers=1, progress=False)
  other_seed = pathfinder_generator.generate_pathfinder(
      num_images, 32, seed=4, workers=1, progress=False)
  for left, right in zip(serial, parallel):
    np.testing.assert_array_equal(left, right)
  for left, right in zip(serial, again):
    np.testing.assert_array_equal(left, right)
  assert not np.array_equal(serial[0], other_seed[0])
  assert not np.array_equal(serial[1], other_seed[1])
  # The data set is made of draw_pathfinder_images' images, which the
  # connectivity test checks: chunk 0 comes from default_rng([seed, 32, 0]).
  first_chunk_NxHxW, _ = pathfinder_generator.draw_pathfinder_images(
      serial[1][:pathfinder_generator.CHUNK_SIZE],
      pathfinder_generator.SETTINGS[32], np.random.default_rng([3, 32, 0]))
  np.testing.assert_array_equal(
      serial[0][:pathfinder_generator.CHUNK_SIZE], first_chunk_NxHxW)

"""Generator of Pathfinder images, so Pathfinder and Path-X need no download.

Pathfinder (Linsley et al. 2018, "Learning long-range spatial dependencies with
horizontal gated recurrent units") shows a black canvas with short bright
dashes. Two target paths grow dash by dash from nearby seeds; short distractor
paths clutter the canvas; one round marker sits on the seed of a target path,
the other on the end of the same path (label 1, connected) or of the other
target path (label 0). Long Range Arena (Tay et al. 2021) uses the 32x32
images as "Pathfinder" and the 128x128 images as "Path-X", both from the hard
"curv_contour_length_14" split.

This module re-implements that recipe with numpy from the published settings;
it does not reproduce the release images. Accuracies obtained on generated
data are therefore not the numbers of the LRA release data and must not be
reported as such.

Deliberate differences from the release generator: consecutive dashes of a
path touch instead of being spaced by a small margin, and every path keeps a
black gap to every other path, so the markers are connected by lit pixels
exactly when the label is 1 (tests/test_pathfinder_generator.py checks this
on the drawn pixels).

Geometry uses complex numbers, x + 1j * y, with pixel (row y, column x)
centred on the integer point x + 1j * y.
"""

import contextlib
import dataclasses
import math
import multiprocessing
import os

import numpy as np
import tqdm

# Smallest distance between the centres of lit pixels of two different paths.
# Above sqrt(2), so two paths are never 8-adjacent: at least one black pixel
# (plus the dim anti-aliased fringes) always separates them.
PATH_GAP = 2.0
# A dash may come no closer than this fraction of a dash length to the dashes
# of its own path (other than the one it continues), so paths do not cross or
# fold onto themselves.
SELF_CLEARANCE = 0.75
# Candidate turns tried for each dash; a path with none acceptable is stuck.
TRIES_PER_DASH = 12
# Fresh starts of a stuck path before its image is abandoned and redrawn.
ATTEMPTS_PER_PATH = 4
# Images per unit of deterministic work: chunk c always draws the same images.
CHUNK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class PathfinderSettings:
  """Drawing parameters of one resolution (lengths in pixels)."""
  resolution: int
  dash_length: float
  dash_thickness: float
  marker_radius: float
  seed_distance: float  # Between the first points of the two target paths.
  continuity: float  # Turn weight cos(continuity * turn)**2; larger = smoother.
  num_distractors: int
  distractor_length: int  # Dashes per distractor path.
  contour_length: int = 14  # Dashes per target path: curv_contour_length_14.

  @property
  def stroke_radius(self) -> float:
    """Distance from a dash's centre line within which pixels are lit."""
    return self.dash_thickness + 0.5

  @property
  def marker_lit_radius(self) -> float:
    """Distance from a marker's centre within which pixels are lit."""
    return self.marker_radius + 0.5


SETTINGS = {
    32: PathfinderSettings(
        resolution=32, dash_length=2, dash_thickness=0.5, marker_radius=1.5,
        seed_distance=7, continuity=1.0, num_distractors=5,
        distractor_length=4),
    64: PathfinderSettings(
        resolution=64, dash_length=5, dash_thickness=1, marker_radius=2.5,
        seed_distance=12, continuity=1.8, num_distractors=5,
        distractor_length=5),
    128: PathfinderSettings(
        resolution=128, dash_length=5, dash_thickness=1.5, marker_radius=3,
        seed_distance=20, continuity=1.8, num_distractors=8,
        distractor_length=5),
    256: PathfinderSettings(
        resolution=256, dash_length=5, dash_thickness=2, marker_radius=5,
        seed_distance=27, continuity=1.8, num_distractors=7,
        distractor_length=5),
}


def _point_segment_distance(points, starts, ends):
  """Distance from points to segments [starts, ends]; all complex, broadcast."""
  directions, offsets = ends - starts, points - starts
  dx, dy, ox, oy = directions.real, directions.imag, offsets.real, offsets.imag
  # max(..., tiny) lets a segment of zero length stand for a marker's centre.
  along = np.clip((ox * dx + oy * dy) / np.maximum(dx * dx + dy * dy, 1e-9),
                  0, 1)
  ex, ey = ox - along * dx, oy - along * dy
  return np.sqrt(ex * ex + ey * ey)  # Ten times faster than np.hypot.


def _segment_distance(starts_a, ends_a, starts_b, ends_b):
  """Distance between segments, up to crossings.

  Crossing segments (distance 0) are not detected; this is harmless because
  every required distance exceeds half a dash length, and of two crossing
  dashes one has an end within half a dash length of the other.
  """
  return np.minimum(
      np.minimum(_point_segment_distance(starts_a, starts_b, ends_b),
                 _point_segment_distance(ends_a, starts_b, ends_b)),
      np.minimum(_point_segment_distance(starts_b, starts_a, ends_a),
                 _point_segment_distance(ends_b, starts_a, ends_a)))


def _violates_clearance(starts_RxK, ends_RxK, obstacle_starts_RxP,
                        obstacle_ends_RxP, required_P, start_required_P,
                        end_required_P, length):
  """Whether each candidate dash comes closer to an obstacle than required.

  required_P applies to the whole dash, start_required_P and end_required_P
  to its end points; negative values never bind. starts_RxK may be Rx1 (tries
  sharing a start). Only (candidate, obstacle) pairs near enough to matter are
  measured in full: a dash lies within `length` of its start.
  """
  num_rows, num_tries = ends_RxK.shape
  reach_P = np.maximum(required_P, end_required_P) + length
  start_distance_RxKxP = _point_segment_distance(
      starts_RxK[..., None], obstacle_starts_RxP[:, None],
      obstacle_ends_RxP[:, None])
  start_violation_RxK = (start_distance_RxKxP < start_required_P).any(-1)
  near_RxKxP = np.broadcast_to(start_distance_RxKxP < reach_P,
                               (num_rows, num_tries, len(reach_P)))
  row_M, try_M, obstacle_M = near_RxKxP.nonzero()
  starts_M = np.broadcast_to(starts_RxK, ends_RxK.shape)[row_M, try_M]
  ends_M = ends_RxK[row_M, try_M]
  obstacle_starts_M = obstacle_starts_RxP[row_M, obstacle_M]
  obstacle_ends_M = obstacle_ends_RxP[row_M, obstacle_M]
  violation_M = (
      (_segment_distance(starts_M, ends_M, obstacle_starts_M, obstacle_ends_M)
       < required_P[obstacle_M]) |
      (_point_segment_distance(ends_M, obstacle_starts_M, obstacle_ends_M)
       < end_required_P[obstacle_M]))
  violations_RK = np.bincount(row_M * num_tries + try_M, weights=violation_M,
                              minlength=num_rows * num_tries)
  return (violations_RK.reshape(num_rows, num_tries) > 0) | start_violation_RxK


@dataclasses.dataclass(frozen=True)
class _ObstaclePlan:
  """Where each item of an image lives in the per-image obstacle arrays.

  Items are the dashes, path by path, each target path followed by its
  possible marker centres (zero-length segments): its seed and its end. All
  four are kept clear for a marker whatever the label, so the layout does not
  give the label away.
  """
  path_lengths: tuple[int, ...]
  first_slot: tuple[int, ...]  # Slot of each path's first dash.
  owner_path_O: np.ndarray
  dash_index_O: np.ndarray  # Index within its path; -1 for a marker centre.
  lit_radius_O: np.ndarray
  dash_slots: np.ndarray
  marker_slots: np.ndarray  # Seed and end of path 0, seed and end of path 1.

  @classmethod
  def for_settings(cls, settings):
    path_lengths = ((settings.contour_length,) * 2 +
                    (settings.distractor_length,) * settings.num_distractors)
    owner, index, radius, first_slot = [], [], [], []
    for path, length in enumerate(path_lengths):
      first_slot.append(len(owner))
      num_markers = 2 if path < 2 else 0
      owner += [path] * (length + num_markers)
      index += list(range(length)) + [-1] * num_markers
      radius += ([settings.stroke_radius] * length +
                 [settings.marker_lit_radius] * num_markers)
    index = np.array(index)
    marker_slots = np.flatnonzero(index < 0)
    return cls(path_lengths, tuple(first_slot), np.array(owner), index,
               np.array(radius), np.flatnonzero(index >= 0), marker_slots)


def _on_canvas(points, margin, size):
  return ((points.real >= margin) & (points.real <= size - 1 - margin) &
          (points.imag >= margin) & (points.imag <= size - 1 - margin))


def _first_dash_tries(first_seeds_R, settings, rng, shape):
  """Start points, headings and weights of the tries for a path's first dash.

  Uniform over the canvas, except the second target path's
  (`first_seeds_R` given): seed_distance away from the first target's seed.
  """
  stroke, size = settings.stroke_radius, settings.resolution
  headings_RxK = rng.uniform(0, 2 * np.pi, shape)
  if first_seeds_R is not None:
    starts_RxK = first_seeds_R[:, None] + settings.seed_distance * np.exp(
        1j * rng.uniform(0, 2 * np.pi, shape))
  else:
    starts_RxK = (rng.uniform(stroke, size - 1 - stroke, shape) +
                  1j * rng.uniform(stroke, size - 1 - stroke, shape))
  return starts_RxK, headings_RxK, np.ones(shape)


def _next_dash_tries(tips_R, headings_R, settings, rng, shape):
  """Start points, headings and weights of the tries for a following dash.

  As in Linsley et al.'s generator, a turn has weight cos(continuity *
  turn)**2, zero beyond pi / (2 * continuity): the larger the continuity, the
  smoother the path. The tries cover that range evenly (one per stratum) so a
  path can bend away from the border and from other paths instead of getting
  stuck.
  """
  max_turn = np.pi / (2 * settings.continuity)
  turns_RxK = max_turn * (
      2 * (np.arange(TRIES_PER_DASH) + rng.random(shape)) / TRIES_PER_DASH - 1)
  weights_RxK = np.cos(settings.continuity * turns_RxK)**2
  # All tries start at the tip of the path.
  return tips_R[:, None], headings_R[:, None] + turns_RxK, weights_RxK


def _clear_of_earlier_items(starts_RxK, ends_RxK, earlier_starts_RxP,
                            earlier_ends_RxP, path, dash, plan, settings,
                            start_radius, end_radius):
  """Whether each try keeps its distances to the items drawn before it.

  PATH_GAP between lit pixels of different paths; SELF_CLEARANCE from the
  path's own dashes older than the previous one.
  """
  slot = earlier_starts_RxP.shape[1]
  stroke = settings.stroke_radius
  other_path_P = plan.owner_path_O[:slot] != path
  radius_P = plan.lit_radius_O[:slot]
  dash_index_P = plan.dash_index_O[:slot]
  own_old_dash_P = ~other_path_P & (0 <= dash_index_P) & (
      dash_index_P <= dash - 2)
  required_P = np.where(
      other_path_P, stroke + radius_P + PATH_GAP,
      np.where(own_old_dash_P, SELF_CLEARANCE * settings.dash_length, -1.))
  start_required_P = np.where(
      other_path_P, start_radius + radius_P + PATH_GAP, -1.)
  end_required_P = np.where(
      other_path_P, end_radius + radius_P + PATH_GAP, -1.)
  return ~_violates_clearance(
      starts_RxK, ends_RxK, earlier_starts_RxP, earlier_ends_RxP, required_P,
      start_required_P, end_required_P, settings.dash_length)


def _pick_weighted(weights_RxK, rng):
  """Draws one try per row in proportion to its weight (0 = unacceptable).

  Returns which rows have an acceptable try, and the pick of each of them.
  """
  cumulative_RxK = np.cumsum(weights_RxK, axis=1)
  grown_R = cumulative_RxK[:, -1] > 0
  cumulative_RxK = cumulative_RxK[grown_R]
  thresholds_R = rng.random(len(cumulative_RxK)) * cumulative_RxK[:, -1]
  return grown_R, (cumulative_RxK <= thresholds_R[:, None]).sum(1)


def _grow_path(starts_BxO, ends_BxO, rows_R, path, plan, settings, rng):
  """Tries once to grow `path` in the images rows_R, dash by dash.

  A candidate dash must keep PATH_GAP between its lit pixels and those of every
  item of other paths, and SELF_CLEARANCE from its own older dashes. Both ends
  of a target path must have room for a marker.

  Returns:
    The rows that grew the path (written into starts_BxO, ends_BxO) and the
    rows that got stuck.
  """
  stroke, marker = settings.stroke_radius, settings.marker_lit_radius
  first = plan.first_slot[path]
  path_length = plan.path_lengths[path]
  is_target = path < 2
  stuck = []
  for dash in range(path_length):
    slot = first + dash
    shape = (len(rows_R), TRIES_PER_DASH)
    # The ends of a target path may take a marker, wider than a dash.
    start_radius = marker if is_target and dash == 0 else stroke
    end_radius = marker if is_target and dash == path_length - 1 else stroke
    if dash == 0:
      first_seeds_R = (starts_BxO[rows_R, plan.first_slot[0]] if path == 1
                       else None)
      starts_RxK, headings_RxK, weights_RxK = _first_dash_tries(
          first_seeds_R, settings, rng, shape)
    else:
      starts_RxK, headings_RxK, weights_RxK = _next_dash_tries(
          tips_R, headings_R, settings, rng, shape)
    ends_RxK = starts_RxK + settings.dash_length * np.exp(1j * headings_RxK)
    ok_RxK = (_on_canvas(starts_RxK, start_radius, settings.resolution) &
              _on_canvas(ends_RxK, end_radius, settings.resolution))
    if slot:
      ok_RxK &= _clear_of_earlier_items(
          starts_RxK, ends_RxK, starts_BxO[rows_R, :slot],
          ends_BxO[rows_R, :slot], path, dash, plan, settings, start_radius,
          end_radius)
    grown_R, choice_R = _pick_weighted(weights_RxK * ok_RxK, rng)
    stuck.append(rows_R[~grown_R])
    rows_R = rows_R[grown_R]
    picked = grown_R.nonzero()[0], choice_R
    headings_R = headings_RxK[picked]
    tips_R = ends_RxK[picked]
    starts_BxO[rows_R, slot] = np.broadcast_to(starts_RxK, shape)[picked]
    ends_BxO[rows_R, slot] = tips_R
  if is_target:
    for offset, points_R in enumerate([starts_BxO[rows_R, first], tips_R],
                                      start=path_length):
      starts_BxO[rows_R, first + offset] = points_R
      ends_BxO[rows_R, first + offset] = points_R
  return rows_R, np.concatenate(stuck)


def _grow_layouts(num_layouts, settings, rng):
  """Grows the paths of up to num_layouts images; drops the ones that got stuck.

  A stuck path is regrown from a new seed up to ATTEMPTS_PER_PATH times before
  its image is given up.

  Returns:
    dash_starts_MxD, dash_ends_MxD: complex dash end points, M <= num_layouts.
    marker_points_Mx2x2: [seed, end] of each target path.
  """
  plan = _ObstaclePlan.for_settings(settings)
  num_obstacles = len(plan.owner_path_O)
  starts_BxO = np.zeros((num_layouts, num_obstacles), complex)
  ends_BxO = np.zeros((num_layouts, num_obstacles), complex)
  alive_B = np.arange(num_layouts)
  for path in range(len(plan.path_lengths)):
    pending_R, grown = alive_B, []
    for _ in range(ATTEMPTS_PER_PATH):
      grown_R, pending_R = _grow_path(starts_BxO, ends_BxO, pending_R, path,
                                      plan, settings, rng)
      grown.append(grown_R)
      if not len(pending_R):
        break
    alive_B = np.sort(np.concatenate(grown))
  return (starts_BxO[alive_B][:, plan.dash_slots],
          ends_BxO[alive_B][:, plan.dash_slots],
          starts_BxO[alive_B][:, plan.marker_slots].reshape(-1, 2, 2))


def _draw_strokes(canvas_flat, image_index_S, starts_S, ends_S, radius,
                  settings):
  """Max-combines anti-aliased strokes (segments, or discs where start == end).

  Each stroke is evaluated on a small square patch around it, so the cost does
  not grow with the canvas.
  """
  size = settings.resolution
  extent = np.abs(ends_S - starts_S).max(initial=0)
  patch = math.ceil(extent + 2 * radius) + 2
  corner_x_S = np.floor(np.minimum(starts_S.real, ends_S.real) - radius)
  corner_y_S = np.floor(np.minimum(starts_S.imag, ends_S.imag) - radius)
  offsets = np.arange(patch)
  x_SxPxP = (corner_x_S[:, None, None] + offsets[None, None, :]).astype(int)
  y_SxPxP = (corner_y_S[:, None, None] + offsets[None, :, None]).astype(int)
  x_SxPxP, y_SxPxP = np.broadcast_arrays(x_SxPxP, y_SxPxP)
  distance_SxPxP = _point_segment_distance(
      x_SxPxP + 1j * y_SxPxP, starts_S[:, None, None], ends_S[:, None, None])
  intensity_SxPxP = np.clip(radius - distance_SxPxP, 0, 1)
  inside = ((x_SxPxP >= 0) & (x_SxPxP < size) & (y_SxPxP >= 0) &
            (y_SxPxP < size) & (intensity_SxPxP > 0))
  pixel_SxPxP = (image_index_S[:, None, None] * size + y_SxPxP) * size + x_SxPxP
  np.maximum.at(canvas_flat, pixel_SxPxP[inside], intensity_SxPxP[inside])


def draw_pathfinder_images(
    labels_N: np.ndarray, settings: PathfinderSettings,
    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws one image per label.

  Args:
    labels_N: 1 for connected markers, 0 for markers on different paths.
    settings: a PathfinderSettings, e.g. SETTINGS[32].
    rng: the images are a function of its state alone.

  Returns:
    images_NxHxW: uint8, 0 = black background, 255 = full stroke.
    marker_centres_Nx2x2: (row, column) of the two markers of each image.
  """
  labels_N = np.asarray(labels_N)
  num_images = len(labels_N)
  dash_starts, dash_ends, marker_points = [], [], []
  found, tried = 0, 0
  while found < num_images:
    # Ask for enough layouts to cover the expected losses to stuck paths.
    success_rate = max(found / tried, 0.05) if tried else 0.5
    asked = math.ceil((num_images - found) / success_rate * 1.2) + 8
    starts_MxD, ends_MxD, markers_Mx2x2 = _grow_layouts(asked, settings, rng)
    tried += asked
    found += len(markers_Mx2x2)
    dash_starts.append(starts_MxD)
    dash_ends.append(ends_MxD)
    marker_points.append(markers_Mx2x2)
  dash_starts_NxD = np.concatenate(dash_starts)[:num_images]
  dash_ends_NxD = np.concatenate(dash_ends)[:num_images]
  marker_points_Nx2x2 = np.concatenate(marker_points)[:num_images]
  # As in Linsley et al.: one marker at the seed of a random target path, the
  # other at the end of the same path (connected) or of the other one.
  images = np.arange(num_images)
  origin_path_N = rng.integers(0, 2, num_images)
  end_path_N = np.where(labels_N == 1, origin_path_N, 1 - origin_path_N)
  markers_Nx2 = np.stack([marker_points_Nx2x2[images, origin_path_N, 0],
                          marker_points_Nx2x2[images, end_path_N, 1]], axis=1)

  size = settings.resolution
  canvas_flat = np.zeros(num_images * size * size, np.float32)
  num_dashes = dash_starts_NxD.shape[1]
  _draw_strokes(canvas_flat, np.repeat(images, num_dashes),
                dash_starts_NxD.ravel(), dash_ends_NxD.ravel(),
                settings.stroke_radius, settings)
  _draw_strokes(canvas_flat, np.repeat(images, 2),
                markers_Nx2.ravel(), markers_Nx2.ravel(),
                settings.marker_lit_radius, settings)
  images_NxHxW = np.rint(canvas_flat * 255).astype(np.uint8).reshape(
      num_images, size, size)
  marker_centres_Nx2x2 = np.stack([markers_Nx2.imag, markers_Nx2.real], -1)
  return images_NxHxW, marker_centres_Nx2x2


def _draw_chunk(job):
  seed, resolution, chunk_index, labels = job
  rng = np.random.default_rng([seed, resolution, chunk_index])
  images, _ = draw_pathfinder_images(labels, SETTINGS[resolution], rng)
  return images


def generate_pathfinder(num_images: int, resolution: int, *, seed: int = 0,
                        workers: int | None = None,
                        progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Generates a balanced Pathfinder data set.

  The result depends on (num_images, resolution, seed) only, not on workers
  (default: one per CPU): chunk c of CHUNK_SIZE images is drawn from
  default_rng([seed, resolution, c]) and the chunks are concatenated in order.

  Returns:
    images_NxHxW: uint8, H = W = resolution.
    labels_N: int64, exactly half ones for even N, in a seeded shuffled order.
  """
  labels_N = np.random.default_rng([seed, resolution]).permutation(
      np.arange(num_images) % 2)
  jobs = [(seed, resolution, chunk, labels_N[start:start + CHUNK_SIZE])
          for chunk, start in enumerate(range(0, num_images, CHUNK_SIZE))]
  workers = min(workers or os.cpu_count(), len(jobs))
  chunks = [np.zeros((0, resolution, resolution), np.uint8)]
  with contextlib.ExitStack() as stack:
    if workers > 1:
      # spawn, not fork: forking a process that already runs JAX threads can
      # deadlock.
      pool = stack.enter_context(
          multiprocessing.get_context('spawn').Pool(workers))
      results = pool.imap(_draw_chunk, jobs)
    else:
      results = map(_draw_chunk, jobs)
    bar = stack.enter_context(
        tqdm.tqdm(total=num_images, disable=not progress, unit='img',
                  desc=f'pathfinder{resolution}'))
    for images in results:
      chunks.append(images)
      bar.update(len(images))
  return np.concatenate(chunks), labels_N

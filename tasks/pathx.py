"""Path-X: Pathfinder at 128x128, 16,384 pixel tokens (as in LRA).

Data: the LRA release `pathfinder128/curv_contour_length_14/` under
`config.data_dir`, or, when it is empty, images drawn by
tasks/pathfinder_generator.py at `config.resolution`; formats, splits and the
pixel-0 switch are Pathfinder's (tasks/pathfinder.py).
"""

from lra_ponet import input_pipeline
from lra_ponet.tasks import pathfinder

INFO = input_pipeline.TaskInfo(name='pathx', num_classes=2, vocab_size=256,
                               zero_is_padding=False)


def load(config) -> input_pipeline.TaskData:
  return pathfinder.load_images(config, 'Path-X')

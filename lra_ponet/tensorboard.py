"""The run's evaluation records as TensorBoard event files (optional).

`python -m lra_ponet.run ... --tensorboard` writes every line of
metrics.jsonl also as scalars under `<workdir>/tensorboard`, through
tensorboardX (`pip install -e ".[tensorboard]"`), so that a run can be watched
live with `tensorboard --logdir runs/`. A resumed run appends to the same
folder; TensorBoard then shows the steps between the last checkpoint and the
interruption twice, as they were trained twice.
"""

import pathlib

from lra_ponet.errors import UserError


def _summary_writer_class():
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('--tensorboard needs tensorboardX: pip install -e '
                    '".[tensorboard]"') from None
  return SummaryWriter


def check_available():
  """Fails fast, before any data is loaded, if tensorboardX is missing."""
  _summary_writer_class()


class Writer:
  """`write(record)` adds each number of one metrics.jsonl record at its step."""

  def __init__(self, workdir):
    self.logdir = pathlib.Path(workdir) / 'tensorboard'
    self._writer = _summary_writer_class()(str(self.logdir))

  def write(self, record: dict):
    for name, value in record.items():
      if name != 'step':
        self._writer.add_scalar(name, value, record['step'])
    self._writer.flush()  # Live: TensorBoard sees each evaluation at once.

  def close(self):
    self._writer.close()

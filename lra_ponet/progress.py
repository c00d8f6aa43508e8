"""The training loop's bookkeeping, saved whole in every checkpoint."""

import dataclasses


def _new_best():
  return {'accuracy': -1.0, 'step': 0}


def _new_window():
  return {'loss': 0.0, 'accuracy': 0.0, 'steps': 0}


def _new_timing():
  # Summed over every invocation of the run (resumes included): timed
  # training steps, their seconds (first interval of each invocation left
  # out: it compiles) and wall time up to the latest checkpoint.
  return {'train_seconds': 0.0, 'timed_steps': 0, 'wall_seconds': 0.0}


@dataclasses.dataclass
class Progress:
  """Records, the best validation accuracy, the metric window and timing.

  A checkpoint stores `to_json()` (the JSON item `progress`), from which
  `from_json` rebuilds it, so a resumed run continues the same sums.
  """
  # One per evaluation: the lines of metrics.jsonl.
  records: list = dataclasses.field(default_factory=list)
  best: dict = dataclasses.field(default_factory=_new_best)
  # Train-metric sums since the last evaluation.
  window: dict = dataclasses.field(default_factory=_new_window)
  timing: dict = dataclasses.field(default_factory=_new_timing)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, saved: dict) -> 'Progress':
    # Checkpoints written before timing was kept have none: it starts at 0.
    return cls(**saved)

  def add_step(self, loss: float, accuracy: float):
    self.window['loss'] += loss
    self.window['accuracy'] += accuracy
    self.window['steps'] += 1

  def window_means(self) -> tuple[float, float]:
    """Mean train loss and accuracy since the last evaluation."""
    steps = self.window['steps']
    return self.window['loss'] / steps, self.window['accuracy'] / steps

  def add_timed(self, seconds: float, steps: int):
    self.timing['train_seconds'] += seconds
    self.timing['timed_steps'] += steps

  def steps_per_second(self) -> float:
    """Steps per second over every timed interval; 0 until one exists."""
    if not self.timing['train_seconds']:
      return 0.0
    return self.timing['timed_steps'] / self.timing['train_seconds']

  def add_evaluation(self, step: int, validation: dict,
                     learning_rate: float) -> bool:
    """Records an evaluation, empties the window; True if it is the best."""
    train_loss, train_accuracy = self.window_means()
    self.records.append({
        'step': step,
        'train_loss': train_loss,
        'train_accuracy': train_accuracy,
        'val_loss': validation['loss'],
        'val_accuracy': validation['accuracy'],
        # The rate of this step's update (index step - 1, from 0).
        'learning_rate': learning_rate,
        'steps_per_second': self.steps_per_second()})
    self.window.update(loss=0.0, accuracy=0.0, steps=0)
    if validation['accuracy'] <= self.best['accuracy']:
      return False
    self.best.update(accuracy=validation['accuracy'], step=step)
    return True

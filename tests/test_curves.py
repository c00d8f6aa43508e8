"""Learning curves from run folders, and the TensorBoard event files."""

import json
import struct

import numpy as np
import pytest
from PIL import Image

from lra_ponet import tasks
from lra_ponet import curves
from lra_ponet import tensorboard
from lra_ponet import train
from lra_ponet.errors import UserError

RECORDS = [{'step': 50, 'train_loss': 2.3, 'train_accuracy': 0.12,
            'val_loss': 2.25, 'val_accuracy': 0.17, 'learning_rate': 1e-4,
            'steps_per_second': 1.5},
           {'step': 100, 'train_loss': 2.1, 'train_accuracy': 0.21,
            'val_loss': 2.05, 'val_accuracy': 0.24, 'learning_rate': 5e-5,
            'steps_per_second': 1.6}]


def write_run(directory, task, model, seed, records=RECORDS):
  directory.mkdir(parents=True)
  config = {'task': task, 'preset': 'ponet', 'seed': seed,
            'model': {'name': model}}
  (directory / 'results.json').write_text(json.dumps({'config': config}))
  (directory / 'metrics.jsonl').write_text(
      ''.join(json.dumps(record) + '\n' for record in records))


def test_one_figure_per_task_with_every_run(tmp_path):
  runs = tmp_path / 'runs'
  write_run(runs / 'a', 'listops', 'ponet', 0)
  write_run(runs / 'b', 'listops', 'fnet', 1)
  write_run(runs / 'c' / 'nested', 'text', 'ponet', 0)
  loaded = curves.load_curves(runs)
  assert sorted(run['label'] for run in loaded) == [
      'fnet, seed 1', 'ponet, seed 0', 'ponet, seed 0']
  paths = curves.plot_runs(runs, tmp_path / 'out')
  assert [path.name for path in paths] == ['curves_listops.png',
                                           'curves_text.png']
  width, height = Image.open(paths[0]).size
  assert width > 1000 and height > 500


def test_published_reference_only_for_a_published_row():
  assert curves.published_final_accuracy('listops', 'ponet', 'ponet') == 37.80
  assert curves.published_final_accuracy('listops', 'fnet', 'ponet') == 37.40
  assert curves.published_final_accuracy('text', 'ponet', 'ponet') == 69.82
  assert curves.published_final_accuracy('listops', 'ponet', 'lra') is None
  assert curves.published_final_accuracy('pathx', 'ponet', 'ponet') is None


def test_malformed_metrics_name_the_file_and_line(tmp_path):
  write_run(tmp_path / 'run', 'listops', 'ponet', 0)
  with open(tmp_path / 'run' / 'metrics.jsonl', 'a') as lines:
    lines.write('{"step": 150, "val_acc\n')
  with pytest.raises(UserError, match=r'metrics.jsonl:3: not a JSON line'):
    curves.load_curves(tmp_path)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='no metrics.jsonl under'):
    curves.plot_runs(tmp_path / 'empty', tmp_path)
  with pytest.raises(UserError, match='is not a directory'):
    curves.plot_runs(tmp_path / 'missing', tmp_path)


def read_scalars(logdir):
  """{tag: [(step, value)]} from the TFRecord event files in logdir."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      length, = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(
          data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4  # Length, its CRC, the record, its CRC.
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, value.simple_value))
  return scalars


def test_tensorboard_has_every_metric_at_its_step(tmp_path):
  writer = tensorboard.Writer(tmp_path)
  for record in RECORDS:
    writer.write(record)
  writer.close()
  scalars = read_scalars(tmp_path / 'tensorboard')
  assert sorted(scalars) == sorted(set(RECORDS[0]) - {'step'})
  for name, points in scalars.items():
    np.testing.assert_allclose([value for _, value in points],
                               [record[name] for record in RECORDS],
                               rtol=1e-6)
    assert [step for step, _ in points] == [50, 100]


def test_a_run_with_tensorboard_logs_what_metrics_jsonl_has(
    tiny_listops_dir, tmp_path):
  config = tasks.get_config('listops')
  config.data_dir = str(tiny_listops_dir)
  config.update(dict(max_len=32, padded_len=32, batch_size=4,
                     eval_batch_size=8, train_steps=4, eval_every=2,
                     warmup_steps=2))
  config.model.update(dict(num_layers=1, dim=16, mlp_dim=32))
  config.model.ponet.segment_num = 4
  train.train_and_evaluate(config, tmp_path, tensorboard=True)
  records = [json.loads(line)
             for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  scalars = read_scalars(tmp_path / 'tensorboard')
  assert [step for step, _ in scalars['val_accuracy']] == [2, 4]
  for name in ('val_accuracy', 'val_loss', 'train_loss', 'learning_rate'):
    np.testing.assert_allclose([value for _, value in scalars[name]],
                               [record[name] for record in records],
                               rtol=1e-6)

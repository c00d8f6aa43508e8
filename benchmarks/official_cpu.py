r"""The official PoNet LRA code's training step beside the suite's, on this CPU.

  pip install torch               # beside the suite (a CPU build will do)
  git clone https://github.com/lxchtan/PoNet
  python benchmarks/official_cpu.py --official_code=PoNet/examples/LRA/code
  python -m lra_ponet.report --results_dir=results/cpu_official

One invocation measures every cell of both frameworks, round after round,
alternating which framework goes first, so that both see the same machine:
- ListOps, the paper's setting (`lra_config.py` "listops": 2 layers, dim 64,
  batch 32, 2,048 tokens): `--listops_models`;
- Text at batch 1 and `--text_lengths` tokens: `--text_models`.

The suite's cell is `python -m lra_ponet.bench --task=T --models=M
--lengths=L --batch_size=B` (ponet preset, float32). The official cell is
its `run_tasks.py` training step, on the CPU: `optimizer.zero_grad()`, the
`ModelForSC` forward on `lra_config.py`'s model config for the task and
attention type (`mixed_precision` off, since its autocast and GradScaler
are CUDA's; `max_seq_len` = L, where run_tasks.py rounds the config's up to
a power of two), `loss.mean()` backward, AdamW (eps 1e-6) and OneCycleLR
steps, on random tokens from 1 with a full mask. The official code's
classes are imported from `--official_code` unmodified; only its PoNet
`segment_num` on Text is set to L, the suite's segments of two tokens at
every length (the official config's 4,096, which equals L only at 4,096).
Both time each step from start to finished result (jax: block_until_ready;
PyTorch runs eagerly on the CPU) after the same warm-up steps, each cell in
a fresh process under the same environment (`GLIBC_TUNABLES` included,
recorded in the rows).

Rows go to `<results_dir>/bench_<device>.csv` in the bench's columns:
`framework` is `lra_ponet` or `official`; an official row's `config_json`
holds the official model and training config, the PyTorch version and
thread count and the official code's git commit, and its jax and git
columns are the suite's environment that ran it.
"""

import copy
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

from lra_ponet import errors
from lra_ponet.bench import child
from lra_ponet.bench import schema
from lra_ponet.bench import sweep
from lra_ponet.errors import UserError

FLAGS = flags.FLAGS
# The official code's attention type of each suite model.
OFFICIAL_ATTENTION = {'ponet': 'ponet', 'fnet': 'fnet',
                      'transformer': 'softmax'}
LISTOPS = ('listops', 2048, 32)


def define_flags():
  flags.DEFINE_string('official_code', None, 'The official LRA code: a '
                      'checkout of lxchtan/PoNet, or its examples/LRA/code.')
  flags.DEFINE_string('results_dir', 'results/cpu_official',
                      'Where the CSV goes.')
  flags.DEFINE_integer('rounds', 3, 'Rounds of every cell of both.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per cell.')
  flags.DEFINE_integer('warmup', 2, 'Warm-up steps per cell.')
  flags.DEFINE_list('listops_models', ['ponet', 'fnet', 'transformer'],
                    'Models timed in the ListOps setting.')
  flags.DEFINE_list('text_models', ['ponet', 'fnet'],
                    'Models timed in the Text setting at batch 1.')
  flags.DEFINE_list('text_lengths', ['1024', '4096', '16384'],
                    'Text lengths.')
  flags.DEFINE_float('cell_timeout', 900, 'Seconds per cell.')
  flags.DEFINE_string('official_cell', None, 'Internal: time one official '
                      'cell (JSON) and print its result.')


def code_dir(path: str) -> pathlib.Path:
  """The directory that holds the official lra_config.py."""
  root = pathlib.Path(path).expanduser()
  for candidate in (root, root / 'examples' / 'LRA' / 'code'):
    if (candidate / 'lra_config.py').is_file() and (
        candidate / 'model_wrapper.py').is_file():
      return candidate.resolve()
  raise UserError(f'--official_code={path} holds no official LRA code '
                  '(lra_config.py and model_wrapper.py); clone '
                  'https://github.com/lxchtan/PoNet and point at it')


def official_config(code: pathlib.Path, task: str, model: str, length: int):
  """(model config, training config) as run_tasks.py builds them."""
  sys.path.insert(0, str(code))
  import lra_config  # pylint: disable=import-outside-toplevel
  task_config = lra_config.config[task]
  model_config = copy.deepcopy(task_config['model'])
  model_config.update(
      task_config['extra_attn_config'][OFFICIAL_ATTENTION[model]])
  model_config.update(mixed_precision=False,
                      attn_type=OFFICIAL_ATTENTION[model], max_seq_len=length)
  if model == 'ponet' and task == 'text':
    model_config['segment_num'] = length
  return model_config, dict(task_config['training'])


def official_commit(code: pathlib.Path) -> str:
  result = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=code,
                          capture_output=True, text=True, check=False)
  return result.stdout.strip() if result.returncode == 0 else 'unknown'


def time_official(cell) -> dict:
  """Times the official training step of `cell` in this process."""
  import torch  # pylint: disable=import-outside-toplevel
  code = pathlib.Path(cell['official_code'])
  model_config, training = official_config(code, cell['task'], cell['model'],
                                           cell['length'])
  import model_wrapper  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = model_wrapper.ModelForSC(model_config)
  model.train()
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=training['learning_rate'], betas=(0.9, 0.999),
      eps=1e-6, weight_decay=training['weight_decay'])
  lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
      optimizer=optimizer, max_lr=training['learning_rate'],
      pct_start=training['warmup'] / training['num_train_steps'],
      anneal_strategy=training['lr_decay'],
      total_steps=training['num_train_steps'])
  shape = (cell['batch_size'], cell['length'])
  batch = {'input_ids_0': torch.randint(1, model_config['vocab_size'], shape),
           'mask_0': torch.ones(shape),
           'label': torch.randint(0, model_config['num_classes'],
                                  shape[:1])}

  def step():
    optimizer.zero_grad()
    model(**batch)['loss'].mean().backward()
    optimizer.step()
    lr_scheduler.step()

  times_ms = []
  for index in range(cell['warmup'] + cell['steps']):
    tick = time.perf_counter()
    step()
    if index >= cell['warmup']:
      times_ms.append(1e3 * (time.perf_counter() - tick))
  median_ms = sorted(times_ms)[len(times_ms) // 2]
  return dict(
      status='ok', reason='', ms_median=median_ms, ms_min=min(times_ms),
      ms_max=max(times_ms), steps_per_s=1e3 / median_ms,
      tokens_per_s=shape[0] * shape[1] * 1e3 / median_ms,
      num_params=sum(p.numel() for p in model.parameters()),
      config_json=json.dumps(dict(
          model=model_config, training=training,
          torch_version=torch.__version__,
          torch_threads=torch.get_num_threads(),
          official_code=str(code), official_commit=official_commit(code)),
          sort_keys=True))


def run_official_cell(cell, timeout: float) -> dict:
  """The official cell in a fresh process, as the harness runs its own."""
  command = [sys.executable, __file__, f'--official_cell={json.dumps(cell)}']
  tick = time.perf_counter()
  try:
    process = subprocess.run(command, capture_output=True, text=True,
                             timeout=timeout, env=sweep.child_env(),
                             check=False)
  except subprocess.TimeoutExpired:
    return {'status': 'TIMEOUT', 'reason': f'past the {timeout:g} s budget',
            'wall_s': time.perf_counter() - tick}
  fields = sweep.parse_output(process.stdout)
  fields['wall_s'] = time.perf_counter() - tick
  if 'status' not in fields:
    fields.update(status='error',
                  reason=sweep.last_meaningful_line(process.stderr)
                  or f'exited with status {process.returncode}')
  return fields


def official_row(cell, fields, shared) -> dict:
  row = dict(shared, **fields)
  row.update(task=cell['task'], preset='official', model=cell['model'],
             framework='official', attention='', length=cell['length'],
             batch_size=cell['batch_size'], dtype='float32',
             steps=cell['steps'], warmup=cell['warmup'], overrides='{}',
             date=time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime()))
  return {column: row.get(column) for column in schema.COLUMNS}


def suite_cell(task, model, length, batch_size, sweep_id):
  """The suite's cell: the harness's own command, appending to the CSV."""
  command = [sys.executable, '-m', 'lra_ponet.bench', f'--task={task}',
             f'--models={model}', f'--lengths={length}',
             f'--batch_size={batch_size}', f'--steps={FLAGS.steps}',
             f'--warmup={FLAGS.warmup}', f'--results_dir={FLAGS.results_dir}',
             f'--sweep_id={sweep_id}', f'--cell_timeout={FLAGS.cell_timeout}']
  subprocess.run(command, check=True)


def cells():
  """(task, length, batch, model) of every cell of one round."""
  task, length, batch = LISTOPS
  listed = [(task, length, batch, model) for model in FLAGS.listops_models]
  listed += [('text', int(length), 1, model)
             for length in FLAGS.text_lengths for model in FLAGS.text_models]
  for _, _, _, model in listed:
    if model not in OFFICIAL_ATTENTION:
      raise UserError(f'no official counterpart of --model {model}; choose '
                      f'from {", ".join(OFFICIAL_ATTENTION)}')
  return listed


def compare(code: pathlib.Path):
  device_stamp = sweep.probe_device()
  path = pathlib.Path(FLAGS.results_dir) / (
      f'bench_{schema.slug(device_stamp["device_kind"])}.csv')
  started = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
  shared = dict(device_stamp, tokens_per_batch=0,
                cell_timeout_s=FLAGS.cell_timeout,
                glibc_tunables=sweep.child_env().get('GLIBC_TUNABLES', ''))
  for round_index in range(FLAGS.rounds):
    for count, (task, length, batch, model) in enumerate(cells()):
      sweep_id = f'official-{started}-{task}-r{round_index}'
      official_first = (round_index + count) % 2 == 1
      for framework in (('official', 'lra_ponet') if official_first
                        else ('lra_ponet', 'official')):
        if framework == 'lra_ponet':
          suite_cell(task, model, length, batch, sweep_id)
          continue
        cell = dict(task=task, model=model, length=length, batch_size=batch,
                    steps=FLAGS.steps, warmup=FLAGS.warmup,
                    official_code=str(code))
        fields = run_official_cell(cell, FLAGS.cell_timeout)
        stream, writer = schema.open_csv(path)
        with stream:
          writer.writerow(official_row(cell, fields,
                                       dict(shared, sweep_id=sweep_id)))
        print(f'official {model:<12} {task} L={length:,} B={batch} '
              f'{sweep.describe(fields)}', flush=True)
  print(f'rows in {path}; tables: python -m lra_ponet.report '
        f'--results_dir={FLAGS.results_dir}')


def main(argv):
  del argv
  try:
    if FLAGS.official_cell:
      try:
        fields = time_official(json.loads(FLAGS.official_cell))
      except Exception as error:  # pylint: disable=broad-except
        fields = {'status': 'error', 'reason': child.error_line(error)}
      print(child.MARKER + json.dumps(fields), flush=True)
      return
    if not FLAGS.official_code:
      raise UserError('--official_code is required: a checkout of '
                      'https://github.com/lxchtan/PoNet')
    code = code_dir(FLAGS.official_code)
    try:
      import torch  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise UserError('PyTorch is not installed beside the suite; pip '
                      'install torch') from None
    compare(code)
  except UserError as error:
    sys.exit(f'error: {error}')
  except subprocess.CalledProcessError as error:
    sys.exit(f'error: the suite\'s cell failed ({" ".join(error.cmd)})')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

"""benchmarks/official_cpu.py: its official configs, its rows and their report.

Timing the official code needs PyTorch and a checkout of it, which the suite
does not depend on; what is tested here is everything around that: the
config the official step is built from, the rows, the comparison table and
the one-line errors.
"""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

from lra_ponet.bench import schema
from lra_ponet.report import load
from lra_ponet.report import speed

SCRIPT = pathlib.Path(__file__).parents[1] / 'benchmarks' / 'official_cpu.py'
FAKE_CONFIG = '''
model = {"learn_pos_emb": True, "transformer_dim": 64, "num_layers": 2,
         "vocab_size": 32, "max_seq_len": 2000, "num_classes": 10}
training = {"batch_size": 32, "learning_rate": 1e-4, "warmup": 1000,
            "lr_decay": "linear", "weight_decay": 0, "num_train_steps": 5000}
extra = {"softmax": {"attention_grad_checkpointing": True},
         "ponet": {"attention_grad_checkpointing": False, "segment_num": %d},
         "fnet": {"attention_grad_checkpointing": False}}
config = {"listops": {"model": dict(model), "training": dict(training),
                      "extra_attn_config": extra},
          "text": {"model": dict(model, max_seq_len=4000),
                   "training": dict(training), "extra_attn_config": extra}}
'''
SUITE_CELL = dict(task='listops', preset='ponet', attention='',
                  dtype='float32', steps=3, warmup=2, overrides={})


@pytest.fixture(name='script')
def fixture_script():
  spec = importlib.util.spec_from_file_location('official_cpu', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(name='official_code')
def fixture_official_code(tmp_path, monkeypatch):
  code = tmp_path / 'PoNet' / 'examples' / 'LRA' / 'code'
  code.mkdir(parents=True)
  (code / 'lra_config.py').write_text(FAKE_CONFIG % 64)
  (code / 'model_wrapper.py').write_text('')
  monkeypatch.delitem(sys.modules, 'lra_config', raising=False)
  monkeypatch.setattr(sys, 'path', list(sys.path))
  return tmp_path / 'PoNet'


def test_the_official_config_is_run_tasks_but_cpu_float32_and_length(
    script, official_code):
  code = script.code_dir(str(official_code))
  assert code.name == 'code'
  model, training = script.official_config(code, 'listops', 'ponet', 2048)
  assert (model['max_seq_len'], model['mixed_precision'],
          model['attn_type'], model['segment_num']) == (2048, False, 'ponet',
                                                        64)
  assert training['num_train_steps'] == 5000
  softmax, _ = script.official_config(code, 'listops', 'transformer', 2048)
  assert softmax['attention_grad_checkpointing'] is True
  # On Text PoNet gets the suite's two-token segments at every length.
  text, _ = script.official_config(code, 'text', 'ponet', 1024)
  assert (text['max_seq_len'], text['segment_num']) == (1024, 1024)


def _row(script, framework, model, length, ms, sweep_id):
  fields = dict(status='ok', reason='', ms_median=ms, steps_per_s=1e3 / ms,
                num_params=1)
  shared = dict(sweep_id=sweep_id, device_kind='cpu', platform='cpu',
                device_count=1, jax_version='0.10.2', git_commit='abc',
                git_clean=True, cell_timeout_s=900, tokens_per_batch=0,
                memory_cap_bytes=2**34, glibc_tunables='')
  if framework == 'official':
    cell = dict(task='listops', model=model, length=length, batch_size=2,
                steps=3, warmup=2)
    fields['config_json'] = json.dumps(dict(
        official_commit='cc9a29a3c7732e8c5cdda7e', torch_version='2.13.0',
        torch_threads=2))
    return script.official_row(cell, fields, shared)
  return schema.row_for(dict(SUITE_CELL, model=model, length=length,
                             batch_size=2), fields, shared)


def test_rounds_give_medians_ratios_and_ponet_over_fnet(script, tmp_path):
  timings = {('lra_ponet', 'ponet'): [60, 70, 80],
             ('official', 'ponet'): [100, 90, 120],
             ('lra_ponet', 'fnet'): [50, 40, 45],
             ('official', 'fnet'): [60, 65, 70]}
  path = tmp_path / 'bench_cpu.csv'
  stream, writer = schema.open_csv(path)
  with stream:
    for round_index in range(3):
      for (framework, model), times in timings.items():
        writer.writerow(_row(script, framework, model, 64,
                             times[round_index], f'official-r{round_index}'))
  frame = load.load_bench(tmp_path)['cpu']
  report = speed.bench_report('cpu', frame, all_sweeps=False)
  assert ('| listops | 2 | 64 | ponet | 100 (90.0 to 120) | 70.0 (60.0 to '
          '80.0) | ×0.700 | ×1.56 |') in report
  assert ('| listops | 2 | 64 | fnet | 65.0 (60.0 to 70.0) | 45.0 (40.0 to '
          '50.0) | ×0.692 |  |') in report
  assert 'in 3 rounds' in report
  assert 'official code cc9a29a3c773 under PyTorch 2.13.0' in report
  # The suite's own tables (the latest round) hold the suite's rows only:
  # PoNet 12.5 steps/s there, the official code 8.33.
  suite_tables = report.split("## The official code's")[0]
  assert '| ponet | 12.5' in suite_tables
  assert '8.33' not in suite_tables


def test_rows_before_the_framework_column_are_the_suites(tmp_path):
  frame = pd.DataFrame([dict.fromkeys(load.NEEDED, '')])
  frame.to_csv(tmp_path / 'bench_cpu.csv', index=False)
  assert list(load.load_bench(tmp_path)['cpu']['framework']) == ['lra_ponet']


def _run(*args, env=None):
  return subprocess.run([sys.executable, str(SCRIPT), *args],
                        capture_output=True, text=True, timeout=120,
                        check=False, env=env)


def test_a_missing_checkout_is_one_line(tmp_path):
  result = _run(f'--official_code={tmp_path}', '--rounds=1')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --official_code={tmp_path} holds no official LRA code '
      '(lra_config.py and model_wrapper.py); clone '
      'https://github.com/lxchtan/PoNet and point at it')


def test_no_pytorch_is_one_line(official_code, tmp_path):
  blocker = tmp_path / 'no_torch' / 'torch'
  blocker.mkdir(parents=True)
  (blocker / '__init__.py').write_text('raise ImportError("no torch")\n')
  env = {'PYTHONPATH': str(blocker.parent), 'PATH': '/usr/bin:/bin'}
  result = _run(f'--official_code={official_code}', env=env)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: PyTorch is not installed beside the suite; pip install torch')

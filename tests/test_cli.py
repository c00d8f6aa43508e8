"""`python -m lra_ponet.run` end to end; every command's one-line errors."""

import json
import subprocess
import sys

import pytest

from conftest import TINY_LISTOPS, run_cli, torch_one_cycle

RESULT_KEYS = {'task', 'model', 'num_params', 'best_val_accuracy',
               'test_accuracy', 'train_steps', 'steps_per_second',
               'wall_seconds', 'device', 'data_source', 'config',
               # The stamp: lra_ponet.stamp.
               'jax_version', 'jaxlib_version', 'flax_version',
               'optax_version', 'numpy_version', 'git_commit', 'git_clean'}
# The modules of every command: `python -m lra_ponet.<command>`.
COMMANDS = ('lra_ponet.run', 'lra_ponet.evaluate', 'lra_ponet.bench.__main__',
            'lra_ponet.report.__main__', 'lra_ponet.plot', 'lra_ponet.data',
            'lra_ponet.spread')


# The CLI's part is the same for every mixer; these cover the three originals
# and a mixer with config fields and parameter groups of its own. Every
# mixer trains end to end in test_learning.py.
CLI_MODELS = ('ponet', 'transformer', 'fnet', 's4d')


@pytest.mark.parametrize('model', CLI_MODELS)
def test_trains_and_tests_each_model(model, tiny_listops_dir, tmp_path):
  workdir = tmp_path / 'run'
  done = run_cli('--task=listops', f'--model={model}',
                 f'--config.data_dir={tiny_listops_dir}', *TINY_LISTOPS,
                 f'--workdir={workdir}')
  assert done.returncode == 0, done.stderr
  results = json.loads((workdir / 'results.json').read_text())
  assert RESULT_KEYS <= set(results)
  assert (results['task'], results['model']) == ('listops', model)
  assert results['train_steps'] == 4 and results['num_params'] > 0
  assert results['config']['model']['name'] == model
  assert results['config']['padded_len'] == 256
  assert (results['config']['b1_max'], results['config']['b1_min']) == (
      0.95, 0.85) and 'b1' not in results['config']
  metrics = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [m['step'] for m in metrics] == [2, 4]
  # Steps 2 and 4 are updates 1 and 3 of OneCycleLR (warm-up 2 of 4).
  assert [m['learning_rate'] for m in metrics] == pytest.approx(
      [torch_one_cycle(k, 4, 0.5, 4e-6, 1e-4, 4e-10) for k in (1, 3)],
      rel=1e-5)
  best = max(m['val_accuracy'] for m in metrics)
  assert results['best_val_accuracy'] == best
  assert results['best_step'] == next(
      m['step'] for m in metrics if m['val_accuracy'] == best)
  # 16 validation and 16 test examples: accuracies count whole examples.
  for accuracy in (best, results['test_accuracy']):
    assert 0 <= accuracy <= 1 and (accuracy * 16).is_integer()
  assert json.loads((workdir / 'config.json').read_text())['batch_size'] == 4
  assert 'test accuracy' in done.stdout
  assert 'steps_per_s' in done.stderr  # The progress bar.


@pytest.mark.parametrize('args,message', [
    (('--task=sudoku',), 'flag --task=sudoku: value should be one of '
     '<listops|text|retrieval|image|pathfinder|pathx>'),
    (('--model=mamba',), 'flag --model=mamba: value should be one of '
     '<ponet|'),
    (('--config.batch_sise=3',), "unknown config field 'batch_sise'"),
    (('--config.model.dimension=3',), 'valid fields: b1'),
    (('--config.data_dir=/no/such/dir',),
     '/no/such/dir/listops-1000/basic_train.tsv'),
    (('--config.padded_len=100',), 'padded_len (100) is shorter'),
    (('--config.max_len=0',), 'max_len must be positive'),
    (('--config.schedule=linear',), "unknown schedule 'linear'"),
    # Fails before the 100,000 ListOps examples would be generated.
    (('--config.model.ponet.segment_num=0',),
     'config.model (ponet): segment_num must be positive, got 0'),
    (('--config.schedule=rsqrt',), 'config.b1 is needed by the rsqrt '
     'schedule; pick a schedule with --schedule=rsqrt'),
    # --schedule sets rsqrt's own fields, so the warm-up check is next.
    (('--schedule=rsqrt', '--config.warmup_steps=0'),
     'the rsqrt schedule needs config.warmup_steps >= 1'),
])
def test_bad_input_gets_one_line_and_nonzero_exit(args, message):
  done = run_cli(*args)
  assert done.returncode != 0
  lines = [line for line in done.stderr.splitlines()
           if 'xla_bridge' not in line]
  assert lines and lines[-1].startswith('error: ')
  assert message in lines[-1]
  assert 'Traceback' not in done.stderr


def test_uncreatable_workdir_gets_one_line(tmp_path):
  (tmp_path / 'file').write_text('')
  done = run_cli('--config.max_len=8', '--config.padded_len=8',
                 f'--workdir={tmp_path}/file/run')
  assert done.returncode != 0 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: cannot use {tmp_path}/file/run as the workdir: Not a '
      f'directory ({tmp_path}/file/run); choose another --workdir')


def test_the_commands_import_into_one_process_without_their_flags():
  # absl flags are global: two commands defining --workdir on import clash.
  code = ('import importlib, sys\nfrom absl import flags\n'
          f'for name in {COMMANDS!r}: importlib.import_module(name)\n'
          "print(sorted({'split', 'results_dir', 'prediction_files', 'lengths',"
          " 'data_dir'} & set(flags.FLAGS)))")
  done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == '[]'


@pytest.mark.parametrize('module,args,message', [
    ('lra_ponet.bench', ('--lengths=512', 'extra'),
     'unexpected arguments extra; every argument is a --flag=value'),
    ('lra_ponet.report', ('--all_sweep',),
     "Unknown command line flag 'all_sweep'"),
    ('lra_ponet.plot', ('results',), 'unexpected arguments results'),
    # An unquoted glob: the shell hands over its files.
    ('lra_ponet.spread', ('--prediction_files=a.npz', 'b.npz'),
     'unexpected arguments b.npz; every argument is a --flag=value (quote a '
     'glob pattern)'),
    ('lra_ponet.data', ('--task=listops',), 'give a command, prepare'),
    ('lra_ponet.data', ('prepare',), '--task is required: one of listops,'),
    ('lra_ponet.evaluate', ('--split=test',), '--workdir is required'),
])
def test_every_command_reports_bad_input_in_one_line(module, args, message):
  done = run_cli(*args, module=module)
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(f'error: {message}')

"""The speed harness end to end on CPU, and its report and plots.

The sweep runs once for the module (its cells are subprocesses that compile,
the slow part): ListOps config, batch 1, lengths 512 and 1,024, two timed
steps, with a memory cap that only the Transformer at 1,024 exceeds.
"""

import json
import math
import pathlib
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from absl import flags

from lra_ponet import tasks
from lra_ponet import plot
from lra_ponet.bench import __main__ as bench_main
from lra_ponet.bench import child
from lra_ponet import stamp
from lra_ponet.bench import peaks
from lra_ponet.bench import schema
from lra_ponet.bench import sweep
from lra_ponet.errors import UserError
from lra_ponet.report import accuracy
from lra_ponet.report import load
from lra_ponet.report import speed

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'bench_fixture.csv'
# Compiled plans at batch 1 (ListOps config): Transformer about 26 MiB at 512
# and 86 MiB at 1,024, PoNet about 11 and 21 MiB. 50 MiB lies well between.
CAP_GB = 50 / 1024


def run_bench(results_dir, *args):
  return subprocess.run(
      [sys.executable, '-m', 'lra_ponet.bench',
       f'--results_dir={results_dir}', '--task=listops', *args],
      capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
  results_dir = tmp_path_factory.mktemp('results')
  process = run_bench(results_dir, '--models=transformer,ponet',
                      '--lengths=512,1024', '--batch_size=1', '--steps=2',
                      '--warmup=2',
                      f'--memory_cap_gb={CAP_GB}')
  assert process.returncode == 0, process.stderr[-3000:]
  return process, pd.read_csv(results_dir / 'bench_cpu.csv')


def by_cell(frame):
  return {(row.model, row.length): row for row in frame.itertuples()}


@pytest.mark.smoke
def test_tiny_sweep_records_every_cell(tiny_sweep):
  process, frame = tiny_sweep
  assert list(frame.columns) == list(schema.COLUMNS)
  assert len(frame) == 4 and frame['sweep_id'].nunique() == 1
  cells = by_cell(frame)
  for key in [('transformer', 512), ('ponet', 512), ('ponet', 1024)]:
    cell = cells[key]
    assert cell.status == 'ok', cell.reason
    assert cell.ms_min <= cell.ms_median <= cell.ms_max
    assert cell.steps_per_s == pytest.approx(1000 / cell.ms_median)
    assert cell.batch_size == 1  # Batch and pair factors: see below.
    assert cell.tokens_per_s == pytest.approx(cell.length * cell.steps_per_s)
    assert cell.flops_per_step > 0 and cell.tflops_per_s > 0
    assert cell.tflops_per_s == pytest.approx(
        cell.flops_per_step * cell.steps_per_s / 1e12)
    assert cell.bytes_per_step > 0
    assert cell.gb_per_s == pytest.approx(
        cell.bytes_per_step * cell.steps_per_s / 1e9)
    # No published peak for a CPU: the fractions stay empty.
    assert math.isnan(cell.peak_gb_per_s) and math.isnan(cell.tflops_fraction)
    assert cell.compile_s > 0 and cell.plan_temp_bytes > 0
    assert math.isnan(cell.peak_bytes_in_use)  # CPU: no memory_stats.
    assert cell.platform == 'cpu' and cell.jax_version
    assert cell.optax_version and cell.numpy_version
    assert cell.git_commit == stamp.code_version()['git_commit']
    assert cell.git_clean in (True, False)
    assert json.loads(cell.config_json)['model']['name'] == key[0]
  assert cells[('ponet', 512)].segment_len == 512 // 64 + 1
  assert cells[('transformer', 512)].attention == 'xla'
  assert '[  4] ponet' in process.stdout


def test_failed_cell_is_recorded_and_the_sweep_goes_on(tiny_sweep):
  _, frame = tiny_sweep
  failed = by_cell(frame)[('transformer', 1024)]
  assert failed.status == 'OOM'
  assert 'exceeds the memory cap' in failed.reason
  # Its compile figures are still recorded, and the next cell ran.
  assert failed.plan_total_bytes > CAP_GB * 2**30 and failed.compile_s > 0
  assert list(frame['model']) == ['transformer', 'ponet'] * 2
  assert by_cell(frame)[('ponet', 1024)].status == 'ok'


def test_compiled_memory_linear_for_ponet_quadratic_for_transformer(
    tiny_sweep):
  _, frame = tiny_sweep
  cells = by_cell(frame)

  def exponent(model):
    ratio = (cells[(model, 1024)].plan_total_bytes
             / cells[(model, 512)].plan_total_bytes)
    return math.log2(ratio)

  # The Transformer's linear parts (projections, MLP) keep it below 2 at
  # these short lengths; its L x L attention scores dominate.
  assert 0.8 < exponent('ponet') < 1.2
  assert 1.6 < exponent('transformer') < 2.2


def test_timeout_is_recorded_and_a_continued_sweep_remembers_it(tmp_path):
  args = ['--models=fnet', '--batch_size=1', '--cell_timeout=0.5',
          '--sweep_id=split']
  process = run_bench(tmp_path, '--lengths=64,128', *args)
  assert process.returncode == 0, process.stderr[-3000:]
  # The second command continues sweep "split": fnet timed out at 64 there.
  process = run_bench(tmp_path, '--lengths=256', *args)
  assert process.returncode == 0, process.stderr[-3000:]
  frame = pd.read_csv(tmp_path / 'bench_cpu.csv')
  assert list(frame['status']) == ['TIMEOUT'] * 3
  assert list(frame['sweep_id']) == ['split'] * 3
  assert frame['reason'][0] == 'past the 0.5 s cell budget'
  assert list(frame['reason'][1:]) == ['not run: TIMEOUT at length 64'] * 2
  with pytest.raises(UserError, match=r'\(differing: steps\)'):
    schema.earlier_rows(tmp_path / 'bench_cpu.csv', 'split',
                       {'task': 'listops', 'steps': 3})


def test_tokens_per_second_counts_every_example_and_both_documents():
  # In this process: a Retrieval cell at batch 3, 2 x 32 tokens per example.
  cell = {'task': 'retrieval', 'preset': 'ponet', 'model': 'fnet',
          'attention': '', 'dtype': 'float32', 'length': 32,
          'batch_size': 3, 'memory_cap_bytes': None, 'warmup': 2,
          'steps': 3}
  tick = time.perf_counter()
  result = child.measure(cell)
  elapsed = time.perf_counter() - tick
  assert result['status'] == 'ok'
  assert result['ms_min'] <= result['ms_median'] <= result['ms_max']
  # The timed steps fit in the time the call took.
  assert 3 * result['ms_min'] / 1000 < elapsed
  assert result['steps_per_s'] == pytest.approx(1000 / result['ms_median'])
  assert result['tokens_per_s'] == pytest.approx(
      3 * 2 * 32 * result['steps_per_s'])


def test_cell_error_is_one_line():
  fields = sweep.run_cell({'task': 'listops'}, timeout=300)
  assert fields['status'] == 'error'
  assert fields['reason'] == "KeyError: 'preset'"


def test_crash_output_is_classified():
  stderr = ('Traceback (most recent call last):\n'
            '  File "x.py", line 1, in <module>\n'
            'jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of '
            'memory while trying to allocate 1024 bytes.\n\n')
  assert child.is_oom(stderr) and not child.is_oom('ValueError: bad shape')
  assert sweep.last_meaningful_line(stderr).startswith(
      'jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED')


def test_impossible_length_is_one_line_before_any_cell(tmp_path):
  process = run_bench(tmp_path, '--lengths=512,0')
  assert process.returncode != 0
  assert process.stderr.strip() == (
      'error: --lengths: 0 is not a positive length')
  assert not list(tmp_path.iterdir())


@pytest.fixture
def parse_bench_flags():
  if 'lengths' not in flags.FLAGS:
    bench_main.define_flags()

  def parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['bench', '--task=listops', *args])

  yield parse
  flags.FLAGS.unparse_flags()


@pytest.mark.parametrize('args, message', [
    (['--lengths=-4'], 'not a positive length'),
    (['--lengths=1.5k'], 'not a whole number'),
    (['--models=ponet,rnn'], "unknown model 'rnn'"),
    (['--attention=flash'], "unknown 'flash'"),
    (['--attention=cudnn'], 'bfloat16 only'),
    (['--warmup=1'], '--warmup must be at least 2'),
    (['--tokens_per_batch=1000', '--lengths=512'],
     'not a multiple of length 512'),
    (['--tokens_per_batch=1024', '--batch_size=2'], 'not both'),
    (['--until_oom', '--max_length=1024', '--lengths=2048'],
     'below the longest'),
])
def test_impossible_flags(parse_bench_flags, args, message):
  parse_bench_flags(*args)
  with pytest.raises(UserError, match=message):
    bench_main.check_flags()


@pytest.mark.parametrize('overrides, message', [
    ({'model.dimm': '3'}, "unknown config field 'model.dimm'"),
    ({'model.dim': 'wide'}, "--config.model.dim: cannot read 'wide'"),
    ({'max_len': '64'}, '--config.max_len is set by each cell; use --lengths'),
    ({'model.transformer.qkv_dim': '8'}, 'belong to the transformer mixer'),
])
def test_impossible_overrides(parse_bench_flags, overrides, message):
  parse_bench_flags('--models=ponet,fnet', '--lengths=32')
  with pytest.raises(UserError, match=message):
    bench_main.check_flags(overrides)


def test_overrides_reach_the_cells_that_have_them_and_the_rows(
    parse_bench_flags):
  parse_bench_flags('--models=ponet,fnet', '--lengths=32')
  overrides = {'model.dim': '32', 'model.ponet.segment_num': '8'}
  bench_main.check_flags(overrides)
  settings = bench_main.settings_from_flags(overrides)
  rows = {}
  for model in ('ponet', 'fnet'):
    cell = sweep.make_cell(settings, model, '', 32, 2)
    rows[model] = schema.row_for(cell, {'status': 'ok'}, {})
  for row in rows.values():
    assert json.loads(row['overrides']) == overrides
    assert json.loads(row['config_json'])['model']['dim'] == 32
  assert rows['ponet']['segment_num'] == 8
  assert json.loads(rows['ponet']['config_json'])['model']['ponet'] == {
      'segment_num': 8, 'local_window': 3}
  assert 'ponet' not in json.loads(rows['fnet']['config_json'])['model']


def test_until_oom_doubles_while_a_model_runs(parse_bench_flags):
  parse_bench_flags('--until_oom', '--max_length=4096', '--lengths=512,1024')
  stopped = {}
  mixers = [('ponet', ''), ('transformer', 'xla')]
  settings = bench_main.settings_from_flags()
  lengths = sweep.lengths_to_run(settings, [512, 1024], stopped, mixers)
  assert [next(lengths) for _ in range(3)] == [512, 1024, 2048]
  stopped['transformer (xla)'] = ('OOM', 2048)
  assert next(lengths) == 4096
  assert list(lengths) == []  # --max_length.
  stopped['ponet'] = ('TIMEOUT', 2048)
  assert list(sweep.lengths_to_run(settings, [512], stopped, mixers)) == [512]


def test_rows_append_and_other_columns_are_refused(tmp_path):
  path = tmp_path / 'bench_cpu.csv'
  for _ in range(2):
    stream, writer = schema.open_csv(path)
    with stream:
      writer.writerow({'sweep_id': 'x', 'status': 'ok'})
  assert len(pd.read_csv(path)) == 2
  path.write_text('a,b\n1,2\n')
  with pytest.raises(UserError, match='other columns'):
    schema.open_csv(path)


@pytest.mark.parametrize('kind, dtype, device_peaks', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', (990.0, 3350.0)),
    ('NVIDIA H100 80GB HBM3', 'float32', (67.0, 3350.0)),
    ('NVIDIA H200', 'bfloat16', (990.0, 4800.0)),
])
def test_fractions_of_the_device_peaks(kind, dtype, device_peaks):
  rates = peaks.achieved({'steps_per_s': 4.0, 'flops_per_step': 2.5e12,
                          'bytes_per_step': 5e10}, dtype, kind)
  assert rates['tflops_per_s'] == 10.0 and rates['gb_per_s'] == 200.0
  assert (rates['peak_tflops_per_s'], rates['peak_gb_per_s']) == device_peaks
  assert rates['tflops_fraction'] == pytest.approx(10.0 / device_peaks[0])
  assert rates['bandwidth_fraction'] == pytest.approx(200.0 / device_peaks[1])
  unknown = peaks.achieved({'steps_per_s': 4.0, 'flops_per_step': 1e9},
                           dtype, 'Tesla T4')
  assert set(unknown) == {'tflops_per_s'}


def test_a_sweep_does_not_append_to_a_csv_of_earlier_columns(tmp_path):
  path = tmp_path / 'bench_nvidia_h100_80gb_hbm3.csv'
  shutil.copy(FIXTURE, path)
  with pytest.raises(UserError, match='written with other columns; move it '
                     'aside'):
    schema.open_csv(path)
  assert path.read_bytes() == FIXTURE.read_bytes()


def fixture_frame(tmp_path):
  shutil.copy(FIXTURE, tmp_path / 'bench_nvidia_h100_80gb_hbm3.csv')
  return load.load_bench(tmp_path)['nvidia_h100_80gb_hbm3']


def test_report_tables_from_fixture(tmp_path):
  frame = fixture_frame(tmp_path)
  text = speed.bench_report('nvidia_h100_80gb_hbm3', frame,
                             all_sweeps=False)
  # Only the latest sweep of the setting (the older one is all errors).
  assert 'sweep 20250102T000000Z-2' in text and 'T000000Z-1' not in text
  assert '| model | 1,024 | 2,048 | 4,096 |' in text
  assert '| transformer (xla) | 50.0 | 12.5 | OOM |' in text
  assert '| ponet | 100 (×2.00) | 50.0 (×4.00) | 25.0 |' in text
  assert ('| transformer (cudnn) | 0.500 (×0.500) | 1.00 (×0.250) | 2.00 |'
          in text)  # Measured peak, GiB.
  assert '| transformer (xla) | 922 | 3,686 | 20,480 OOM |' in text  # Plan.
  assert ('jax 0.10.2, jaxlib 0.10.2, flax 0.12.8 · bfloat16 · batch 32'
          in text)
  assert 'Published (PoNet paper Table 2, one GPU, batch 32' in text
  assert '| ponet | 50.4 (×1.12) | 40.1 (×2.07) |' in text
  assert 'only the ratios' not in text  # Not a CPU sweep.
  # A CSV of earlier columns has no cost columns: those cells stay empty.
  assert '| achieved GB/s | % of peak FLOP/s, bandwidth |' in text
  every = speed.bench_report('nvidia_h100_80gb_hbm3', frame,
                              all_sweeps=True)
  assert 'sweep 20250101T000000Z-1' in every


def test_stamp_line_shows_the_versions_and_commit_a_sweep_recorded(tmp_path):
  (older,) = speed.select_sweeps(fixture_frame(tmp_path), all_sweeps=False)
  # The fixture's rows predate optax_version, numpy_version and git_clean.
  assert 'flax 0.12.8 · bfloat16' in speed.stamp(older)
  assert 'git 0123456789ab ·' in speed.stamp(older)
  line = speed.stamp(older.assign(optax_version='0.2.8', numpy_version='2.4',
                                  git_clean=False))
  assert 'flax 0.12.8, optax 0.2.8, numpy 2.4 · bfloat16' in line
  assert 'git 0123456789ab+dirty ·' in line
  assert 'git unknown ·' in speed.stamp(older.assign(git_commit=None))
  # Rows older than git_clean marked local edits on the commit itself.
  assert 'git 0123456789ab+dirty ·' in speed.stamp(
      older.assign(git_commit='0123456789abcdef+dirty'))



def test_report_table2_layout(tmp_path):
  listops = speed.select_sweeps(fixture_frame(tmp_path), all_sweeps=False)[0]
  assert not speed.table2_layout(listops)  # Table 2 is the Text setting.
  text = '\n'.join(speed.table2_layout(listops.assign(task='text')))
  lines = [line for line in text.splitlines() if line.startswith('| ')]
  assert lines[0] == '| length | 1,024 | 2,048 | 4,096 |'
  # The paper's order (no Performer or Nystromformer rows in this sweep),
  # the cuDNN Transformer left out, the published row under ours.
  assert [line.split(' |')[0] for line in lines[1:7]] == [
      '| Transformer steps/s', '| Transformer steps/s, published',
      '| FNet steps/s', '| FNet steps/s, published', '| PoNet steps/s',
      '| PoNet steps/s, published']
  assert '| Transformer steps/s | 50.0 | 12.5 | OOM |' in lines
  assert '| PoNet steps/s, published | 40.1 | 27.8 | 16.2 |' in lines
  assert '| PoNet GB | 0.537 | 1.07 | 2.15 |' in lines  # Measured peak.
  assert '| Transformer GB (peak), published | 2.5 | 6.7 | 23.8 |' in lines


def _write_run(runs_dir, name, fraction, source='LRA release files /d',
               task='listops', **changes):
  config = tasks.get_config(task).to_dict()
  for field, value in changes.items():
    config[field] = value
  run = runs_dir / name
  run.mkdir(parents=True)
  (run / 'results.json').write_text(json.dumps({
      'task': task, 'model': 'ponet', 'test_accuracy': fraction,
      'best_val_accuracy': fraction, 'data_source': source,
      'mean_over': 'padded_length', 'train_steps': config['train_steps'],
      'device': '1 x cpu (cpu)', 'config': config}))
  return load.config_hash(config)


def _row(text, digest):
  (line,) = [line for line in text.splitlines() if f'| {digest} |' in line]
  return line


def test_accuracy_table_groups_by_config_and_publishes_only_like_runs(
    tmp_path):
  runs = tmp_path / 'runs'
  paper = _write_run(runs, 'seed0', 0.37, seed=0)
  assert _write_run(runs, 'seed1', 0.39, seed=1) == paper
  high_lr = _write_run(runs, 'high_lr', 0.15, learning_rate=1e-2)
  short = _write_run(runs, 'short', 0.20, train_steps=300)
  generated = _write_run(runs, 'generated', 0.30, seed=2, data_seed=1,
                         source='generated with the official LRA ListOps '
                         'algorithm, seed 1')
  quirks = _write_run(runs, 'pathfinder', 0.70, task='pathfinder',
                      official_pixel_quirks=True)
  text = accuracy.accuracy_report(runs)
  assert len({paper, high_lr, short, generated, quirks}) == 5
  assert ('| 5,000 | 2 (seeds 0, 1) | 38.00 ± 1.41 | — | 38.00 ± 1.41 | '
          '37.80 | LRA release files /d | off |') in _row(text, paper)
  # Another learning rate is another row, never averaged in or published.
  assert ('| 1 (seeds 0) | 15.00 | — | 15.00 | — (not the published setting: '
          'learning_rate 0.01 (published 0.0001)) |') in _row(text, high_lr)
  assert ('— (not the published setting: train_steps 300 (published '
          '5000)) |') in _row(text, short)
  assert '— (generated data, not the LRA release) |' in _row(text, generated)
  assert "— (neither split order here is the published runs' split" in _row(
      text, quirks)
  # Pixel 0 as a real token is not the published switch.
  no_quirks = _write_run(runs, 'pathfinder_fixed', 0.70, task='pathfinder')
  assert ('official_pixel_quirks False (published True)' in
          _row(accuracy.accuracy_report(runs), no_quirks))
  assert 'Published (PoNet paper Table 1' in text
  assert 'No runs found' in accuracy.accuracy_report(tmp_path / 'none')


def _write_evaluations(run_dir, *records):
  (run_dir / 'evaluations.jsonl').write_text(''.join(
      json.dumps(dict(split='test', overrides={}, examples=2000) | record)
      + '\n' for record in records))


def test_accuracy_rows_show_the_commits_the_runs_recorded(tmp_path):
  runs = tmp_path / 'runs'
  digest = _write_run(runs, 'seed0', 0.37, seed=0)
  _write_run(runs, 'seed1', 0.39, seed=1)
  # Results older than the commit in the stamp: the row as it was.
  assert _row(accuracy.accuracy_report(runs), digest).endswith(
      '| padded_length | 1 x cpu (cpu) |')
  path = runs / 'seed1' / 'results.json'
  path.write_text(json.dumps(dict(json.loads(path.read_text()),
                                  git_commit='89abcdef' * 5, git_clean=True)))
  assert _row(accuracy.accuracy_report(runs), digest).endswith(
      '| 1 x cpu (cpu); git 89abcdef89ab, unknown |')


def test_accuracy_table_shows_the_largest_retest_of_every_run(tmp_path):
  runs = tmp_path / 'runs'
  digest = _write_run(runs, 'seed0', 0.37, seed=0)
  _write_run(runs, 'seed1', 0.39, seed=1)
  grown = {'overrides': {'generator.num_test': 20000}, 'examples': 20000}
  _write_evaluations(runs / 'seed0', {'accuracy': 0.37},
                     {'accuracy': 0.35, **grown},
                     {'accuracy': 0.99, 'split': 'validation', **grown})
  # One run of the row without a re-test: no cell.
  assert '| 38.00 ± 1.41 | — |' in _row(accuracy.accuracy_report(runs),
                                       digest)
  _write_evaluations(runs / 'seed1', {'accuracy': 0.36, **grown})
  assert '| 38.00 ± 1.41 | 35.50 ± 0.71 (20,000) |' in _row(
      accuracy.accuracy_report(runs), digest)
  (runs / 'seed1' / 'evaluations.jsonl').write_text('{"split": "test"}\n')
  with pytest.raises(UserError, match=r'seed1/evaluations.jsonl:1 is not a '
                     'record of lra_ponet.evaluate'):
    accuracy.accuracy_report(runs)


def test_plot_from_fixture(tmp_path):
  frame = fixture_frame(tmp_path)
  (selected,) = speed.select_sweeps(frame, all_sweeps=False)
  path = tmp_path / plot.file_name('nvidia_h100_80gb_hbm3', selected, False)
  slopes = plot.plot_sweep(selected, path)
  assert path.name == 'bench_nvidia_h100_80gb_hbm3_listops_bfloat16_batch32.png'
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert slopes['time']['ponet'] == pytest.approx(1.0)
  assert slopes['time']['transformer (xla)'] == pytest.approx(2.0)
  assert slopes['memory']['fnet'] == pytest.approx(1.0)

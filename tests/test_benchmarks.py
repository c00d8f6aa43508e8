"""benchmarks/gpu_all.sh end to end at toy size on the CPU (DRY_RUN=1).

The script is what a lent GPU runs first, with little time to debug it there:
its training part must train, test again, copy the results and, rerun, skip.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[1] / 'benchmarks' / 'gpu_all.sh'


def _run_script(results_dir, *parts, **env_vars):
  env = dict(os.environ, DRY_RUN='1', RESULTS_DIR=str(results_dir),
             PYTHON=sys.executable, **env_vars)
  return subprocess.run([str(SCRIPT), *parts], env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def test_listops_part_trains_retests_copies_and_then_skips(tmp_path):
  first = _run_script(tmp_path, 'listops-ponet')
  assert first.returncode == 0, first.stderr[-2000:]
  done = tmp_path / 'runs' / 'gpu_listops' / 'ponet'
  assert sorted(path.name for path in done.iterdir()) == [
      'config.json', 'evaluations.jsonl', 'metrics.jsonl', 'results.json']
  results = json.loads((done / 'results.json').read_text(encoding='utf-8'))
  assert (results['task'], results['model']) == ('listops', 'ponet')
  assert results['train_steps'] == 4
  evaluations = (done / 'evaluations.jsonl').read_text(
      encoding='utf-8').splitlines()
  assert len(evaluations) == 1
  # The re-test evaluates the same best parameters on the same test split.
  assert json.loads(evaluations[0])['accuracy'] == results['test_accuracy']

  again = _run_script(tmp_path, 'listops-ponet')
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'results.json exists, skipped' in again.stdout
  assert len((done / 'evaluations.jsonl').read_text(
      encoding='utf-8').splitlines()) == 1


def test_unknown_part_is_one_line_and_exit_2(tmp_path):
  result = _run_script(tmp_path, 'table3')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: unknown part 'table3'; use first or one of table2-float32 "
      'table2-bfloat16 listops-ponet listops-fnet listops-transformer '
      'others-float32 family-float32 report']


def test_table2_part_sweeps_the_three_models_and_then_skips(tmp_path):
  first = _run_script(tmp_path, 'table2-float32')
  assert first.returncode == 0, first.stderr[-2000:]
  with open(tmp_path / 'bench_cpu.csv', newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert [(row['model'], row['length'], row['dtype'], row['status'])
          for row in rows] == [(model, '64', 'float32', 'ok')
                               for model in ('ponet', 'fnet', 'transformer')]
  again = _run_script(tmp_path, 'table2-float32')
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'length 64 of ponet,fnet,transformer already recorded, skipped' in (
      again.stdout)


def test_first_stops_when_its_budget_is_spent_and_still_reports(tmp_path):
  result = _run_script(tmp_path, 'first', FIRST_BUDGET_S='0')
  assert result.returncode == 0, result.stderr[-2000:]
  assert ("first: the budget is spent; rerun 'first' to go on from here"
          in result.stdout)
  assert not list(tmp_path.glob('bench_*.csv'))  # No cell was started.
  assert (tmp_path / 'accuracy.md').exists()  # The report still ran.

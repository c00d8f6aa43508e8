"""benchmarks/gpu_all.sh end to end at toy size on the CPU (DRY_RUN=1).

The script is what a lent GPU runs first, with little time to debug it there:
its training part must train, test again, copy the results and, rerun, skip.
"""

import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[1] / 'benchmarks' / 'gpu_all.sh'


def _run_script(results_dir, *parts):
  env = dict(os.environ, DRY_RUN='1', RESULTS_DIR=str(results_dir),
             PYTHON=sys.executable)
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
      "error: unknown part 'table3'; use one of table2-float32 "
      'table2-bfloat16 listops-ponet listops-fnet listops-transformer '
      'table1-float32 family-float32 report']

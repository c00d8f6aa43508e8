"""The Markdown pages' generated blocks and the LaTeX tables."""

import pathlib
import shutil
import subprocess
import sys

import pytest

from lra_ponet.errors import UserError
from lra_ponet.report import blocks
from lra_ponet.report import markdown
from lra_ponet.report import pages

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_committed_page_is_what_the_report_writes():
  changed = pages.update_pages(ROOT, check=True)
  assert not changed, (f'generated blocks out of date in {changed}; run '
                       'python -m lra_ponet.report --runs_dir=results/runs')


def test_the_pages_use_every_kind_of_block():
  text = ''.join(path.read_text() for path in pages.page_paths(
      ROOT, pages.DEFAULT_PAGES))
  used = {name.split(':')[0] for name in pages.OPENING.findall(text)}
  assert used == set(blocks.BLOCKS)


def _page(tmp_path, body) -> pathlib.Path:
  shutil.copytree(ROOT / 'results', tmp_path / 'results')
  page = tmp_path / 'page.md'
  page.write_text(body)
  return page


def test_a_block_edited_by_hand_is_found_and_rewritten(tmp_path):
  page = _page(tmp_path, 'Before.\n\n<!-- report:published-table1 -->\n'
               'typed by hand\n<!-- /report:published-table1 -->\n\nAfter.\n')
  assert pages.update_pages(tmp_path, ['page.md'], check=True) == ['page.md']
  assert 'typed by hand' in page.read_text()  # --check writes nothing.
  pages.update_pages(tmp_path, ['page.md'])
  text = page.read_text()
  assert 'typed by hand' not in text and '| PoNet | PoNet Table 1 |' in text
  assert text.startswith('Before.') and text.endswith('After.\n')
  assert pages.update_pages(tmp_path, ['page.md'], check=True) == []


def test_a_run_added_to_the_results_changes_the_page(tmp_path):
  page = _page(tmp_path, '<!-- report:runs:cpu_listops -->\n'
               '<!-- /report:runs:cpu_listops -->\n')
  pages.update_pages(tmp_path, ['page.md'])
  before = page.read_text()
  shutil.copytree(tmp_path / 'results/runs/cpu_listops/ponet_seed0',
                  tmp_path / 'results/runs/cpu_listops/ponet_seed9')
  assert pages.update_pages(tmp_path, ['page.md']) == ['page.md']
  after = page.read_text()
  assert '[ponet_seed9](results/runs/cpu_listops/ponet_seed9/)' in after
  assert '4 seeds' in after and '4 seeds' not in before


@pytest.mark.parametrize('body, message', [
    ('<!-- report:no-such-block -->\n<!-- /report:no-such-block -->\n',
     'unknown report block'),
    ('<!-- report:status -->\nnever closed\n', 'has no closing'),
    ('<!-- report:runs:no_such_folder -->\n'
     '<!-- /report:runs:no_such_folder -->\n', 'no runs under'),
])
def test_a_bad_block_is_one_clear_error(tmp_path, body, message):
  _page(tmp_path, body)
  with pytest.raises(UserError, match=message):
    pages.update_pages(tmp_path, ['page.md'])


def test_the_table1_block_says_what_is_not_trained_yet():
  table, = blocks.render('table1-listops', ROOT, ROOT)
  by_model = {row[0]: row for row in table.rows}
  assert by_model['ponet'][1] == '3 (seeds 0, 1, 2)'
  assert by_model['ponet'][4] == '37.80'
  assert by_model['performer'][4] == '18.80'
  trained = {path.name.rsplit('_seed', 1)[0] for path in
             (ROOT / 'results/runs/cpu_listops').iterdir()}
  for model, row in by_model.items():
    assert (row[1] == 'not trained yet') == (model not in trained)


def test_latex_is_booktabs_and_marks_the_published_columns():
  table = markdown.Table(['model', 'test acc %', 'published %'],
                         [['`linear_transformer`', '36.73 ± 1.25', '37.80'],
                          ['[ponet_seed0](runs/x/)', '—', '']],
                         '*From `results/` & co.*', published=('published %',))
  latex = pages.latex_table(table, 'demo')
  assert r'\toprule' in latex and r'\bottomrule' in latex
  assert r'\texttt{linear\_transformer}' in latex
  assert r'36.73 $\pm$ 1.25' in latex and r'\textit{37.80}' in latex
  assert 'ponet\\_seed0 &' in latex and 'runs/x' not in latex
  assert r'From \texttt{results/} \& co.' in latex
  assert 'Italic: published numbers, not measured here.' in latex
  assert r'\label{tab:demo}' in latex


def test_the_latex_command_writes_the_accuracy_and_speed_tables(tmp_path):
  shutil.copy(ROOT / 'results/bench_cpu.csv', tmp_path)
  subprocess.run(
      [sys.executable, '-m', 'lra_ponet.report', '--format=latex',
       f'--results_dir={tmp_path}', f'--runs_dir={ROOT / "results/runs"}'],
      check=True, capture_output=True, cwd=tmp_path)
  written = sorted(path.name for path in (tmp_path / 'latex').iterdir())
  assert {'accuracy.tex', 'published_table1.tex',
          'speed_cpu_text_ponet_float32_batch1.tex'} <= set(written)
  accuracy = (tmp_path / 'latex/accuracy.tex').read_text()
  assert r'36.73 $\pm$ 1.25' in accuracy and r'\midrule' in accuracy


def test_check_fails_naming_the_stale_page(tmp_path):
  shutil.copytree(ROOT / 'results', tmp_path / 'results')
  (tmp_path / 'README.md').write_text(
      '<!-- report:status -->\nstale\n<!-- /report:status -->\n')
  done = subprocess.run(
      [sys.executable, '-m', 'lra_ponet.report', '--check'],
      capture_output=True, text=True, cwd=tmp_path)
  assert done.returncode == 1
  assert 'out of date in README.md' in done.stderr


def test_the_spread_page_is_what_its_command_writes(tmp_path):
  """results/listops_test_set_spread.md, rerun from the command it names."""
  page = ROOT / 'results/listops_test_set_spread.md'
  title, _, command_line, *rest = page.read_text().splitlines()
  command = command_line.strip('`')
  assert command.startswith('python -m lra_ponet.spread ')
  output = tmp_path / 'spread.md'
  arguments = [argument.replace("'", '') for argument in command.split()[3:]
               if not argument.startswith('--output=')]
  subprocess.run([sys.executable, '-m', 'lra_ponet.spread', *arguments,
                  f'--output={output}'], check=True, capture_output=True,
                 cwd=ROOT)
  _, _, _, *written = output.read_text().splitlines()
  assert [title] + written == [title] + rest, (
      f'{page.name} is stale; rerun: {command}')

r"""Markdown tables of the speed sweeps and of the accuracy runs.

  python -m lra_ponet.report
  python -m lra_ponet.report --results_dir=results --runs_dir=runs \
      --all_sweeps

For every `<results_dir>/bench_<device>.csv` written by `lra_ponet.bench`:
steps/s and memory per model and length, each with its multiplier against
the Transformer (xla) row of the same sweep, OOM and TIMEOUT as such, the
stamp under every table, then the published anchors (PoNet paper Table 2, LRA
Table 2), labelled as published. Written to `<results_dir>/report_<device>.md`.
By default each setting (task, preset, dtype, batch) shows its latest sweep;
--all_sweeps shows every one.

For every `<runs_dir>/**/results.json` written by `lra_ponet.run`: test
accuracy of the runs whose whole config but the seed is the same (a short
config hash names it), mean and spread over their seeds, with the data source,
the quirk switches and the device (and the runs' git commits where recorded),
and the paper's Table 1 number beside a row only where the config and data are
the published ones (otherwise why not). Written to
`<results_dir>/accuracy.md`. Everything written is also printed.

Then the generated blocks of the Markdown pages under --pages (README.md,
docs/, results/ of the current folder, where they exist) are rewritten from
the committed results under ./results (`lra_ponet.report.pages`);
--check writes nothing and exits 1 naming every page that differs.

  python -m lra_ponet.report --format=latex

writes the same accuracy and speed tables as LaTeX (booktabs, through
pandas' `to_latex`; published numbers in italics, and the caption says so)
to `<results_dir>/latex/*.tex`, for pasting into a paper.
"""

import pathlib
import sys

from absl import app
from absl import flags

from lra_ponet import errors
from lra_ponet.errors import UserError
from lra_ponet.report import accuracy
from lra_ponet.report import load
from lra_ponet.report import pages
from lra_ponet.report import published
from lra_ponet.report import speed

FLAGS = flags.FLAGS


def define_flags():
  """Defined on running the command, so that importing has no effect."""
  flags.DEFINE_string('results_dir', 'results',
                      'Where the bench CSVs are and the reports go.')
  flags.DEFINE_string('runs_dir', 'runs',
                      'Searched recursively for results.json.')
  flags.DEFINE_boolean('all_sweeps', False,
                       'Every sweep, not only the latest of each setting.')
  flags.DEFINE_enum('format', 'markdown', ['markdown', 'latex'],
                    'markdown: the reports and the pages; latex: the '
                    'tables as .tex files under <results_dir>/latex/.')
  flags.DEFINE_list('pages', list(pages.DEFAULT_PAGES),
                    'Markdown files or folders whose generated blocks are '
                    'rewritten (those that do not exist are skipped).')
  flags.DEFINE_boolean('check', False,
                       'Write nothing; exit 1 if a page\'s generated blocks '
                       'differ from what the results give.')


def write(path: pathlib.Path, text: str):
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  except OSError as error:
    raise UserError(f'cannot write {path} ({error.strerror}); choose another '
                    '--results_dir') from None
  print(text)
  print(f'(written to {path})\n')


def write_markdown(results_dir, frames):
  accuracy_text = accuracy.accuracy_report(FLAGS.runs_dir)
  if not frames:
    print(f'No bench CSV under {results_dir}/; run python -m '
          'lra_ponet.bench first.\n')
  for device, frame in frames.items():
    write(results_dir / f'report_{device}.md',
          speed.bench_report(device, frame, FLAGS.all_sweeps))
  write(results_dir / 'accuracy.md', accuracy_text)


def latex_tables(results_dir, frames) -> dict:
  """{file name: LaTeX}: accuracy, Table 1, and each shown sweep."""
  tables = {'published_table1': published.table1_table()}
  runs = load.load_runs(FLAGS.runs_dir)
  if not runs.empty:
    tables['accuracy'] = accuracy.accuracy_table(runs)
  for device, frame in frames.items():
    for name, table in speed.sweep_tables(device, frame, FLAGS.all_sweeps):
      tables[name] = table
  return {f'{name}.tex': pages.latex_table(table, name)
          for name, table in tables.items()}


def main(argv):
  del argv
  results_dir = pathlib.Path(FLAGS.results_dir)
  try:
    frames = load.load_bench(results_dir)
    if FLAGS.format == 'latex':
      for name, text in latex_tables(results_dir, frames).items():
        write(results_dir / 'latex' / name, text)
      return
    if FLAGS.check:
      changed = pages.update_pages('.', FLAGS.pages, check=True)
      if changed:
        sys.exit('error: generated blocks out of date in '
                 f'{", ".join(changed)}; run python -m lra_ponet.report')
      print('Every generated block is up to date.')
      return
    write_markdown(results_dir, frames)
    for page in pages.update_pages('.', FLAGS.pages):
      print(f'(generated blocks rewritten in {page})')
  except UserError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

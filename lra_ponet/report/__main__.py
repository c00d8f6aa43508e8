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
"""

import pathlib
import sys

from absl import app
from absl import flags

from lra_ponet import errors
from lra_ponet.errors import UserError
from lra_ponet.report import accuracy
from lra_ponet.report import load
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


def write(path: pathlib.Path, text: str):
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  except OSError as error:
    raise UserError(f'cannot write {path} ({error.strerror}); choose another '
                    '--results_dir') from None
  print(text)
  print(f'(written to {path})\n')


def main(argv):
  del argv
  results_dir = pathlib.Path(FLAGS.results_dir)
  try:
    frames = load.load_bench(results_dir)
    accuracy_text = accuracy.accuracy_report(FLAGS.runs_dir)
    if not frames:
      print(f'No bench CSV under {results_dir}/; run python -m '
            'lra_ponet.bench first.\n')
    for device, frame in frames.items():
      write(results_dir / f'report_{device}.md',
            speed.bench_report(device, frame, FLAGS.all_sweeps))
    write(results_dir / 'accuracy.md', accuracy_text)
  except UserError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

r"""How far one fixed test set moves the accuracies of several models.

  python -m lra_ponet.spread --prediction_files=\
'results/runs/cpu_listops/*/predictions_test_20000_*.npz' \
      --size=2000 --published=ponet=37.80,fnet=37.40 \
      --output=results/listops_test_set_spread.md

Each file holds one run's label and predicted class for every example of one
large test split, the same for all files (`python -m lra_ponet.evaluate
--predictions`). A benchmark's test split is one draw of `size` examples,
shared by every model measured on it. This draws `draws` such test sets from
the large split with replacement (a seeded bootstrap: each as if drawn afresh
from the distribution of the large split) and reports, per model: its
accuracy on all examples (the mean over its runs), how far its accuracy on
one drawn test set lies from that (the shift; its spread, and the shift of
the first `size` examples, which for generated ListOps are the official-size
test split), how strongly the shifts of different models agree, and the
share of draws that put a model (and every model at once) at least as far
above its all-example accuracy as a published number lies. "Mean of runs"
averages a model's runs on each draw; "one run" takes one of its runs at
random per draw, so that the spread between runs counts too. Runs are
grouped by model and by their whole config except the seed (its hash, as in
`python -m lra_ponet.report`); a model with several groups shows the hash.
"""

import glob
import sys

import numpy as np
from absl import app
from absl import flags

from lra_ponet import errors
from lra_ponet.errors import UserError

FLAGS = flags.FLAGS
CHUNK = 500  # Draws evaluated at once.


def define_flags():
  """Defined on running the command, so that importing has no effect."""
  flags.DEFINE_list('prediction_files', None,
                    'Prediction files (glob patterns), one per run, of one '
                    'test split.')
  flags.DEFINE_integer('size', 2000, 'Examples in one drawn test set.')
  flags.DEFINE_integer('draws', 10000, 'Number of drawn test sets.')
  flags.DEFINE_integer('seed', 0, 'Seed of the draws.')
  flags.DEFINE_list('published', [],
                    'model=accuracy (percent) pairs to place among the '
                    'draws.')
  flags.DEFINE_string('output', None, 'Also write the report to this file.')


def load_runs(patterns):
  """Files of the patterns -> (paths, correct_RxN, groups_R).

  A run's group is its model name, followed by its config hash where the
  files hold that model in more than one config.
  """
  paths = sorted({path for pattern in patterns for path in glob.glob(pattern)})
  if not paths:
    raise UserError(f'no prediction file matches {",".join(patterns)}; '
                    'write them with python -m lra_ponet.evaluate '
                    '--predictions')
  labels, correct, keys = None, [], []
  for path in paths:
    try:
      with np.load(path) as run:
        label, prediction = run['label'], run['prediction']
        keys.append((str(run['model']), str(run['config_hash'])))
    except (OSError, ValueError, KeyError) as error:
      raise UserError(f'{path} is not a prediction file of '
                      f'lra_ponet.evaluate ({error})') from None
    if labels is None:
      labels = label
    elif not np.array_equal(label, labels):
      raise UserError(f'{path} holds another test split than {paths[0]}; '
                      'compare runs evaluated on the same examples')
    correct.append(prediction == label)
  hashes = {}
  for model, digest in keys:
    hashes.setdefault(model, set()).add(digest)
  groups = [model if len(hashes[model]) == 1 else f'{model} {digest}'
            for model, digest in keys]
  return paths, np.stack(correct), groups


def draw_accuracies(correct_RxN, size: int, draws: int, seed: int):
  """Accuracy (%) of every run on each drawn test set: RxD."""
  num_examples = correct_RxN.shape[1]
  rng = np.random.default_rng(seed)
  accuracies = []
  for start in range(0, draws, CHUNK):
    count = min(CHUNK, draws - start)
    index_CxS = rng.integers(0, num_examples, (count, size))
    accuracies.append(100 * correct_RxN[:, index_CxS].mean(axis=2))
  return np.concatenate(accuracies, axis=1)


def spread(correct_RxN, groups, size: int, draws: int, seed: int,
           published: dict) -> dict:
  """Per group: all-example accuracy, shifts and published shares.

  `published` maps a model name to its accuracy, for each group of that model.
  """
  num_examples = correct_RxN.shape[1]
  if not 0 < size <= num_examples:
    raise UserError(f'--size={size} must be between 1 and the '
                    f'{num_examples} examples of the files')
  models = {group.split()[0] for group in groups}
  unknown = sorted(set(published) - models)
  if unknown:
    raise UserError(f'--published names {", ".join(unknown)}, which no file '
                    f'holds (models: {", ".join(sorted(models))})')
  accuracy_RxD = draw_accuracies(correct_RxN, size, draws, seed)
  full_R = 100 * correct_RxN.mean(axis=1)
  first_R = 100 * correct_RxN[:, :size].mean(axis=1)
  rng = np.random.default_rng(seed + 1)
  names = list(dict.fromkeys(groups))
  report = {'models': {}, 'size': size, 'draws': draws,
            'examples': num_examples}
  for name in names:
    runs = [index for index, group in enumerate(groups) if group == name]
    full = full_R[runs].mean()
    mean_shift_D = accuracy_RxD[runs].mean(axis=0) - full
    one_run_D = accuracy_RxD[rng.choice(runs, draws),
                             np.arange(draws)] - full
    proportion = full / 100
    entry = {
        'runs': len(runs), 'full': full,
        'first': first_R[runs].mean() - full,
        'sd': mean_shift_D.std(),
        'sd_one_run': one_run_D.std(),
        'sd_binomial': 100 * np.sqrt(proportion * (1 - proportion) / size),
        'mean_shift': mean_shift_D, 'one_run_shift': one_run_D}
    model = name.split()[0]
    if model in published:
      gap = published[model] - full
      entry.update(published=published[model], gap=gap,
                   share=np.mean(mean_shift_D >= gap),
                   share_one_run=np.mean(one_run_D >= gap))
    report['models'][name] = entry
  _joint(report, names, published)
  return report


def _joint(report, names, published):
  """Correlations of the shifts; the share of draws above every gap."""
  entries = report['models']
  # Undefined where a shift never varies (a test set of every example).
  report['correlations'] = {
      (first, second): np.corrcoef(entries[first]['mean_shift'],
                                   entries[second]['mean_shift'])[0, 1]
      for index, first in enumerate(names) for second in names[index + 1:]
      if entries[first]['sd'] > 0 and entries[second]['sd'] > 0}
  compared = [name for name in names if 'gap' in entries[name]]
  if len(compared) > 1:
    for kind in ('mean_shift', 'one_run_shift'):
      above = np.all([entries[name][kind] >= entries[name]['gap']
                      for name in compared], axis=0)
      report[f'joint_{kind}'] = above.mean()


def parse_published(pairs) -> dict:
  published = {}
  for pair in pairs:
    name, _, value = pair.partition('=')
    try:
      published[name] = float(value)
    except ValueError:
      raise UserError(f'--published takes model=accuracy pairs such as '
                      f'ponet=37.80, not {pair!r}') from None
  return published


def to_markdown(report, paths, command: str) -> str:
  size, examples = f'{report["size"]:,}', f'{report["examples"]:,}'
  lines = [
      f'# Accuracy on one {size}-example test set against all {examples}',
      '', f'`{command}`', '',
      f'{report["draws"]:,} test sets of {size} examples drawn from the '
      f'{examples} of the files below (with replacement). Shift: a '
      'model\'s accuracy on one drawn set minus its accuracy on all '
      'examples, both as the mean of its runs ("mean of runs") or for one '
      'of its runs taken at random per draw ("one run"). Accuracies in %.',
      '',
      f'| model | runs | accuracy on all {examples} | shift of the first '
      f'{size} | sd of the shift, mean of runs | sd, one run | binomial sd '
      'of one run | published | published minus all | draws at least that '
      'far above: mean of runs | one run |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for name, entry in report['models'].items():
    cells = [name, entry['runs'], f'{entry["full"]:.2f}',
             f'{entry["first"]:+.2f}', f'{entry["sd"]:.2f}',
             f'{entry["sd_one_run"]:.2f}', f'{entry["sd_binomial"]:.2f}']
    if 'published' in entry:
      cells += [f'{entry["published"]:.2f}', f'{entry["gap"]:+.2f}',
                f'{100 * entry["share"]:.1f}%',
                f'{100 * entry["share_one_run"]:.1f}%']
    else:
      cells += ['', '', '', '']
    lines.append('| ' + ' | '.join(str(cell) for cell in cells) + ' |')
  lines.append('')
  for (first, second), value in report['correlations'].items():
    lines.append(f'Correlation of the shifts (mean of runs), {first} and '
                 f'{second}: {value:.2f}.')
  if 'joint_mean_shift' in report:
    lines.append(
        'Draws that put every group with a published number at least its '
        'published gap '
        f'above: {100 * report["joint_mean_shift"]:.1f}% (mean of runs), '
        f'{100 * report["joint_one_run_shift"]:.1f}% (one run each).')
  lines += ['', 'Files:', '']
  lines += [f'- `{path}`' for path in paths]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv  # parse_flags refuses anything but flags.
  try:
    if not FLAGS.prediction_files:
      raise UserError('--prediction_files is required: the prediction files of '
                      'the runs (python -m lra_ponet.evaluate --predictions)')
    if FLAGS.draws < 1:
      raise UserError(f'--draws={FLAGS.draws} must be at least 1')
    paths, correct_RxN, groups = load_runs(FLAGS.prediction_files)
    report = spread(correct_RxN, groups, FLAGS.size, FLAGS.draws, FLAGS.seed,
                    parse_published(FLAGS.published))
  except UserError as error:
    sys.exit(f'error: {error}')
  command = 'python -m lra_ponet.spread ' + ' '.join(
      f"--prediction_files='{','.join(FLAGS.prediction_files)}'"
      if arg.startswith('--prediction_files') else arg
      for arg in sys.argv[1:])
  text = to_markdown(report, paths, command)
  print(text, end='')
  if FLAGS.output:
    try:
      with open(FLAGS.output, 'w', encoding='utf-8') as file:
        file.write(text)
    except OSError as error:
      sys.exit(f'error: cannot write --output={FLAGS.output} '
               f'({error.strerror})')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=errors.parse_flags)

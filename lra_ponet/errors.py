"""How the commands read their command line and report bad input.

Every `python -m lra_ponet.<command>` module but `run` defines its flags in a
`define_flags()` that only running it calls, before
`app.run(main, flags_parser=parse_flags)`: importing a command defines no
flag, so tests and other commands import any of them in one process (absl
flags are global, and bench, report and plot all have --results_dir). main()
reads the flags and passes them to functions that take arguments. Bad input
raises UserError, which main() prints as one line, `error: <message>`,
before exiting 1.
"""

import sys

from absl import flags


class UserError(Exception):
  """Bad input the user can fix: the message names the problem and the fix.

  The CLIs print it as one line and exit non-zero instead of a traceback.
  """


def parse_flags(argv, commands=()):
  """`flags_parser` for app.run: bad flags or arguments are one line, exit 1.

  Words that are not flags are refused (absl would pass them on unread;
  often an unquoted glob), but for one of `commands` where they are given:
  main() then gets [program, command].
  """
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(f'error: {error}')
  words = argv[1:]
  if commands:
    if not words or words[0] not in commands:
      sys.exit(f'error: give a command, {" or ".join(commands)}'
               + (f', not {words[0]!r}' if words else ''))
    words = words[1:]
  if words:
    sys.exit(f'error: unexpected arguments {" ".join(words)}; every '
             'argument is a --flag=value (quote a glob pattern)')
  return argv

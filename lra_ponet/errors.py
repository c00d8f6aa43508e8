"""The one exception type that reaches the user as a single line."""

import sys

from absl import flags


class UserError(Exception):
  """Bad input the user can fix: the message names the problem and the fix.

  The CLIs print it as one line and exit non-zero instead of a traceback.
  """


def parse_flags(argv):
  """`flags_parser` for app.run: a bad flag is one line and exit 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(f'error: {error}')

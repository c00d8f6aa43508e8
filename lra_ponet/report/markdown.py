"""Table formatting shared by the speed and the accuracy tables."""

import dataclasses
import math


def number(value) -> str:
  """Three significant digits (more left of the point), thousands separated."""
  if value >= 100:
    return f'{value:,.0f}'
  if value >= 10:
    return f'{value:.1f}'
  return f'{value:#.3g}'


def multiplier(value) -> str:
  return f'×{number(value)}'


def markdown_table(header, rows) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines)


def known(value) -> bool:
  return value is not None and not (isinstance(value, float)
                                    and math.isnan(value))


def device(row) -> str:
  """'<count> x <kind> (<platform>)' of a bench row, and its host's CPU
  where the row records it: on a CPU, which processor ran it."""
  text = (f'{int(row["device_count"])} x {row["device_kind"]} '
          f'({row["platform"]})')
  host = row.get('host_cpu')
  return f'{text}, {host}' if known(host) and host else text


def code_version(commit, clean) -> str:
  """A stamp's commit in 12 hex digits, '+dirty' after local edits.

  'unknown' where none was recorded. Bench rows older than git_clean mark
  local edits with '+dirty' on the commit itself.
  """
  if not known(commit) or not commit:
    return 'unknown'
  dirty = str(commit).endswith('+dirty') or (known(clean) and not clean)
  return str(commit)[:12] + ('+dirty' if dirty else '')


def maybe(value, text) -> str:
  """text(value), or an empty table cell where the value is missing."""
  return text(value) if known(value) else ''


@dataclasses.dataclass
class Table:
  """A table of text cells and the line under it (source, stamp)."""
  header: list
  rows: list
  caption: str = ''
  # The headers of the columns that hold published numbers.
  published: tuple = ()

  def markdown(self) -> str:
    table = markdown_table(self.header, self.rows)
    return f'{table}\n\n{self.caption}' if self.caption else table

"""Table formatting shared by the speed and the accuracy tables."""

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


def maybe(value, text) -> str:
  """text(value), or an empty table cell where the value is missing."""
  return text(value) if known(value) else ''

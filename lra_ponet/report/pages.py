"""The Markdown pages' generated blocks, and the same tables as LaTeX.

A page (README.md, docs/**/*.md, results/**/*.md) holds a block as

  <!-- report:NAME -->
  ...
  <!-- /report:NAME -->

and `python -m lra_ponet.report` rewrites what is between the two lines from
the results files (`blocks.BLOCKS` names them), so that no number in the
Markdown is typed. `--check` writes nothing and fails where a page differs
from what it would write.
"""

import pathlib
import re

from lra_ponet.errors import UserError
from lra_ponet.report import blocks
from lra_ponet.report.markdown import Table

BLOCK = re.compile(r'<!-- report:(?P<name>\S+) -->\n(?P<body>.*?)'
                   r'<!-- /report:(?P=name) -->', re.DOTALL)
OPENING = re.compile(r'<!-- report:(\S+) -->')
DEFAULT_PAGES = ('README.md', 'docs', 'results')
# Copies of each run's files, not pages.
SKIPPED = ('results/runs',)


def page_paths(root, pages) -> list[pathlib.Path]:
  root = pathlib.Path(root)
  found = []
  for page in pages:
    path = root / page
    found += sorted(path.glob('**/*.md')) if path.is_dir() else (
        [path] if path.exists() else [])
  return [path for path in found if not any(
      path.relative_to(root).as_posix().startswith(skipped)
      for skipped in SKIPPED)]


def block_markdown(parts) -> str:
  return '\n\n'.join(part.markdown() if isinstance(part, Table) else part
                     for part in parts)


def fill(text: str, root, page: pathlib.Path) -> str:
  """The page with every block rewritten; a block left open is an error."""
  closed = {match.start() for match in BLOCK.finditer(text)}
  for match in OPENING.finditer(text):
    if match.start() not in closed:
      raise UserError(f'{page}: block {match.group(1)} has no closing '
                      f'<!-- /report:{match.group(1)} --> line')

  def rewrite(match):
    name = match.group('name')
    try:
      body = block_markdown(blocks.render(name, root, page.parent))
    except UserError as error:
      raise UserError(f'{page}, block {name}: {error}') from None
    return f'<!-- report:{name} -->\n{body}\n<!-- /report:{name} -->'

  return BLOCK.sub(rewrite, text)


def update_pages(root, pages=DEFAULT_PAGES, check=False) -> list[str]:
  """Rewrites (or with check, compares) every page; the pages that changed."""
  changed = []
  for path in page_paths(root, pages):
    text = path.read_text()
    new = fill(text, root, path)
    if new != text:
      changed.append(str(path.relative_to(root)))
      if not check:
        path.write_text(new)
  return changed


_LATEX_SPECIAL = {'&': r'\&', '%': r'\%', '$': r'\$', '#': r'\#', '_': r'\_',
                  '{': r'\{', '}': r'\}', '~': r'\textasciitilde{}',
                  '^': r'\textasciicircum{}', '\\': r'\textbackslash{}',
                  '±': r'$\pm$', '×': r'$\times$', '—': '---', '–': '--',
                  '−': '$-$', '·': r'\textperiodcentered{}'}


def latex_cell(text) -> str:
  """Markdown cell text as LaTeX: links as their text, code as \\texttt."""
  text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', str(text))
  pieces = re.split(r'`([^`]*)`', text.replace('*', ''))
  out = []
  for index, piece in enumerate(pieces):
    escaped = ''.join(_LATEX_SPECIAL.get(char, char) for char in piece)
    out.append(rf'\texttt{{{escaped}}}' if index % 2 else escaped)
  return ''.join(out)


def latex_table(table: Table, label: str) -> str:
  """booktabs through pandas; published columns in italics, and said so."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  marked = [table.header.index(name) for name in table.published]
  rows = [[latex_cell(cell) if index not in marked or not str(cell).strip()
           else rf'\textit{{{latex_cell(cell)}}}'
           for index, cell in enumerate(row)] for row in table.rows]
  frame = pd.DataFrame(rows, columns=[latex_cell(name)
                                      for name in table.header])
  caption = latex_cell(table.caption)
  if marked:
    caption += ' Italic: published numbers, not measured here.'
  return frame.to_latex(index=False, escape=False, caption=caption,
                        label=f'tab:{label}', column_format='l' * len(
                            table.header))


def latex_blocks(root, names) -> dict[str, str]:
  """{file name: LaTeX} of each block's tables."""
  out = {}
  for name in names:
    tables = [part for part in blocks.render(name, root, pathlib.Path(root))
              if isinstance(part, Table)]
    slug = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
    for index, table in enumerate(tables):
      label = slug if len(tables) == 1 else f'{slug}-{index + 1}'
      out[f'{label}.tex'] = latex_table(table, label)
  return out

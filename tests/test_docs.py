"""The documentation: its links resolve, its commands are CI's, its files exist.

No JAX: these tests read text files only.
"""

import collections
import pathlib
import re
import shlex
import unicodedata
import urllib.parse

import pytest

try:
  import tomllib
except ImportError:  # Python 3.10.
  tomllib = None

REPO = pathlib.Path(__file__).resolve().parents[1]

# --- Markdown reading -------------------------------------------------------

_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})(.*)$')
# A code span: a run of backticks, content within one paragraph, the same run.
_CODE_SPAN = re.compile(r'(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)',
                        re.DOTALL)
_HTML_COMMENT = re.compile(r'<!--.*?-->', re.DOTALL)
# [text](target "title") and ![alt](target): text with one level of nested
# brackets (an image inside a link), target plain or in <angle brackets>.
_LINK = re.compile(
    r'!?\[(?P<text>(?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]'
    r'\(\s*(?P<target><[^<>\n]*>|(?:[^\s()\\]|\\.|\([^\s()]*\))*)'
    r'(?:\s+(?:"[^"]*"|\'[^\']*\'|\([^()]*\)))?\s*\)')
# [label]: target (not a footnote's [^label]: text).
_REFERENCE_DEFINITION = re.compile(r'^ {0,3}\[(?!\^)[^\]]+\]:\s*(<[^>]*>|\S+)',
                                   re.MULTILINE)
_HTML_TARGET = re.compile(
    r'<(?:img|a|source)\b[^>]*?\s(?:src|href)\s*=\s*(?:"([^"]*)"|\'([^\']*)\')',
    re.IGNORECASE)
_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def _lines_with_fences(text: str):
  """(line, kind, info) per line of `text`: kind is 'prose', 'open', 'code'
  or 'close'; info is the info string of the fenced block the line is in."""
  fence = info = None
  for line in text.splitlines():
    match = _FENCE.match(line)
    if fence is None:
      # A backtick fence's info string holds no backtick.
      if match and not (match.group(1)[0] == '`' and '`' in match.group(2)):
        fence, info = match.group(1), match.group(2).strip()
        yield line, 'open', info
      else:
        yield line, 'prose', None
    elif (match and match.group(1)[0] == fence[0]
          and len(match.group(1)) >= len(fence) and not match.group(2).strip()):
      yield line, 'close', info
      fence = info = None
    else:
      yield line, 'code', info


def fenced_blocks(text: str):
  """(info string, lines) of each fenced code block, in order (a fence left
  open runs to the end of the file)."""
  blocks = []
  for line, kind, info in _lines_with_fences(text):
    if kind == 'open':
      blocks.append((info, []))
    elif kind == 'code':
      blocks[-1][1].append(line)
  return blocks


def lines_outside_fences(text: str):
  """The lines of `text`, those of fenced code blocks blank."""
  return [line if kind == 'prose' else ''
          for line, kind, _ in _lines_with_fences(text)]


def prose(text: str) -> str:
  """The text outside fenced blocks, code spans and HTML comments.

  What is removed becomes blank lines or spaces, so the rest keeps its place.
  """
  blank = lambda match: re.sub(r'[^\n]', ' ', match.group(0))
  text = _HTML_COMMENT.sub(blank, '\n'.join(lines_outside_fences(text)))
  return _CODE_SPAN.sub(blank, text)


def link_targets(text: str):
  """Every link, image and HTML src/href target in the prose of `text`."""
  text = prose(text)
  targets = []

  def scan(part):
    for match in _LINK.finditer(part):
      scan(match.group('text'))  # An image inside a link's text.
      target = match.group('target')
      if target.startswith('<'):
        target = target[1:-1]
      targets.append(re.sub(r'\\(.)', r'\1', target))

  scan(text)
  targets += [target.strip('<>')
              for target in _REFERENCE_DEFINITION.findall(text)]
  targets += [double or single
              for double, single in _HTML_TARGET.findall(text)]
  return targets


def _heading_text(raw: str) -> str:
  """A heading's text as GitHub renders it: markup gone, code kept."""
  parts = re.split(r'(`+)(.+?)\1', raw)
  out = []
  # re.split with two groups: text, fence, code, text, fence, code, ...
  for index in range(0, len(parts), 3):
    plain = parts[index]
    plain = re.sub(r'<[^>]+>', '', plain)
    plain = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', plain)
    plain = re.sub(r'(?<!\w)_+(\S(?:.*?\S)?)_+(?!\w)', r'\1', plain)
    plain = plain.replace('*', '')
    out.append(plain)
    if index + 2 < len(parts):
      out.append(parts[index + 2])
  return ''.join(out)


def github_slug(heading: str) -> str:
  """GitHub's anchor of a heading (without the suffix of a duplicate)."""
  text = _heading_text(heading).strip().lower()
  kept = ''.join(
      char for char in text
      if char in ' -_' or char.isalnum()
      or unicodedata.category(char)[0] in 'LMN')
  return kept.replace(' ', '-')


def headings(text: str):
  """The text of every ATX and setext heading outside fenced blocks."""
  found, previous = [], ''
  for line in lines_outside_fences(text):
    atx = re.match(r'^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$', line)
    if atx:
      found.append(atx.group(1) or '')
      previous = ''
      continue
    if (re.match(r'^ {0,3}(=+|-+)[ \t]*$', line) and previous.strip()
        and not re.match(r'^ {0,3}([-*+]|\d+[.)])[ \t]', previous)):
      found.append(previous.strip())
      previous = ''
      continue
    previous = line
  return found


def anchors(text: str):
  """GitHub's anchors of a page: heading slugs, duplicates numbered -1, -2."""
  seen = collections.Counter()
  result = set()
  for heading in headings(text):
    slug = github_slug(heading)
    result.add(f'{slug}-{seen[slug]}' if seen[slug] else slug)
    seen[slug] += 1
  return result


def broken_links(page: pathlib.Path, root: pathlib.Path):
  """'page: target (why)' for each relative link of `page` that fails."""
  failures = []
  name = page.relative_to(root).as_posix()
  root = root.resolve()
  for target in link_targets(page.read_text(encoding='utf-8')):
    if _SCHEME.match(target) or target.startswith('//'):
      continue  # http:, https:, mailto: and the like.
    path, _, anchor = target.partition('#')
    path = urllib.parse.unquote(path)
    if not path:
      linked = page
    elif path.startswith('/'):  # GitHub reads these from the repository root.
      linked = root / path.lstrip('/')
    else:
      linked = page.parent / path
    linked = linked.resolve()
    if linked != root and root not in linked.parents:
      failures.append(f'{name}: {target} (outside the repository)')
      continue
    if not linked.exists():
      failures.append(f'{name}: {target} (no such file)')
      continue
    if anchor and linked.is_file() and linked.suffix.lower() == '.md':
      known = anchors(linked.read_text(encoding='utf-8'))
      if anchor not in known and urllib.parse.unquote(anchor) not in known:
        failures.append(f'{name}: {target} (no heading with anchor #{anchor} '
                        f'in {linked.relative_to(root).as_posix()})')
  return failures


def documentation_pages(root: pathlib.Path):
  """README.md, docs/**/*.md and results/**/*.md outside results/runs/."""
  pages = [root / 'README.md'] if (root / 'README.md').is_file() else []
  pages += sorted((root / 'docs').glob('**/*.md'))
  runs = root / 'results' / 'runs'
  pages += [page for page in sorted((root / 'results').glob('**/*.md'))
            if runs not in page.parents]
  return pages


# --- The links --------------------------------------------------------------


def test_every_relative_link_resolves():
  pages = documentation_pages(REPO)
  assert REPO / 'README.md' in pages
  failures = [failure for page in pages for failure in broken_links(page, REPO)]
  assert not failures, (f'{len(failures)} broken link(s):\n'
                        + '\n'.join(failures))


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'figure.png').write_bytes(b'')
  (tmp_path / 'docs' / 'other.md').write_text(
      '# Other page\n\n## Setup, step by step\n\n## Setup, step by step\n\n'
      'Über straße\n===========\n\n## `model.dropout_mask_bits` and ±1\n',
      encoding='utf-8')
  page = tmp_path / 'README.md'
  page.write_text(
      '# Title\n\n'
      '## Install and run\n\n'
      'Good: [other](docs/other.md), [its section](docs/other.md#other-page),\n'
      '[the second one](docs/other.md#setup-step-by-step-1),\n'
      '[unicode](docs/other.md#über-straße), '
      '[encoded](docs/other.md#%C3%BCber-stra%C3%9Fe),\n'
      '[code](docs/other.md#modeldropout_mask_bits-and-1),\n'
      '[here](#install-and-run), [folder](docs/), '
      '![a figure](figure.png "a title"),\n'
      '[![badge](figure.png)](<docs/other.md>), '
      '[web](https://example.com/nowhere.md), [mail](mailto:a@b.c).\n\n'
      'Bad: [gone](docs/missing.md), ![no image](missing.png),\n'
      '[no anchor](docs/other.md#setup-step-by-step-2), [here](#nowhere),\n'
      '[out](../outside.md), <img src="missing.svg" alt="x">,\n'
      '[![no badge](missing-badge.png)](docs/other.md).\n\n'
      '[ref]: docs/missing-reference.md\n\n'
      'Ignored: `[inline](docs/inline.md)` and ``a `[b](c.md)` d``,\n'
      '<!-- [commented](docs/commented.md) -->\n\n'
      '```markdown\n[fenced](docs/fenced.md)\n```\n\n'
      '  ~~~\n  [indented fence](docs/indented.md)\n  ~~~\n',
      encoding='utf-8')
  assert sorted(broken_links(page, tmp_path)) == sorted([
      'README.md: docs/missing.md (no such file)',
      'README.md: missing.png (no such file)',
      'README.md: docs/other.md#setup-step-by-step-2 (no heading with anchor '
      '#setup-step-by-step-2 in docs/other.md)',
      'README.md: #nowhere (no heading with anchor #nowhere in README.md)',
      'README.md: ../outside.md (outside the repository)',
      'README.md: missing.svg (no such file)',
      'README.md: missing-badge.png (no such file)',
      'README.md: docs/missing-reference.md (no such file)',
  ])


@pytest.mark.parametrize('heading, slug', [
    ('Install and run', 'install-and-run'),
    ("Faster than the official code? The training step beside lxchtan/PoNet's",
     'faster-than-the-official-code-the-training-step-beside-lxchtanponets'),
    ('PoNet, mean ± sd', 'ponet-mean--sd'),
    ('  Über straße  ', 'über-straße'),
    ('`--model` and *emphasis* and [a link](x.md)',
     '--model-and-emphasis-and-a-link'),
    ('model.dropout_mask_bits: _16_ bits', 'modeldropout_mask_bits-16-bits'),
    ('Testing a run again, on its data or other data',
     'testing-a-run-again-on-its-data-or-other-data'),
])
def test_github_slug(heading, slug):
  assert github_slug(heading) == slug


def test_duplicate_headings_get_numbered_anchors():
  text = ('# A\n\n## Notes\n\ntext\n\n## Notes\n\n```\n# not a heading\n```\n\n'
          'Notes\n-----\n')
  assert anchors(text) == {'a', 'notes', 'notes-1', 'notes-2'}


# --- The README's commands are CI's -----------------------------------------


def _shell_lines(block_lines):
  """A shell block's commands: comments and blank lines dropped."""
  commands = []
  for line in block_lines:
    line = re.sub(r'(^|\s)#.*$', '', line).strip()
    if line:
      commands.append(line)
  return commands


def _normalised(command: str):
  """A command as tokens; pip without `python -m` and without --quiet/-q."""
  try:
    tokens = shlex.split(command)
  except ValueError:  # One line of a quoted command continued over several.
    tokens = command.split()
  if tokens[:3] in (['python', '-m', 'pip'], ['python3', '-m', 'pip']):
    tokens = ['pip'] + tokens[3:]
  if tokens[:1] == ['pip']:
    tokens = [token for token in tokens if token not in ('--quiet', '-q')]
  return tokens


def _is_pytest(command: str) -> bool:
  tokens = _normalised(command)
  return (tokens[:1] == ['pytest']
          or tokens[:3] in (['python', '-m', 'pytest'],
                            ['python3', '-m', 'pytest']))


def _readme_bash_blocks():
  text = (REPO / 'README.md').read_text(encoding='utf-8')
  return [_shell_lines(lines) for info, lines in fenced_blocks(text)
          if info.split()[:1] in (['bash'], ['sh'], ['shell'])]


def test_the_readme_commands_are_the_ones_ci_runs():
  ci_text = (REPO / '.ci' / 'run').read_text(encoding='utf-8')
  ci_lines = _shell_lines(ci_text.splitlines())
  ci_installs = [line for line in ci_lines
                 if re.match(r'^(python3? -m )?pip install\b.*\s-e\s', line)]
  ci_pytests = [line for line in ci_lines if _is_pytest(line)]
  assert len(ci_installs) == 1, (
      f'.ci/run should install the project once (pip install -e ...), '
      f'found {ci_installs}')
  # The first pytest command is the whole suite; later ones are other lanes.
  assert ci_pytests, '.ci/run runs no pytest command'
  ci_install, ci_pytest = ci_installs[0], ci_pytests[0]

  blocks = _readme_bash_blocks()
  test_blocks = [block for block in blocks
                 if any(_normalised(line)[:1] == ['pip'] for line in block)
                 and any(_is_pytest(line) for line in block)]
  assert test_blocks, (
      'README.md has no fenced bash block that installs the project and '
      'runs pytest (its "Tests" section)')
  readme_install = [line for line in test_blocks[0]
                    if _normalised(line)[:2] == ['pip', 'install']]
  readme_pytest = [line for line in test_blocks[0] if _is_pytest(line)]
  assert [_normalised(line) for line in readme_install] == [
      _normalised(ci_install)], (
          f'README.md installs for the tests with {readme_install}, '
          f'.ci/run with {ci_install!r} (compared without "python -m" and '
          f'"--quiet")')
  assert [_normalised(line) for line in readme_pytest] == [
      _normalised(ci_pytest)], (
          f'README.md runs the tests with {readme_pytest}, .ci/run with '
          f'{ci_pytest!r}')
  # What CI installs for the tests is the README's plain install plus the
  # test extra.
  assert _normalised(ci_install) == ['pip', 'install', '-e', '.[test]'], (
      f'.ci/run installs with {ci_install!r}, not pip install -e ".[test]"')
  assert any(_normalised(line) == ['pip', 'install', '-e', '.']
             for block in blocks for line in block), (
                 'README.md has no fenced bash block with the install '
                 'command, pip install -e .')


# --- The files every project has --------------------------------------------


def _pyproject():
  text = (REPO / 'pyproject.toml').read_text(encoding='utf-8')
  if tomllib is not None:
    project = tomllib.loads(text)['project']
    return project['version'], project.get('license')
  version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
  license_ = re.search(r'^license\s*=\s*"([^"]+)"', text, re.MULTILINE)
  return version.group(1), license_ and license_.group(1)


def test_the_files_every_project_has():
  version, license_ = _pyproject()
  assert license_ == 'Apache-2.0', f'pyproject.toml: license = {license_!r}'
  license_text = (REPO / 'LICENSE').read_text(encoding='utf-8')
  assert [line.strip() for line in license_text.splitlines()
          if line.strip()][:3] == [
              'Apache License', 'Version 2.0, January 2004',
              'http://www.apache.org/licenses/'], (
                  'LICENSE does not open with the Apache License 2.0 header')
  assert 'TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION' in (
      license_text)

  citation = (REPO / 'CITATION.cff').read_text(encoding='utf-8')
  assert re.search(r'^cff-version:\s*["\']?1\.2\.0', citation, re.MULTILINE)
  try:
    import yaml
  except ImportError:
    yaml = None
  if yaml is not None:
    try:
      cff = yaml.safe_load(citation)
    except yaml.YAMLError as error:
      pytest.fail(f'CITATION.cff is not valid YAML: {error}')
    assert cff['cff-version'] == '1.2.0'
    assert str(cff['version']) == version, (
        f'CITATION.cff is version {cff["version"]}, pyproject.toml {version}')
    assert cff['license'] == 'Apache-2.0'
    for key in ('message', 'title', 'authors'):
      assert cff.get(key), f'CITATION.cff has no {key}'
    for reference in cff.get('references', []):
      for key in ('type', 'title', 'authors'):
        assert reference.get(key), f'CITATION.cff: a reference without {key}'

  bibtex = REPO / 'docs' / 'citation.md'
  if bibtex.is_file():
    cited = re.findall(r'^\s*version\s*=\s*\{([^}]*)\}',
                       bibtex.read_text(encoding='utf-8'), re.MULTILINE)
    assert cited == [version], (
        f'docs/citation.md cites version {cited}, pyproject.toml {version}')

  changelog = (REPO / 'CHANGELOG.md').read_text(encoding='utf-8')
  assert re.search(rf'^## \[?{re.escape(version)}\]?(\s|$)', changelog,
                   re.MULTILINE), (
                       f'CHANGELOG.md has no "## {version}" section')

"""`lra_ponet.stamp`: the device, library and code versions of a result."""

import os
import subprocess

from lra_ponet import stamp

UNKNOWN = {'git_commit': None, 'git_clean': None}


def _git(root, *args):
  subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                 cwd=root, check=True, capture_output=True)


def test_versions_name_every_library_and_the_code():
  versions = stamp.versions()
  assert set(versions) == {f'{name}_version' for name in stamp.LIBRARIES} | {
      'git_commit', 'git_clean', 'xla_flags', 'host_memory', 'host_cpu'}
  assert all(versions[f'{name}_version'] for name in stamp.LIBRARIES)
  assert stamp.device().endswith(' x cpu (cpu)')
  assert versions['host_cpu'].endswith(f', {os.cpu_count()} cores')


def test_the_commit_and_whether_the_code_has_edits(tmp_path, monkeypatch):
  monkeypatch.setattr(stamp, 'ROOT', tmp_path)
  assert stamp.code_version() == UNKNOWN  # Not a git checkout.
  (tmp_path / 'code.py').write_text('a = 1\n')
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'table.md').write_text('1\n')
  _git(tmp_path, 'init', '-q')
  _git(tmp_path, 'add', '.')
  _git(tmp_path, 'commit', '-q', '-m', 'one')
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=tmp_path, text=True,
                        capture_output=True, check=True).stdout.strip()
  assert stamp.code_version() == {'git_commit': head, 'git_clean': True}
  # Results and untracked files are not edits to the code.
  (tmp_path / 'results' / 'table.md').write_text('2\n')
  (tmp_path / 'notes.txt').write_text('')
  assert stamp.code_version()['git_clean'] is True
  (tmp_path / 'code.py').write_text('a = 2\n')
  assert stamp.code_version() == {'git_commit': head, 'git_clean': False}
  # A package installed inside another checkout (its virtualenv) is not it.
  (tmp_path / 'venv').mkdir()
  monkeypatch.setattr(stamp, 'ROOT', tmp_path / 'venv')
  assert stamp.code_version() == UNKNOWN

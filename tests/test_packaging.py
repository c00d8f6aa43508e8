"""The install puts one top-level package, lra_ponet, holding every module."""

import pathlib
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads(
    (REPO / 'pyproject.toml').read_text())['tool']['setuptools']


def source_dir(package: str) -> pathlib.Path:
  """Where setuptools takes `package` from (its package-dir mapping)."""
  mapped = SETUPTOOLS['package-dir'].get(package)
  return REPO / (mapped or package.replace('.', '/'))


def test_every_package_of_the_repository_installs_under_lra_ponet():
  listed = set(SETUPTOOLS['packages'])
  assert {name.split('.')[0] for name in listed} == {'lra_ponet'}
  found = set()
  for package in listed:
    assert (source_dir(package) / '__init__.py').is_file(), package
    for child in source_dir(package).iterdir():
      if (child / '__init__.py').is_file():
        found.add(f'{package}.{child.name}')
  assert found <= listed  # No subpackage left out of the install.
  top_level = {path.parent.name for path in REPO.glob('*/__init__.py')}
  assert top_level == {'lra_ponet', 'tasks', 'baselines', 'configs'}
  assert {f'lra_ponet.{name}' for name in top_level - {'lra_ponet'}} <= listed


def test_a_checkout_without_an_install_imports_the_same_modules(tmp_path):
  code = ('import lra_ponet.tasks.listops, lra_ponet.baselines.fnet, '
          'lra_ponet.configs.text; print(lra_ponet.tasks.listops.__file__)')
  done = subprocess.run([sys.executable, '-S', '-c', code], cwd=REPO,
                        capture_output=True, text=True, check=False,
                        env={'PYTHONPATH': f'{REPO}:{":".join(sys.path[1:])}'})
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == str(REPO / 'tasks' / 'listops.py')

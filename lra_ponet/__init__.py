"""lra_ponet: Long Range Arena with PoNet, Transformer and FNet token mixers.

The repository keeps the package's task, baseline-mixer and config modules in
top-level folders (`tasks/`, `baselines/`, `configs/`); an install puts them
inside this package (`lra_ponet.tasks`, ...; see pyproject.toml). Run from a
checkout without an install (`PYTHONPATH=.`, as the benchmark scripts do),
the package finds them beside its own folder.
"""

import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
if not (_HERE / 'tasks').is_dir() and (_HERE.parent / 'tasks').is_dir():
  __path__.append(str(_HERE.parent))

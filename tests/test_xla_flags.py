"""lra_ponet.xla_flags: the CPU defaults, only where jaxlib knows them."""

import json
import os
import subprocess

import pytest

from lra_ponet import input_pipeline
from lra_ponet import xla_flags


def test_the_defaults_are_known_to_this_jaxlib_and_the_answer_is_kept():
  assert xla_flags._accepted(xla_flags.CPU_DEFAULTS)  # pylint: disable=protected-access
  kept = json.loads((input_pipeline.cache_dir() / 'xla_flags.json')
                    .read_text())
  assert list(kept.values()) == [True]


def test_an_unknown_flag_is_refused_once_then_from_the_cache(monkeypatch):
  unknown = ('--xla_cpu_no_such_flag_here=1',)
  assert not xla_flags._accepted(unknown)  # pylint: disable=protected-access

  def no_probe(*args, **kwargs):
    raise AssertionError('probed again')

  monkeypatch.setattr(subprocess, 'run', no_probe)
  assert not xla_flags._accepted(unknown)  # pylint: disable=protected-access


@pytest.mark.parametrize('before, opt_out, after', [
    ('--xla_foo=1', None,
     '--xla_foo=1 --xla_cpu_experimental_ynn_fusion_type='),
    ('', None, '--xla_cpu_experimental_ynn_fusion_type='),
    # A value the user chose, or the opt-out, is left as it is.
    ('--xla_cpu_experimental_ynn_fusion_type=dot', None,
     '--xla_cpu_experimental_ynn_fusion_type=dot'),
    ('--xla_foo=1', '0', '--xla_foo=1'),
])
def test_defaults_join_xla_flags_unless_set_or_opted_out(monkeypatch, before,
                                                         opt_out, after):
  monkeypatch.setattr(xla_flags, '_accepted', lambda flags: True)
  monkeypatch.setenv('XLA_FLAGS', before)
  if opt_out is None:
    monkeypatch.delenv('LRA_PONET_XLA_DEFAULTS', raising=False)
  else:
    monkeypatch.setenv('LRA_PONET_XLA_DEFAULTS', opt_out)
  xla_flags.set_cpu_defaults()
  assert os.environ['XLA_FLAGS'] == after


def test_a_jaxlib_without_the_flag_keeps_xla_flags(monkeypatch):
  monkeypatch.setattr(xla_flags, '_accepted', lambda flags: False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_foo=1')
  monkeypatch.delenv('LRA_PONET_XLA_DEFAULTS', raising=False)
  xla_flags.set_cpu_defaults()
  assert os.environ['XLA_FLAGS'] == '--xla_foo=1'

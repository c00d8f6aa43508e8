"""host_memory: malloc keeps freed memory, and the harness's cells inherit it."""

import subprocess
import sys
import textwrap

import pytest

from lra_ponet import host_memory
from lra_ponet.bench import sweep
from lra_ponet.errors import UserError

glibc = pytest.mark.skipif(host_memory._glibc() is None,  # pylint: disable=protected-access
                           reason='needs Linux with glibc')


def test_children_get_the_settings_unless_malloc_is_chosen_already():
  assert host_memory.child_tunables({}) == host_memory.TUNABLES
  assert (host_memory.child_tunables({'GLIBC_TUNABLES': 'glibc.cpu.x86_rep_movsb_threshold=0'})
          == 'glibc.cpu.x86_rep_movsb_threshold=0:' + host_memory.TUNABLES)
  chosen = {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  assert host_memory.child_tunables(chosen) == 'glibc.malloc.hugetlb=1'
  assert host_memory.child_tunables({host_memory.ENV: 'system'}) == ''


def test_a_cell_started_with_the_settings_records_them(monkeypatch):
  monkeypatch.setattr(host_memory, '_applied', False)
  started = {'GLIBC_TUNABLES': host_memory.child_tunables({})}
  assert host_memory.mode(started) == 'retained'
  assert host_memory.mode({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}) == 'system'


def test_an_unknown_choice_names_the_variable_and_the_choices():
  with pytest.raises(UserError, match='LRA_PONET_HOST_MEMORY=.*retained or system'):
    host_memory.wanted({host_memory.ENV: 'keep'})


def test_the_harness_starts_and_records_its_cells_with_the_settings(monkeypatch):
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv(host_memory.ENV, raising=False)
  assert sweep.child_env()['GLIBC_TUNABLES'] == host_memory.TUNABLES
  monkeypatch.setenv(host_memory.ENV, 'system')
  assert 'GLIBC_TUNABLES' not in sweep.child_env()


# A freed 256 MiB block: unmapped at once by glibc's default malloc, kept in
# the heap (resident) once the settings are applied.
_FREE_AND_MEASURE = textwrap.dedent('''
    import sys
    from lra_ponet import host_memory
    mode = host_memory.retain_freed_memory()
    def resident_mib():
      for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) // 1024
    block = bytearray(256 << 20)
    before = resident_mib()
    del block
    print(mode, before - resident_mib())
''')


@glibc
@pytest.mark.parametrize('choice, mode, kept', [('retained', 'retained', True),
                                                ('system', 'system', False)])
def test_freed_memory_stays_mapped_only_when_retained(choice, mode, kept,
                                                     monkeypatch):
  monkeypatch.setenv(host_memory.ENV, choice)
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  out = subprocess.run([sys.executable, '-c', _FREE_AND_MEASURE], check=True,
                       capture_output=True, text=True).stdout.split()
  assert out[0] == mode
  released_mib = int(out[1])
  assert (released_mib < 16) if kept else (released_mib > 200)

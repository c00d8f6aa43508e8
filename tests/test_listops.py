"""ListOps tokenisation and the loader of the official TSV files."""

import numpy as np
import pytest

from lra_ponet.tasks import listops
from lra_ponet.errors import UserError


def test_vocabulary_is_fixed_and_sorted():
  assert listops.VOCAB == ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
                           'X', '[MAX', '[MED', '[MIN', '[SM')
  assert listops.tokenize('( ( ( [MAX 2 ) 9 ) ] )') == [12, 3, 10, 11]
  assert 0 not in listops.TOKEN_IDS.values()


def _write(path, rows, header=listops.HEADER):
  path.write_text('\n'.join([header, *rows]) + '\n')
  return path


def test_reads_official_format_truncates_and_pads(tmp_path):
  path = _write(tmp_path / 'basic_train.tsv', [
      '( ( ( [MAX 2 ) 9 ) ] )\t9',
      '( ( ( ( [SM 1 ) 2 ) 3 ) ] )\t6.0',
  ])
  split = listops.read_tsv(path, max_len=4, padded_len=6)
  np.testing.assert_array_equal(split.labels, [9, 6])
  np.testing.assert_array_equal(split.inputs, [[12, 3, 10, 11, 0, 0],
                                               [15, 2, 3, 4, 0, 0]])


@pytest.mark.parametrize('rows,header,message', [
    (['( [MAX 2 ] )\t9\textra'], listops.HEADER, r'basic_train.tsv:2: .*2'),
    (['( [MAX 2 ] )\t9', '( [MAX 2 ] )'], listops.HEADER,
     r'basic_train.tsv:3: expected 2'),
    (['( [MAX 2 ] )\t10'], listops.HEADER, r':2: .*outside'),
    (['( [MAX 2 ] )\tseven'], listops.HEADER, r':2: .*not a number'),
    (['( [MAX 2 ] )\t2.5'], listops.HEADER, r':2: .*outside'),
    (['( [MAXX 2 ] )\t2'], listops.HEADER, r":2: unknown ListOps token"),
    (['( [MAX 2 ] )\t2'], 'Source,Target', r':1: expected the header'),
    ([], listops.HEADER, 'no examples'),
])
def test_malformed_files_name_file_and_line(tmp_path, rows, header, message):
  path = _write(tmp_path / 'basic_train.tsv', rows, header)
  with pytest.raises(UserError, match=message):
    listops.read_tsv(path, 10, 10)


def test_missing_release_names_the_expected_path(tmp_path):
  from lra_ponet.configs import listops as listops_config
  settings = listops_config.get_config()
  settings.data_dir = str(tmp_path)
  with pytest.raises(UserError, match='listops-1000/basic_train.tsv'):
    listops.load(settings)


def test_loads_release_root_or_folder(tiny_listops_dir):
  from lra_ponet.configs import listops as listops_config
  settings = listops_config.get_config()
  for data_dir in (tiny_listops_dir, tiny_listops_dir / 'listops-1000'):
    settings.data_dir = str(data_dir)
    data = listops.load(settings)
    assert (len(data.train), len(data.validation), len(data.test)) == (
        64, 16, 16)
    assert data.train.inputs.shape == (64, 2048)
    assert 'LRA release files' in data.source
    assert ((data.train.inputs > 0).sum(1) > 500).all()


def test_bytes_that_are_not_utf8_name_file_line_and_byte(tmp_path):
  path = tmp_path / 'basic_val.tsv'
  path.write_bytes(listops.HEADER.encode() + b'\n( [MAX 2 ] )\t2\n'
                   + b'( [MAX \xff ] )\t2\n')
  with pytest.raises(UserError, match=r'basic_val.tsv:3: byte 0xff at '
                     r'column 8 is not UTF-8 text; expected ListOps'):
    listops.read_tsv(path, 10, 10)


def test_cache_keys_follow_the_recipe(tmp_path, monkeypatch):
  from lra_ponet.configs import listops as listops_config
  calls = []
  real_generate = listops.listops_generator.generate_listops

  def generate(directory, *, seed, **settings):
    calls.append(seed)
    real_generate(directory, seed=seed, progress=False, **settings)

  monkeypatch.setattr(listops.listops_generator, 'generate_listops',
                      generate)
  reads = []
  real_read_tsv = listops.read_tsv
  monkeypatch.setattr(listops, 'read_tsv', lambda *args: reads.append(
      args[0].name) or real_read_tsv(*args))
  settings = listops_config.get_config()
  settings.generator.update(num_train=8, num_val=4, num_test=4)
  listops.load(settings)
  listops.load(settings)
  assert (calls, len(reads)) == ([0], 3)  # Generated and tokenised once.
  monkeypatch.setattr(listops, 'RECIPE', 'another tokeniser')
  listops.load(settings)
  assert (calls, len(reads)) == ([0], 6)  # Tokenised again, not generated.
  monkeypatch.setattr(listops, 'GENERATOR_RECIPE', 'another generator')
  listops.load(settings)
  assert calls == [0, 0]  # A changed generator never reuses old files.
  settings.generator.max_depth = 9
  listops.load(settings)
  assert calls == [0, 0, 0]  # Nor do other generator settings.

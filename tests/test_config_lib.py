"""Configs as the commands read them: overrides, migration, committed runs."""

import json
import pathlib

import pytest

from lra_ponet import checkpoint
from lra_ponet import config_lib
from lra_ponet import tasks
from lra_ponet.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / 'results' / 'runs').glob('**/config.json'))
# The first runs of the suite, before the optimiser's fields and the
# generator settings were recorded: their results report, but their configs
# could never be rebuilt.
UNREBUILDABLE = 'cpu_listops_300steps'


def old_layout(config: dict) -> dict:
  """A config as the suite saved it before mixer fields moved under names."""
  model = dict(config['model'])
  ponet = model.pop('ponet', {'segment_num': 64, 'local_window': 3})
  transformer = model.pop('transformer', {})
  model.update(segment_num=ponet['segment_num'],
               local_window=ponet['local_window'],
               attention=transformer.get('attention', 'xla'),
               attention_bias=transformer.get('attention_bias', True),
               qkv_dim=transformer.get('qkv_dim', model['dim']))
  return dict(config, model=model)


@pytest.mark.parametrize('model', ['ponet', 'transformer', 'fnet'])
def test_old_layout_migrates_to_the_current_config(model):
  current = json.loads(json.dumps(
      tasks.get_config('listops', 'ponet', model).to_dict()))
  old = old_layout(current)
  assert config_lib.migrate(old) == current
  assert 'ponet' not in old['model']  # The input is left as it was.
  assert config_lib.migrate(current) is current


@pytest.mark.parametrize('path', COMMITTED,
                         ids=[str(p.parent.relative_to(REPO))
                              for p in COMMITTED])
def test_committed_runs_rebuild_and_resume(path, tmp_path):
  saved = json.loads(path.read_text())
  if UNREBUILDABLE in str(path):
    with pytest.raises(UserError, match='cannot be rebuilt'):
      config_lib.rebuild(saved)
    return
  config = config_lib.rebuild(saved)
  assert config.model.name == saved['model']['name']
  assert not config_lib.differences(config_lib.migrate(saved),
                                    config.to_dict(), ignored=frozenset())
  # Resuming its workdir with the rebuilt config is accepted, and the saved
  # config is rewritten in the current layout.
  (tmp_path / 'config.json').write_text(path.read_text())
  checkpoint.prepare_workdir(tmp_path, config.to_dict(), overwrite=False,
                             is_writer=True)
  rewritten = json.loads((tmp_path / 'config.json').read_text())
  assert rewritten == json.loads(json.dumps(config.to_dict()))


def test_resume_refuses_a_real_difference_after_migration(tmp_path):
  current = tasks.get_config('listops').to_dict()
  old = old_layout(json.loads(json.dumps(current)))
  old['model']['segment_num'] = 32
  (tmp_path / 'config.json').write_text(json.dumps(old))
  with pytest.raises(UserError, match=r'model.ponet.segment_num: 32 -> 64'):
    checkpoint.prepare_workdir(tmp_path, current, overwrite=False,
                               is_writer=True)


@pytest.mark.parametrize('model, override, message', [
    ('fnet', 'model.segment_num',
     "it is the ponet mixer's field, config.model.ponet.segment_num, which "
     'exists only with --model=ponet'),
    ('fnet', 'model.ponet.segment_num',
     'belong to the ponet mixer, but the model is fnet; choose '
     '--model=ponet'),
    ('ponet', 'model.qkv_dim', "transformer mixer's field"),
    ('ponet', 'model.ponet.segments',
     "the ponet mixer's own: model.ponet.local_window, "
     'model.ponet.segment_num'),
    ('transformer', 'batch_sise', "unknown config field 'batch_sise'"),
])
def test_an_override_of_another_mixers_field_is_refused(model, override,
                                                        message):
  config = tasks.get_config('listops', 'ponet', model)
  with pytest.raises(UserError, match='^unknown config field') as error:
    config_lib.check_overrides(['run', f'--config.{override}=7'], config)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_a_chosen_mixers_own_field_is_accepted_and_others_are_absent():
  config = tasks.get_config('listops', 'ponet', 'fnet')
  assert not any(name in config.model for name in ('ponet', 'transformer'))
  config_lib.check_overrides(['run', '--config.model.dim=32'], config)
  ponet = tasks.get_config('listops', 'ponet', 'ponet')
  config_lib.check_overrides(['run', '--config.model.ponet.segment_num=8'],
                             ponet)


def test_allowed_refuses_known_fields_with_its_reason():
  config = tasks.get_config('listops')
  with pytest.raises(UserError, match='^--config.model.dim: not here$'):
    config_lib.check_overrides(['evaluate', '--config.model.dim=8'], config,
                               allowed=lambda field: 'not here')

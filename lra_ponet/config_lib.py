"""A run's config as the suite handles it: overrides, flat fields, differences.

Every command that reads `--config.FIELD=...` overrides, saves a config
(`config.json`, `results.json`), resumes or re-tests a run, or compares a
run with the published setting goes through these functions, so that all of
them agree on what a field is and when two configs are the same run.

Saved configs of earlier versions of the suite are brought to the current
layout when read (`migrate`): they load, resume, re-test and report as
before.
"""

import ast
import copy
import json
import re

from flax import traverse_util

from lra_ponet import tasks
from lra_ponet.configs import base
from lra_ponet.errors import UserError

# Fields that change only logging and checkpointing, not what the run
# computes: a run may be resumed with other values of them.
RESUMABLE_FIELDS = frozenset({'log_every', 'checkpoint_every',
                              'checkpoint_keep'})
# Mixer fields that earlier versions kept at the top of `config.model`, by
# the mixer that reads them; they now live under `config.model.<mixer>`.
MOVED_MIXER_FIELDS = {
    'ponet': ('segment_num', 'local_window'),
    'transformer': ('attention', 'attention_bias', 'qkv_dim'),
}
# Fields added after runs were saved without them: the value that
# reproduces those runs, which `migrate` fills in.
ADDED_FIELDS = {'model.dropout_mask_bits': 32}


def flatten(config_dict: dict) -> dict:
  """Dotted field -> value, as config.json holds it (tuples as lists)."""
  return traverse_util.flatten_dict(json.loads(json.dumps(config_dict)),
                                    sep='.')


def lookup(config, field: str):
  """The value of a dotted field of a ConfigDict or dict."""
  for name in field.split('.'):
    config = config[name]
  return config


def differences(saved: dict, current: dict, *,
                ignored=RESUMABLE_FIELDS) -> list[str]:
  """`field: saved -> current` for each field that differs, but `ignored`.

  Both are compared as config.json holds them, so a tuple equals its list.
  `ignored` names fields by their last component.
  """
  saved, current = flatten(saved), flatten(current)
  absent = '(absent)'
  return [f'{field}: {saved.get(field, absent)} -> '
          f'{current.get(field, absent)}'
          for field in sorted(saved.keys() | current.keys())
          if field.rsplit('.', 1)[-1] not in ignored
          and saved.get(field, absent) != current.get(field, absent)]


def migrate(saved: dict) -> dict:
  """A saved config (a dict) in the current layout; the input is unchanged.

  The moved mixer fields go under the chosen mixer's name; those of a mixer
  that was not chosen are dropped, since that mixer never read them. An
  added field that is absent gets the value of `ADDED_FIELDS`.
  """
  model = saved.get('model', {})
  moved_any = any(field in model for fields in MOVED_MIXER_FIELDS.values()
                  for field in fields)
  flat = flatten(saved)
  missing = {field: value for field, value in ADDED_FIELDS.items()
             if field not in flat}
  if not model or not (moved_any or missing):
    return saved
  saved = copy.deepcopy(saved)
  model = saved['model']
  for mixer, fields in MOVED_MIXER_FIELDS.items():
    moved = {field: model.pop(field) for field in fields if field in model}
    if mixer == model.get('name') and moved:
      model.setdefault(mixer, {}).update(moved)
  for field, value in missing.items():
    *parents, name = field.split('.')
    section = saved
    for parent in parents:
      section = section.setdefault(parent, {})
    section[name] = value
  return saved


def without_added_defaults(config: dict) -> dict:
  """`config` less the added fields that hold their `ADDED_FIELDS` value.

  A run's identity (the report's config hash) then stays what it was
  before those fields existed.
  """
  config = copy.deepcopy(config)
  for field, value in ADDED_FIELDS.items():
    *parents, name = field.split('.')
    section = config
    for parent in parents:
      section = section.get(parent, {})
    if name in section and section[name] == value:
      del section[name]
  return config


def rebuild(saved: dict):
  """The ConfigDict of a saved config, as `lra_ponet.run` builds it."""
  saved = migrate(saved)
  try:
    config = tasks.get_config(saved['task'], saved['preset'],
                              saved['model']['name'])
  except (KeyError, TypeError) as error:
    raise UserError(f'not the config of a run (no field {error})') from None
  if config.schedule != saved.get('schedule'):
    base.set_schedule(config, saved.get('schedule'))
  current = flatten(config.to_dict())
  for field, value in flatten(saved).items():
    if field in current and current[field] != value:
      if isinstance(lookup(config, field), tuple):
        value = tuple(value)
      config.update_from_flattened_dict({field: value})
  remaining = differences(saved, config.to_dict())
  if remaining:
    raise UserError('cannot be rebuilt by this version of the suite '
                    f'({"; ".join(remaining)})')
  return config


def parse_value(current, text: str):
  """`text` as a value of `current`'s type, as `--config.FIELD=` reads it."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'{text!r} is not true or false')
      return text.lower() in ('true', '1')
    if isinstance(current, (int, float)):
      return type(current)(text)
    if isinstance(current, (tuple, list)):
      return type(current)(ast.literal_eval(text))
  except (ValueError, SyntaxError) as error:
    raise UserError(f'cannot read {text!r} as a {type(current).__name__} '
                    f'({error})') from None
  return text


def split_overrides(argv) -> tuple[list[str], dict[str, str]]:
  """argv without its `--config.FIELD=VALUE` items, and those as a dict."""
  rest, overrides = [], {}
  for arg in argv:
    match = re.fullmatch(r'--config\.([^=]+)=(.*)', arg, re.DOTALL)
    if match:
      overrides[match.group(1)] = match.group(2)
    else:
      rest.append(arg)
  return rest, overrides


def apply_overrides(config, overrides: dict[str, str]):
  """Sets each `field: text` override that `config` has; returns the rest."""
  fields = flatten(config.to_dict())
  for field, text in overrides.items():
    if field in fields:
      try:
        value = parse_value(lookup(config, field), text)
      except UserError as error:
        raise UserError(f'--config.{field}: {error}') from None
      config.update_from_flattened_dict({field: value})
  return {field: text for field, text in overrides.items()
          if field not in fields}


def override_fields(argv) -> list[str]:
  """The FIELD of each `--config.FIELD=VALUE` (or `--config.FIELD VALUE`)."""
  return [match.group(1) for arg in argv[1:]
          if (match := re.match(r'--config\.([^=]+)', arg))]


def check_overrides(argv, config, *, allowed=None):
  """Refuses, in one line, an override of a field `config` does not have.

  `allowed(field) -> str | None` may refuse known fields too, returning why.
  """
  fields = set(flatten(config.to_dict()))
  for field in override_fields(argv):
    if field not in fields:
      raise UserError(unknown_field_message(field, config, fields))
    reason = allowed(field) if allowed else None
    if reason:
      raise UserError(f'--config.{field}: {reason}')


def unknown_field_message(field: str, config, fields) -> str:
  """Why `field` is not a field of `config`, and what to write instead."""
  parts = field.split('.')
  chosen = config.model.name
  if len(parts) == 2 and parts[0] == 'model':
    owner = next((mixer for mixer, moved in MOVED_MIXER_FIELDS.items()
                  if parts[1] in moved), None)
    if owner:
      return (f'unknown config field {field!r}: it is the {owner} mixer\'s '
              f'field, config.model.{owner}.{parts[1]}, which exists only '
              f'with --model={owner}')
  if len(parts) > 2 and parts[0] == 'model' and parts[1] != chosen:
    return (f'unknown config field {field!r}: the fields under model.'
            f'{parts[1]} belong to the {parts[1]} mixer, but the model is '
            f'{chosen}; choose --model={parts[1]} or drop the override')
  own = sorted(name for name in fields if name.startswith(f'model.{chosen}.'))
  return (f'unknown config field {field!r} for task {config.task} and model '
          f'{chosen}; valid fields: '
          f'{", ".join(sorted(name for name in fields if name not in own))}'
          + (f'; the {chosen} mixer\'s own: {", ".join(own)}' if own else ''))

"""Each cell's training step lowered for CUDA or TPU, on any machine.

`python -m lra_ponet.bench --export_platforms=cuda,tpu` builds the step a
cell would time (the same config, state and jitted, donated step as
`child.compile_step`) and, instead of running it, lowers it for each
platform with `jax.export.export`. That needs no such device: on a CPU-only
machine it shows that every op of the step has a lowering for the platform,
and names the op where one has none.

cuDNN attention is the exception: jax lowers it only where cuDNN itself is
installed (without it, "cuDNN is not detected"), so its cells are skipped
with that reason off an NVIDIA GPU, and its arguments are tested on the CPU
instead (tests/test_export.py).
"""

import collections

import jax

from lra_ponet import steps
from lra_ponet import tasks
from lra_ponet import validation
from lra_ponet.bench import child
from lra_ponet.errors import UserError

# jax.export's platform names.
PLATFORMS = ('cuda', 'rocm', 'tpu', 'cpu')


def check_platforms(platforms):
  """Refuses a platform name that jax.export does not know."""
  for platform in platforms:
    if platform not in PLATFORMS:
      raise UserError(f'--export_platforms: unknown platform {platform!r}; '
                      f'use one or more of {", ".join(PLATFORMS)}')


def skip_reason(cell, platform) -> str:
  """Why a cell cannot be lowered here at all; empty when it can."""
  if cell['attention'] != 'cudnn':
    return ''
  if platform != 'cuda':
    return 'cuDNN attention exists on NVIDIA GPUs only'
  if jax.default_backend() != 'gpu':
    return ('cuDNN attention lowers only where cuDNN is installed (an NVIDIA '
            'GPU machine); here jax would raise "cuDNN is not detected"')
  return ''


def lower(function, args, platform) -> dict:
  """`function` (jitted) exported for `platform`: ok, or the first error line.

  The one-line reason names the op: jax raises "... no lowering for
  `<primitive>` on platform ..." or the lowering rule's own message.
  """
  try:
    exported = jax.export.export(function, platforms=(platform,))(*args)
  except Exception as error:  # pylint: disable=broad-except
    return {'status': 'error', 'reason': child.error_line(error)}
  return {'status': 'ok', 'reason': '',
          'stablehlo_bytes': len(exported.mlir_module_serialized)}


def cell_step(cell):
  """The cell's jitted training step and its abstract arguments.

  The state is built abstractly (`jax.eval_shape`): no parameter is
  computed, so a cell costs its trace and lowering only.
  """
  config = child.cell_config(cell)
  info = tasks.get_task(cell['task']).INFO
  graphdefs = []

  def build_state():
    graphdef, _, state = steps.create_train_state(config, info)
    graphdefs.append(graphdef)
    return state

  state = jax.eval_shape(build_state)
  step = jax.jit(child.flat_step(
      steps.make_train_step(graphdefs[0], mask_zero_tokens=True), state),
                 donate_argnums=0)
  return step, (jax.tree.leaves(state), validation.batch_shape(config, info))


def export_cell(cell, platforms) -> dict:
  """platform -> the export's fields, for one cell; its step built once."""
  results = {platform: {'status': 'skipped', 'reason': reason}
             for platform in platforms
             if (reason := skip_reason(cell, platform))}
  to_lower = [platform for platform in platforms if platform not in results]
  if to_lower:
    try:
      step, args = cell_step(cell)
    except Exception as error:  # pylint: disable=broad-except
      failed = {'status': 'error', 'reason': child.error_line(error)}
      results.update({platform: failed for platform in to_lower})
    else:
      results.update({platform: lower(step, args, platform)
                      for platform in to_lower})
  return {platform: results[platform] for platform in platforms}


def describe(fields) -> str:
  if fields['status'] == 'ok':
    return f'ok ({fields["stablehlo_bytes"] / 1024:,.0f} KiB of StableHLO)'
  return f'{fields["status"]}: {fields["reason"]}'


def run(cells, platforms) -> collections.Counter:
  """Exports every cell for every platform, one line each; the statuses."""
  statuses = collections.Counter()
  for count, (name, cell) in enumerate(cells, 1):
    for platform, fields in export_cell(cell, platforms).items():
      print(f'[{count:>3}] {name:<19} L={cell["length"]:<7,} '
            f'B={cell["batch_size"]:<4} {cell["dtype"]:<8} {platform:<4} '
            f'{describe(fields)}', flush=True)
      statuses[fields['status']] += 1
  return statuses

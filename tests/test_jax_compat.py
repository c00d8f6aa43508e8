"""jax_compat: tracing a model never walks the trace for an error message."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax._src import core
from jax._src.interpreters import partial_eval

from lra_ponet import jax_compat
from lra_ponet import models  # pylint: disable=unused-import  (it applies it)
from lra_ponet import steps
from lra_ponet import tasks


def test_the_tracer_no_longer_walks_the_trace():
  assert not jax_compat.walks_the_trace()


def test_walks_the_trace_tells_the_two_properties_apart():
  class Walking:
    @property
    def sharding(self):
      raise AttributeError(f'not available.{self._origin_msg()}')

  class Plain:
    sharding = property(jax_compat._sharding_without_origin)  # pylint: disable=protected-access

  assert jax_compat.walks_the_trace(Walking)
  assert not jax_compat.walks_the_trace(Plain)


def test_tracing_a_training_step_builds_no_origin_message(monkeypatch):
  calls = []
  for tracer_class in (core.Tracer, partial_eval.DynamicJaxprTracer):
    monkeypatch.setattr(tracer_class, '_origin_msg',
                        lambda self: calls.append(1) or '', raising=False)
  config = tasks.get_config('listops', 'ponet', 'transformer')
  config.update(dict(max_len=16, padded_len=16))
  config.model.update(dict(num_layers=1, dim=16, mlp_dim=32))
  info = tasks.get_task('listops').INFO

  def init_and_step():
    graphdef, _, state = steps.create_train_state(config, info)
    batch = {'inputs': jnp.ones((2, 16), jnp.int32),
             'label': jnp.zeros((2,), jnp.int32)}
    return steps.make_train_step(graphdef, True)(state, batch)

  jax.eval_shape(init_and_step)
  assert not calls


def test_a_tracer_still_has_no_sharding_and_says_so():
  seen = {}

  @jax.jit
  def probe(x):
    seen['hasattr'] = hasattr(x, 'sharding')
    with pytest.raises(AttributeError, match=(
        r"^The 'sharding' attribute is not available on traced array")):
      x.sharding  # pylint: disable=pointless-statement
    return x

  probe(jnp.ones(2))
  assert seen == {'hasattr': False}
  # Concrete arrays and Variables keep theirs.
  assert jnp.ones(2).sharding is not None
  assert nnx.Param(jnp.ones(2))[...].sharding is not None

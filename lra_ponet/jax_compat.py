"""A workaround for jax before 0.12: tracing that slows with a trace's size.

Flax reads `getattr(value, 'sharding', None)` every time a Variable is
updated, and inside a trace that is every RNG draw (`rngs.params()`,
dropout) and every parameter the optimizer writes. On a tracer, jax before
0.12 raises that AttributeError with a message that walks every equation
traced so far to say where the value came from, so tracing a model costs
time quadratic in its size. Tracing the training step of each of the 18
mixers at the tiny sizes of tests/test_validation.py took 7.6 to 8.8 s
with the walk and 5.7 to 5.8 s without it on one core, LSTR's 2.0 s and
1.1 s.

jax 0.12 raises the same AttributeError without the walk; this gives older
jax that version's property. Nothing else changes: `hasattr` and `getattr`
answer as before, and an uncaught error keeps its first sentence.
"""

from jax._src import core


def _sharding_without_origin(tracer):
  # jax 0.12's Tracer.sharding, word for word.
  raise AttributeError(
      f"The 'sharding' attribute is not available on {tracer._error_repr()}.")  # pylint: disable=protected-access


def walks_the_trace(tracer_class=core.Tracer) -> bool:
  """Whether `tracer_class.sharding` builds the trace-walking message."""
  return '_origin_msg' in tracer_class.sharding.fget.__code__.co_names


def drop_the_trace_walk():
  """Gives jax's Tracer 0.12's `sharding` property where it walks the trace."""
  if walks_the_trace():
    core.Tracer.sharding = property(_sharding_without_origin)

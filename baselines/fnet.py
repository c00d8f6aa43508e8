"""FNet token mixing (Lee-Thorp et al., 2021): Re(FFT2) over length and hidden.

No parameters and no output projection. Like the FNet rows of the PoNet paper,
padding takes part in the transform: FNet does not support a padding mask.
The official LRA code computes `fft(fft(X, dim=-1), dim=-2).real`
(lxchtan/PoNet `examples/LRA/code/attention_fnet.py`); `real_fft2` gives the
same values from half the spectrum.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class FNetMixer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`; the mask is ignored."""

  masks_padding = False

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del model_config, rngs, layer_index  # FNet has no parameters.
    return cls()

  def __call__(self, x_BxLxD, mask_BxL):
    del mask_BxL
    # XLA's FFT has no bfloat16 kernel; transform in float32 and cast back.
    return real_fft2(x_BxLxD.astype(jnp.float32)).astype(x_BxLxD.dtype)


def _real_fft2(x_BxLxD):
  """Re(FFT2(x)) over axes 1 and 2 of a real x, from half the spectrum.

  For real x the spectrum is conjugate-symmetric, Y[k, d] = conj(Y[-k, -d])
  (indices mod L and D), so the real parts of the columns past D // 2 are
  those of columns D - d at rows -k: one real FFT over D and a complex FFT
  over L of D // 2 + 1 columns instead of D.
  """
  dim = x_BxLxD.shape[2]
  half_BxLxH = jnp.fft.fft(jnp.fft.rfft(x_BxLxD, axis=2), axis=1).real
  rest = dim - half_BxLxH.shape[2]  # Columns D // 2 + 1 .. D - 1.
  if not rest:
    return half_BxLxH
  # Rows 0, L - 1, ..., 1 (row -k), columns D - d for d = H .. D - 1.
  mirrored_BxLxR = jnp.roll(jnp.flip(half_BxLxH[:, :, 1:rest + 1], (1, 2)),
                            1, axis=1)
  return jnp.concatenate([half_BxLxH, mirrored_BxLxR], axis=2)


@jax.custom_vjp
def real_fft2(x_BxLxD):
  """`Re(FFT2(x))` over length and hidden, with its gradient in kind.

  The map is linear and its matrix, the real part of the symmetric 2D DFT
  matrix, is symmetric: the gradient is the same transform of the
  cotangent, where autodiff would run two complex FFTs.
  """
  return _real_fft2(x_BxLxD)


real_fft2.defvjp(lambda x_BxLxD: (_real_fft2(x_BxLxD), None),
                 lambda _, grad_BxLxD: (_real_fft2(grad_BxLxD),))

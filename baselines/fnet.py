"""FNet token mixing (Lee-Thorp et al., 2021): Re(FFT2) over length and hidden.

No parameters and no output projection. Like the FNet rows of the PoNet paper,
padding takes part in the transform: FNet does not support a padding mask.
"""

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
    spectrum_BxLxD = jnp.fft.fft2(x_BxLxD.astype(jnp.float32), axes=(1, 2))
    return spectrum_BxLxD.real.astype(x_BxLxD.dtype)

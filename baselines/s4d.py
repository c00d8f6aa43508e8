"""S4D: a bidirectional diagonal state-space layer as a token mixer.

Gu, Gupta, Goel and Re, "On the Parameterization and Initialization of
Diagonal State Space Models", NeurIPS 2022, arXiv 2206.11893. Every channel h
of D is a linear state-space model with N/2 complex diagonal modes, run
forwards and backwards over the sequence as one long convolution:

    dt_h = exp(log_dt_h),  A_hn = -exp(log_a_real_hn) + i a_imag_hn
    K^dir[h, l] = 2 Re sum_n C^dir[h, n] (exp(dt_h A_hn) - 1) / A_hn
                               * exp(dt_h A_hn l)                 (B = 1)
    u = x * m
    y[t] = sum_{s<=t} K^f[t-s] u[s] + sum_{s>t} K^b[s-t-1] u[s] + D_h u[t]
    out = GLU(Linear_{D->2D}(GELU(y)))

Sources (state-spaces/s4@e757cef): the kernel and its initialisation from the
minimal models/s4/s4d.py (S4DKernel L11-47, S4D L62-107: dt, C, S4D-Lin A,
D ~ N(0, 1), GELU then a pointwise Conv1d to 2D and a GLU); the bidirectional
convolution from src/models/sequence/kernels/fftconv.py L59-60, L96-119 (one
C per direction, A and dt shared, the reverse kernel offset by one
"deliberately", an FFT of length 2L so the convolution does not wrap around):
O(D L log L) time. The suite's form differs from the originals in one way:
the input is multiplied by the mask first, so padding content never reaches a
real position (the backward state at a real position sums real inputs only);
the S4 repository convolves over the padding. It has no dropout of its own
(the encoder drops out the mixer's output), and its output layer has the
suite's `nnx.Linear` initialisation (`model.linear_init`; under `pytorch`
the distribution of PyTorch's kernel-1 Conv1d).

Hyperparameters (`config.model.s4d`):
  state_dim: 64, N (N/2 complex modes); the suggested suite setting of the
    mixer specification for the 2-layer, dim-64 models (the S4 LRA configs
    use 4 or 64 with d_model 256).
  dt_min, dt_max: 0.001, 0.1, the range of log-uniform dt (s4d.py L14-20).
  A: S4D-Lin initialisation, A_n = -0.5 + i pi n (s4d.py L26-28; the
    repository's default is S4D-LegS, UNCONFIRMED which the LRA configs use).
  C: complex standard normal, real and imaginary parts N(0, 1/2) each
    (`torch.randn(..., dtype=cfloat)`, s4d.py L22).
  ssm.learning_rate: 0.001 and ssm.weight_decay: 0.0, the optimiser settings
    of log_dt, log_a_real and a_imag (s4d.py `register`, L49-59: weight decay
    0 and the SSM learning rate; the S4 LRA configs set it to 0.001 beside
    a base rate of 0.01, or 0.004 on Pathfinder; under the suite's `ponet`
    preset it is ten times the base 1e-4). The trainer gives this group
    AdamW with that peak learning rate on the same schedule; every other
    parameter follows config.learning_rate and config.weight_decay.
The published S4D numbers (S4D-LegS 60.47 / 86.18 / 89.46 / 88.19 / 93.06,
Path-X 91.95, the Image value UNCONFIRMED; large 6-layer models) are not
comparable with the 2-layer, dim-64 setting.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.errors import UserError


class S4D(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, a bidirectional diagonal SSM."""

  # The input is zeroed at padding before the convolution.
  masks_padding = True
  # Parameters with optimiser settings of their own: group -> attribute
  # names; the settings are config.model.s4d.<group> (see train.py).
  param_groups = {'ssm': ('log_dt', 'log_a_real', 'a_imag')}

  def __init__(self, dim: int, *, rngs: nnx.Rngs, state_dim: int = 64,
               dt_min: float = 0.001, dt_max: float = 0.1,
               dtype=jnp.float32):
    if state_dim < 2 or state_dim % 2:
      raise UserError(f'model.s4d.state_dim must be even and positive, got '
                      f'{state_dim}')
    if not 0 < dt_min <= dt_max:
      raise UserError(f'model.s4d needs 0 < dt_min <= dt_max, got {dt_min} '
                      f'and {dt_max}')
    modes = state_dim // 2
    self.dtype = dtype
    self.log_dt = nnx.Param(jax.random.uniform(
        rngs.params(), (dim,), minval=math.log(dt_min),
        maxval=math.log(dt_max)))
    self.log_a_real = nnx.Param(jnp.full((dim, modes), math.log(0.5)))
    self.a_imag = nnx.Param(jnp.broadcast_to(
        math.pi * jnp.arange(modes, dtype=jnp.float32), (dim, modes)))
    # Forward and backward C, real and imaginary parts last.
    self.c = nnx.Param(math.sqrt(0.5) * jax.random.normal(
        rngs.params(), (2, dim, modes, 2)))
    self.skip = nnx.Param(jax.random.normal(rngs.params(), (dim,)))
    self.output = nnx.Linear(dim, 2 * dim, dtype=dtype, rngs=rngs)

  @classmethod
  def default_config(cls, config):
    del config  # The same in every task.
    return dict(state_dim=64, dt_min=0.001, dt_max=0.1,
                ssm=dict(learning_rate=0.001, weight_decay=0.0))

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.s4d
    return cls(model_config.dim, rngs=rngs, state_dim=own.state_dim,
               dt_min=own.dt_min, dt_max=own.dt_max,
               dtype=jnp.dtype(model_config.dtype))

  def kernels(self, length: int):
    """The forward and backward kernels, 2 x D x L (s4d.py L31-47)."""
    dt_D = jnp.exp(self.log_dt[...])
    a_DxN = -jnp.exp(self.log_a_real[...]) + 1j * self.a_imag[...]
    dta_DxN = a_DxN * dt_D[:, None]
    c_2xDxN = self.c[..., 0] + 1j * self.c[..., 1]
    c_2xDxN = c_2xDxN * (jnp.exp(dta_DxN) - 1) / a_DxN
    vandermonde_DxNxL = jnp.exp(dta_DxN[..., None] * jnp.arange(length))
    return 2 * jnp.einsum('cdn,dnl->cdl', c_2xDxN, vandermonde_DxNxL).real

  def __call__(self, x_BxLxD, mask_BxL):
    length = x_BxLxD.shape[1]
    # XLA's FFT has no bfloat16 kernel; the layer runs in float32.
    u_BxLxD = jnp.where(mask_BxL[:, :, None], x_BxLxD, 0).astype(jnp.float32)
    forward_DxL, backward_DxL = self.kernels(length)
    kernel_Dx2L = jnp.concatenate(
        [forward_DxL, jnp.flip(backward_DxL, axis=-1)], axis=-1)
    spectrum_BxFxD = (jnp.fft.rfft(u_BxLxD, n=2 * length, axis=1)
                      * jnp.fft.rfft(kernel_Dx2L, axis=-1).T[None])
    y_BxLxD = jnp.fft.irfft(spectrum_BxFxD, n=2 * length, axis=1)[:, :length]
    y_BxLxD = y_BxLxD + u_BxLxD * self.skip[...]
    y_BxLxD = jax.nn.gelu(y_BxLxD, approximate=False).astype(self.dtype)
    return jax.nn.glu(self.output(y_BxLxD), axis=-1)

"""Performer attention: FAVOR+ (Choromanski et al., ICLR 2021, 2009.14794).

Softmax attention estimated with positive orthogonal random features, in time
and memory linear in L:

    phi(x) = r^(-1/2) (exp(x W^T - |x|^2 / 2 - stab) + 1e-4),   x = q / sqrt(d)
    out_l = phi(q_l) (sum_n phi(k_n) v_n^T) / (phi(q_l) . sum_n phi(k_n))

W (r x d) holds orthogonal Gaussian rows: blocks of d orthonormal rows (the
transposed Q of the QR of a d x d Gaussian matrix, the last block cut to r
rows), each row rescaled by the norm of an independent N(0, I_d) vector. All
heads of a layer share W.

This is the Performer of the PoNet paper's "Performer (3)" row and of its
speed table (Table 2): the Nystromformer LRA code (mlpen/Nystromformer@5689313,
LRA/code/attention_performer.py L7-23, "performer-256" in lra_config.py),
which calls lucidrains/performer-pytorch v0.15.0 (2649cbd,
performer_pytorch.py `FastAttention` L173-226, `softmax_kernel` L50-75,
`gaussian_orthogonal_random_matrix` L93-128, `linear_attention` L133-138).
As there:
  * q and k are divided by d^(1/4) before the feature map and again inside
    it, so the estimated kernel is exp(q . k / d), not exp(q . k / sqrt(d));
  * keys and values are multiplied by the mask before the feature map, so a
    padding key still adds phi(0) > 0 to the normaliser: the output depends
    on the number of padding positions, though never on their content;
  * the softmax kernel is used (the code's `kernel_type: relu` sets the
    `kernel_fn` of the unused generalised kernel, performer_pytorch.py L174).
The feature map's stabiliser `stab` (it cancels between numerator and
normaliser except for the 1e-4 term) is the maximum of `x W^T`: per query
over features; for keys, `stabilizer='per_example'` takes it over (L, r) per
example and head with no gradient, as performer-pytorch HEAD fc8b784
(L107-113) does, so examples in a batch stay independent; `'batch'` is
v0.15.0's form (L67-73): one maximum over the whole batch for the keys,
gradients through both maxima.

Hyperparameters (`config.model.performer`):
  num_features: 256, the number r of random features ("performer-256").
  redraw: 'fixed' (default), W drawn once at construction from the `mixer`
    RNG stream and kept as non-trainable state (a registered buffer that the
    Nystromformer code never redraws); 'per_step', a fresh W from the `mixer`
    stream at every call (training and evaluation alike).
  stabilizer: 'per_example' (default; a deviation from v0.15.0) or 'batch'.
Heads and projections are the suite's (`model.num_heads`; q, k, v and output
`nnx.Linear` layers with the suite's initialisation, as its Transformer).
The core runs in float32, as the Nystromformer code runs it with autocast off.
Not this form: the LRA JAX Performer (PoNet row "Performer (1)"), which is
the deterministic ReLU kernel except on ListOps (softmax, 2 features) and
ignores the padding mask.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention

from lra_ponet.errors import UserError

REDRAWS = ('fixed', 'per_step')
STABILIZERS = ('per_example', 'batch')
# performer_pytorch softmax_kernel's `eps`, added to every feature.
FEATURE_EPS = 1e-4


class RandomFeatures(nnx.Variable):
  """A frozen random projection: checkpointed with the model, never trained."""


class Performer(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, FAVOR+ softmax attention."""

  # Padding keys and values are zeroed before the feature map, so padding
  # content never reaches real positions (its count does, see above).
  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               num_features: int = 256, redraw: str = 'fixed',
               stabilizer: str = 'per_example', dtype=jnp.float32):
    if redraw not in REDRAWS:
      raise UserError(f'unknown model.performer.redraw {redraw!r}; use one '
                      f'of {", ".join(REDRAWS)}')
    if stabilizer not in STABILIZERS:
      raise UserError(f'unknown model.performer.stabilizer {stabilizer!r}; '
                      f'use one of {", ".join(STABILIZERS)}')
    if num_features < 1:
      raise UserError(f'model.performer.num_features must be positive, got '
                      f'{num_features}')
    self.num_heads = num_heads
    self.num_features = num_features
    self.redraw = redraw
    self.stabilizer = stabilizer
    self.rng = rngs['mixer'].fork()
    if redraw == 'fixed':
      self.features = RandomFeatures(orthogonal_gaussian(
          self.rng(), num_features, dim // num_heads))

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))

  @classmethod
  def default_config(cls, config):
    del config  # The same in every task.
    return dict(num_features=256, redraw='fixed', stabilizer='per_example')

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    own = model_config.performer
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               num_features=own.num_features, redraw=own.redraw,
               stabilizer=own.stabilizer, dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    if self.redraw == 'fixed':
      features_RxK = self.features[...]
    else:
      features_RxK = orthogonal_gaussian(self.rng(), self.num_features,
                                         x_BxLxD.shape[-1] // self.num_heads)
    weight_BxLx1x1 = mask_BxL[:, :, None, None].astype(jnp.float32)

    def heads(layer):
      return attention.split_heads(layer(x_BxLxD),
                                   self.num_heads).astype(jnp.float32)

    query_BxLxHxR = self._feature_map(heads(self.query), features_RxK,
                                      is_query=True)
    key_BxLxHxR = self._feature_map(heads(self.key) * weight_BxLx1x1,
                                    features_RxK, is_query=False)
    mixed_BxLxHxK = attention.linear_attention(
        query_BxLxHxR, key_BxLxHxR, heads(self.value) * weight_BxLx1x1)
    return self.out(attention.merge_heads(mixed_BxLxHxK.astype(x_BxLxD.dtype)))

  def _feature_map(self, x_BxLxHxK, features_RxK, *, is_query):
    """Positive random features of q or k (performer_pytorch softmax_kernel)."""
    # d^(-1/4) in the calling code times d^(-1/4) inside the kernel.
    x_BxLxHxK = x_BxLxHxK / math.sqrt(x_BxLxHxK.shape[-1])
    dash_BxLxHxR = jnp.einsum('blhk,rk->blhr', x_BxLxHxK, features_RxK)
    half_norm_BxLxHx1 = 0.5 * jnp.sum(x_BxLxHxK ** 2, axis=-1, keepdims=True)
    if is_query:
      stab = dash_BxLxHxR.max(axis=-1, keepdims=True)
    elif self.stabilizer == 'per_example':
      stab = dash_BxLxHxR.max(axis=(1, 3), keepdims=True)
    else:
      stab = dash_BxLxHxR.max()
    if self.stabilizer == 'per_example':
      stab = jax.lax.stop_gradient(stab)
    return (jnp.exp(dash_BxLxHxR - half_norm_BxLxHx1 - stab)
            + FEATURE_EPS) / math.sqrt(self.num_features)


def orthogonal_gaussian(key, num_rows: int, dim: int):
  """`num_rows x dim` orthogonal Gaussian rows (performer-pytorch scaling 0)."""
  block_key, norm_key = jax.random.split(key)
  num_blocks = -(-num_rows // dim)
  q_NxKxK, _ = jnp.linalg.qr(
      jax.random.normal(block_key, (num_blocks, dim, dim)))
  rows_RxK = jnp.swapaxes(q_NxKxK, 1, 2).reshape(-1, dim)[:num_rows]
  norms_R = jnp.linalg.norm(jax.random.normal(norm_key, (num_rows, dim)),
                            axis=1)
  return rows_RxK * norms_R[:, None]

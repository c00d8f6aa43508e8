"""Linear Transformer attention (Katharopoulos et al., ICML 2020, 2006.16236).

Softmax attention with the kernel `exp(q . k)` replaced by `phi(q) . phi(k)`,
`phi(x) = elu(x) + 1`, so that the sum over keys is computed once:

    out_l = phi(q_l) (sum_n m_n phi(k_n) v_n^T)
            / (phi(q_l) . sum_n m_n phi(k_n) + eps)

This is the paper's normalised form, computed as the Long Range Arena JAX
code does (google-research/long-range-arena@cd31e5c,
lra_benchmarks/models/linear_transformer/linear_attention.py L20-72: no
1/sqrt(d) scaling, eps = 1e-6 added to the normaliser), with one change:
padding keys are dropped from both sums (m_n above), whereas the LRA code
ignores its padding mask (L137-139). That code, unmasked and in the LRA
per-task settings, produced the LRA paper's "Linear Trans." row (16.13 /
65.90 / 53.09 / 42.34 / 75.30, avg 50.55).

It is not the "Linear (2)" row of the PoNet paper's Table 1, which that paper
takes from the FNet paper, whose "Linear" baseline mixes tokens with learned
dense matrices (UNCONFIRMED: FNet's LRA table was not read). Nor is it the
"linear" attention of the Nystromformer LRA code (mlpen/Nystromformer@5689313,
LRA/code/attention_linear.py L11-18), which has no normaliser and scales
phi(q) and phi(k) by L^(-1/4) each (its `Q.size(2)` is the length, not the
head dimension), so its output grows with the padded length.

Hyperparameters (`config.model.linear_transformer`):
  eps: 1e-6, added to the normaliser (LRA linear_attention.py).
Heads and projections are the suite's (`model.num_heads`; q, k, v and output
`nnx.Linear` layers with the suite's initialisation, as its Transformer).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention


class LinearAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`, time and memory linear in L."""

  # Padding keys and values are zeroed out of both sums.
  masks_padding = True

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               eps: float = 1e-6, dtype=jnp.float32):
    self.num_heads = num_heads
    self.eps = eps

    self.query, self.key, self.value, self.out = (
        attention.attention_projections(dim, rngs=rngs, dtype=dtype))

  @classmethod
  def default_config(cls, config):
    del config  # The same in every task.
    return dict(eps=1e-6)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer is the same.
    return cls(model_config.dim, model_config.num_heads, rngs=rngs,
               eps=model_config.linear_transformer.eps,
               dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    weight_BxLx1x1 = mask_BxL[:, :, None, None].astype(jnp.float32)

    def heads(layer):
      # The sums over L run in float32 even when the model computes in bf16.
      return attention.split_heads(layer(x_BxLxD),
                                   self.num_heads).astype(jnp.float32)

    mixed_BxLxHxK = attention.linear_attention(
        feature_map(heads(self.query)),
        feature_map(heads(self.key)) * weight_BxLx1x1,
        heads(self.value) * weight_BxLx1x1, self.eps)
    return self.out(attention.merge_heads(mixed_BxLxHxK.astype(x_BxLxD.dtype)))


def feature_map(x):
  """`elu(x) + 1`: positive, so the normaliser never vanishes."""
  return jax.nn.elu(x) + 1.0

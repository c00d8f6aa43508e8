"""DeepPyramidion (Pietruszka et al., ACL 2022, arXiv 2009.05169).

A Transformer encoder whose sequence shrinks between layers: each layer runs
softmax attention inside fixed-size chunks (blockwise), then a trainable
top-k pooling keeps a shorter sequence. The pooling scores every token with
a per-layer `Linear(D, 1)`, `s = sigmoid(.) + 1e-5`, and halves the sequence
as many times as needed ("successive halving"): sort by score, pair the j-th
best token with the j-th worst, and replace each pair by its weighted sum
with weights `softmax_pair(base ** s)`. The scorer learns through those
weights; the sort itself carries no gradient.

Source: applicaai/pyramidions (fa9dddc), fairseq/examples/deep_pyramidion/:
successive_halving_topk.py L73-122 (`our_topk`, `get_topk_pair_idx`),
pooler_utils.py L44-51 and L74-81 (scorer, `+ 0.00001`), pyramidion.py
L488-496 (chunk, layer, fold back, pool) and L532-556 (chunking), L620-662
(the schedule).

Hyperparameters (`config.model.pyramidion`):
- `chunk_size = 512`: attention block, capped at the sequence length
  (pyramidion.py `--chunk-size` default, L139; `min(len, chunk_size)`,
  L536);
- `widths = ''`: the number of tokens after each layer, comma-separated,
  one per layer (e.g. `'1000,500,250,125'`; a string, like the code's flag,
  so that the command line can set it). Empty means halve at every layer,
  the code's schedule when `--enc-layers-and-token-width` is empty
  (pyramidion.py L629-640). The flag's default `{0: 2048, 1: 512}` is in
  absolute tokens for its summarisation inputs and fits no LRA length, so it
  is not the default here. A width must be the input length halved (rounding
  up) zero or more times;
- `base = 20` (pooler_utils.py L40; `--topk-softmax-base` default);
- `flip_right = True`, `sort_back = False` (pyramidion.py L114, L118).

Reconstructed or changed for this encoder-only classifier:
- padding: the repository passes no padding mask to its layers (L494).
  Here attention masks padding keys; padding gets score 1e-5, sorts below
  every real token (stable sort, ties by position) and takes no weight in a
  pair with a real token (its `base ** s` is masked out of the pair softmax;
  a pair of two padding rows stays padding). A pooled token is real iff its
  pair holds one, so pad content never reaches real tokens (`masks_padding`)
  and the shortened mask keeps the real tokens first;
- an odd length gains one padding row before a halving (the code assumes
  even lengths); a length that is not a multiple of the chunk is padded (the
  code's `unfold` would drop the remainder);
- with `model.pooling = 'cls'` the first (CLS) token stays out of the
  pooling and in front; widths count the other tokens; the last layer then
  has no pooling (only CLS is read after it, so its scorer would never
  train); with `mean` or `first` pooling the last layer pools too, as in the
  official code;
- `sort_back` restores the positional order of the kept top tokens, applied
  as the code does, to the pooled embeddings and scores.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lra_ponet.baselines import attention
from lra_ponet.baselines import transformer
from lra_ponet.errors import UserError

# sigmoid(.) + 1e-5 (pooler_utils.py L80); also the code's padding score.
SCORE_EPSILON = 1e-5
# Masks padding out of a pair's softmax over base ** s (at most base).
PAIR_MASK_LOGIT = -1e9


class PyramidionAttention(nnx.Module):
  """`mixer(x_BxLxD, mask_BxL) -> BxLxD`: attention within chunks.

  Its class builds the pooling run after each block (`pool_from_config`).
  """

  masks_padding = True

  def __init__(self, attention: transformer.SelfAttention, chunk_size: int):
    if chunk_size < 1:
      raise UserError(f'model.pyramidion.chunk_size must be positive, got '
                      f'{chunk_size}')
    self.attention = attention
    self.chunk_size = chunk_size

  @classmethod
  def default_config(cls, config):
    del config  # The same for every task; widths default to halving.
    return dict(chunk_size=512, widths='', base=20, flip_right=True,
                sort_back=False)

  @classmethod
  def from_config(cls, model_config, *, rngs, layer_index=0):
    del layer_index  # Every layer's attention is the same.
    # fairseq's MultiheadAttention: q, k, v and out with biases, D wide.
    attention = transformer.SelfAttention(
        model_config.dim, model_config.num_heads, rngs=rngs,
        attention_dropout=model_config.attention_dropout,
        dtype=jnp.dtype(model_config.dtype))
    return cls(attention, model_config.pyramidion.chunk_size)

  @classmethod
  def pool_from_config(cls, model_config, *, rngs, layer_index):
    own = model_config.pyramidion
    widths = _parse_widths(own.widths, model_config.num_layers)
    keeps_first = model_config.pooling == 'cls'
    if keeps_first and layer_index == model_config.num_layers - 1:
      return None  # The classifier reads the CLS token alone.
    return TopKPool(model_config.dim, rngs=rngs,
                    width=widths[layer_index] if widths else None,
                    keeps_first=keeps_first,
                    base=own.base, flip_right=own.flip_right,
                    sort_back=own.sort_back,
                    dtype=jnp.dtype(model_config.dtype))

  def __call__(self, x_BxLxD, mask_BxL):
    batch, length, dim = x_BxLxD.shape
    chunk = min(self.chunk_size, length)
    # The chunks of every example, as one batch of short sequences.
    x_BNxCxD = attention.blocks(x_BxLxD, chunk).reshape(-1, chunk, dim)
    mask_BNxC = attention.blocks(mask_BxL, chunk).reshape(-1, chunk)
    mixed_BNxCxD = self.attention(x_BNxCxD, mask_BNxC)
    return mixed_BNxCxD.reshape(batch, -1, dim)[:, :length]


def _parse_widths(text: str, num_layers: int) -> list[int]:
  try:
    widths = [int(width) for width in text.split(',')] if text else []
  except ValueError:
    widths = [0]
  if widths and (len(widths) != num_layers or min(widths) < 1):
    raise UserError(f'model.pyramidion.widths={text!r}: give one positive '
                    f'width per layer ({num_layers}), comma-separated, or '
                    "'' to halve at every layer")
  return widths


def halvings(length: int, width: int | None) -> int:
  """How many halvings (rounding up) take `length` tokens to `width`."""
  if width is None:
    return int(length > 1)
  rounds = 0
  while length > width:
    length, rounds = -(-length // 2), rounds + 1
  if length != width:
    raise UserError(f'model.pyramidion.widths: {width} tokens cannot be '
                    f'reached by halving {length * 2 ** rounds} (rounding '
                    'up); choose widths that halve the previous width')
  return rounds


class TopKPool(nnx.Module):
  """`(x_BxLxD, mask_BxL) -> (x_BxWxD, mask_BxW)`, successive halving."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs, width: int | None,
               keeps_first: bool, base: float = 20, flip_right: bool = True,
               sort_back: bool = False, dtype=jnp.float32):
    self.scorer = nnx.Linear(dim, 1, dtype=dtype, rngs=rngs)
    self.width = width
    self.keeps_first = keeps_first
    self.halve = functools.partial(_successive_halving, base=base,
                                   flip_right=flip_right, sort_back=sort_back)

  def __call__(self, x_BxLxD, mask_BxL):
    if self.keeps_first:
      pooled_BxWxD, pooled_BxW = self._pool(x_BxLxD[:, 1:], mask_BxL[:, 1:])
      return (jnp.concatenate([x_BxLxD[:, :1], pooled_BxWxD], axis=1),
              jnp.concatenate([mask_BxL[:, :1], pooled_BxW], axis=1))
    return self._pool(x_BxLxD, mask_BxL)

  def _pool(self, x_BxLxD, mask_BxL):
    rounds = halvings(x_BxLxD.shape[1], self.width)
    if not rounds:  # The code skips the scorer too (pooler_utils.py L70).
      return x_BxLxD, mask_BxL
    logits_BxL = self.scorer(x_BxLxD)[..., 0].astype(jnp.float32)
    score_BxL = jax.nn.sigmoid(logits_BxL) + SCORE_EPSILON
    # Zeros, not whatever a masked attention left there (never NaN * 0).
    x_BxLxD = jnp.where(mask_BxL[..., None], x_BxLxD, 0)
    return jax.vmap(functools.partial(self.halve, rounds=rounds))(
        x_BxLxD, score_BxL, mask_BxL)


def _successive_halving(x_LxD, score_L, mask_L, *, rounds, base, flip_right,
                        sort_back):
  """One example: `rounds` times pair best with worst and merge the pairs."""
  for _ in range(rounds):
    if x_LxD.shape[0] % 2:
      x_LxD = jnp.pad(x_LxD, ((0, 1), (0, 0)))
      score_L = jnp.pad(score_L, (0, 1), constant_values=SCORE_EPSILON)
      mask_L = jnp.pad(mask_L, (0, 1))
    score_L = jnp.where(mask_L, score_L, SCORE_EPSILON)
    # Descending score, padding last, ties by position.
    order_L = jnp.argsort(-jnp.where(mask_L, score_L, -1.0), stable=True)
    half = order_L.shape[0] // 2
    top_H, rest_H = order_L[:half], order_L[half:]
    pairs_2xH = jnp.stack([top_H, rest_H[::-1] if flip_right else rest_H])
    pair_score_2xH, pair_mask_2xH = score_L[pairs_2xH], mask_L[pairs_2xH]
    weight_2xH = jax.nn.softmax(
        jnp.where(pair_mask_2xH, base ** pair_score_2xH, PAIR_MASK_LOGIT),
        axis=0)
    score_L = (weight_2xH * pair_score_2xH).sum(axis=0)
    x_LxD = jnp.einsum('ph,phd->hd', weight_2xH.astype(x_LxD.dtype),
                       x_LxD[pairs_2xH])
    mask_L = pair_mask_2xH.any(axis=0)
    if sort_back:
      back_H = jnp.argsort(top_H)
      x_LxD, score_L, mask_L = x_LxD[back_H], score_L[back_H], mask_L[back_H]
  return x_LxD, mask_L

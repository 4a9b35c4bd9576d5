"""Solution: the whole Arcee forward from the functions of the other exercises."""

import numpy as np

from .ex1_embeddings_rmsnorm import embed, rms_norm
from .ex2_rope_yarn import rope_inv_freq, rope_tables
from .ex3_attention import causal_padding_mask
from .ex4_mlp_layer import decoder_layer


def arcee_forward(params, config, input_ids, cache=None):
    """Embeddings, every decoder layer, the final norm and the (tied) LM head; returns named tensors."""
    batch, length = input_ids.shape
    past = 0 if cache is None else cache.get_seq_length()
    out = {}
    h = out["embed"] = embed(input_ids, params["embed_tokens.weight"])
    positions = np.arange(past, past + length)[None, :]                          # [1, T]
    cos, sin = rope_tables(positions, rope_inv_freq(config.head_dim, config.rope_theta))
    mask = causal_padding_mask(np.ones((batch, past + length), dtype=np.int64), length, h.dtype) if length > 1 else None
    for i in range(config.num_hidden_layers):
        prefix = f"layers.{i}."
        weights = {name[len(prefix):]: w for name, w in params.items() if name.startswith(prefix)}
        h = out[prefix + "out"] = decoder_layer(h, weights, cos, sin, mask, config, cache=cache, layer=i)["out"]
    h = out["final_norm"] = rms_norm(h, params["norm.weight"], config.rms_norm_eps)
    out["logits"] = h @ params.get("lm_head.weight", params["embed_tokens.weight"]).T   # tied: the embedding matrix
    return out

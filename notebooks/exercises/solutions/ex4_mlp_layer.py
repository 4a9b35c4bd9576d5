"""Solutions: the ReLU² MLP and one decoder layer."""

import numpy as np

from .ex1_embeddings_rmsnorm import rms_norm
from .ex2_rope_yarn import apply_rope
from .ex3_attention import attention


def relu2(x):
    """relu(x) ** 2."""
    r = np.maximum(x, 0)
    return r * r


def mlp(x, up_weight, down_weight):
    """down(relu2(up x)); weights [out, in]: up [I, D], down [D, I]."""
    return relu2(x @ up_weight.T) @ down_weight.T


def decoder_layer(h, weights, cos, sin, mask, config, cache=None, layer=0):
    """h + attention(norm(h)), then + mlp(norm(.)); returns every step under its trace name."""
    batch, length, _ = h.shape
    hd, eps = config.head_dim, config.rms_norm_eps
    out = {}
    x = out["input_norm"] = rms_norm(h, weights["input_layernorm.weight"], eps)

    def heads(name, count):  # [B, T, count*hd] -> [B, count, T, hd]
        y = x @ weights[f"self_attn.{name}.weight"].T
        return y.reshape(batch, length, count, hd).transpose(0, 2, 1, 3)

    q = out["attn.q"] = heads("q_proj", config.num_attention_heads)
    k = out["attn.k"] = heads("k_proj", config.num_key_value_heads)
    v = out["attn.v"] = heads("v_proj", config.num_key_value_heads)
    q = out["attn.q_rope"] = apply_rope(q, cos, sin)
    k = out["attn.k_rope"] = apply_rope(k, cos, sin)
    if cache is not None:
        k, v = cache.update(k, v, layer)                 # the past positions and this step's
    context, out["attn.probs"] = attention(q, k, v, mask)
    out["attn.context"] = context
    out["attn.out"] = context @ weights["self_attn.o_proj.weight"].T
    h = out["attn_residual"] = h + out["attn.out"]
    x = out["post_norm"] = rms_norm(h, weights["post_attention_layernorm.weight"], eps)
    out["mlp.out"] = mlp(x, weights["mlp.up_proj.weight"], weights["mlp.down_proj.weight"])
    out["out"] = h + out["mlp.out"]
    return out

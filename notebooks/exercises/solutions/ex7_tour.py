"""Solutions: counting the parameters of a config, and layer 0's queries from the weights by their names."""

import numpy as np


def count_parameters(config):
    """Every number the model holds: the embedding, per layer two norms, q/k/v/o and the up/down MLP (biases when
    the config asks for them), the final norm, and the LM head when it is not tied to the embedding."""
    D, inter, V = config.hidden_size, config.intermediate_size, config.vocab_size
    q_dim = config.num_attention_heads * config.head_dim          # H * hd: not always D
    kv_dim = config.num_key_value_heads * config.head_dim         # KV * hd: grouped-query attention
    attention = D * q_dim + 2 * D * kv_dim + q_dim * D
    if config.attention_bias:
        attention += q_dim + 2 * kv_dim + D
    mlp = 2 * D * inter + ((inter + D) if config.mlp_bias else 0)         # up [I, D] and down [D, I]; no gate
    per_layer = attention + mlp + 2 * D                           # + input and post-attention norms
    head = 0 if config.tie_word_embeddings else V * D
    return V * D + config.num_hidden_layers * per_layer + D + head


def rms_norm(x, weight, eps):
    x32 = x.astype(np.float32)
    return weight * (x32 / np.sqrt(np.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def first_layer_queries(state_dict, config, input_ids):
    """Layer 0's queries before RoPE: embed, input_layernorm, q_proj, split into heads. Returns [B, H, T, hd]."""
    batch, length = input_ids.shape
    h = state_dict["model.embed_tokens.weight"][input_ids]                                    # [B, T, D]
    x = rms_norm(h, state_dict["model.layers.0.input_layernorm.weight"], config.rms_norm_eps)
    q = x @ state_dict["model.layers.0.self_attn.q_proj.weight"].T                             # [B, T, H*hd]
    return q.reshape(batch, length, config.num_attention_heads, config.head_dim).transpose(0, 2, 1, 3)

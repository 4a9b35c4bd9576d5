"""Solutions: the bytes of the KV cache, and the FLOPs of a forward step."""


def kv_cache_bytes(config, batch, tokens, bytes_per_value):
    """A key and a value vector per KV head, per layer, per token of each sequence: 2 L KV hd B T bytes_per_value."""
    return (2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * batch * tokens
            * bytes_per_value)


def forward_flops(config, tokens, past):
    """The FLOPs of the matrix products of one forward of `tokens` new tokens after `past` cached ones, batch 1:
    2 per multiply-add. Per layer: q, k, v, o and the up/down MLP (2 T in out each), and attention's two products
    over all S = past + tokens keys (2 H T S hd each); then the LM head (2 T D V)."""
    D, inter, V = config.hidden_size, config.intermediate_size, config.vocab_size
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    T, S = tokens, past + tokens
    projections = 2 * T * D * (H * hd + 2 * KV * hd) + 2 * T * H * hd * D + 2 * 2 * T * D * inter
    attention = 2 * 2 * H * T * S * hd
    return config.num_hidden_layers * (projections + attention) + 2 * T * D * V

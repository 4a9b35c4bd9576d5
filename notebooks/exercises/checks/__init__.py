"""The checks of the exercises: your code against arcee_np, on the shipped Shakespeare model.

Each ``check_*`` takes the function(s) an exercise asks for, runs them on the shipped model's own weights and
activations (or on inputs built to expose a mistake), and compares the results with arcee_np's through
``arcee_np.oracle``: where your tensors line up with arcee_np's trace names (docs/trace.md) the verdict is the
trace comparison's own report, the first diverging tensor and its likely cause; everywhere it names what was
expected, where yours differs, the classic mistake your numbers match (when they do) and a hint.

One module per exercise notebook (``checks.ex1_embeddings_rmsnorm``, ...), the shipped model and its traces in
``checks.shipped``, the exercise list and the loader in ``checks.registry``; everything is re-exported here, so a
notebook writes ``from checks import check_rms_norm, model``. Solutions: ``solutions/``.
"""

from checking import HERE, Verdict

from .ex1_embeddings_rmsnorm import check_embed, check_rms_norm
from .ex2_rope_yarn import check_apply_rope, check_rope_tables, check_yarn, yarn_reference
from .ex3_attention import WatchedCache, check_attention, check_kv_cache, check_mask, tiny_reference
from .ex4_mlp_layer import check_decoder_layer, check_mlp
from .ex5_sampling_loss import FixedDraws, check_loss, check_sampling, next_token_scores
from .ex6_your_arcee import check_forward, generate_text, greedy
from .ex7_tour import AFM, check_count_parameters, check_first_layer_queries
from .ex8_golden_testing import check_close, check_first_divergence
from .ex9_online_softmax import check_online_attention, eager
from .ex10_backward import (
                            check_attention_backward,
                            check_mlp_backward,
                            check_optimizer,
                            check_rms_norm_backward,
                            check_train_step,
                            gradient_trace,
                            model64,
                            weight_gradients,
)
from .ex11_q8_0 import check_dequantize_q8_0, check_quantize_q8_0, probe_blocks
from .ex12_bpe import check_bpe, ranks, shipped_bpe, words
from .ex13_inference_cost import cache_bytes_measured, check_forward_flops, check_kv_cache_bytes, measured_flops
from .ex14_long_context import check_linear_inv_freq, check_ntk_theta
from .ex15_decoding import check_beam_step, check_min_p, check_speculative_accept
from .registry import EXERCISES, NOTEBOOKS, REFERENCE, run_exercise, your_code, yours_or_reference
from .shipped import (
                            PADDED,
                            TEXT,
                            describe_ids,
                            layer_weights,
                            model,
                            padded_reference,
                            reference,
                            shapes,
                            softmax,
                            token_words,
                            tokenizer,
                            weights,
)

__all__ = [
    "AFM", "cache_bytes_measured", "check_attention_backward", "check_bpe", "check_close", "check_count_parameters",
    "check_dequantize_q8_0", "check_first_divergence", "check_first_layer_queries", "check_forward_flops",
    "check_beam_step", "check_min_p", "check_speculative_accept",
    "check_kv_cache_bytes", "check_linear_inv_freq", "check_mlp_backward", "check_ntk_theta", "check_online_attention",
    "check_optimizer", "check_quantize_q8_0", "check_rms_norm_backward", "check_train_step", "eager",
    "gradient_trace", "measured_flops", "model64", "probe_blocks", "ranks", "shipped_bpe", "weight_gradients", "words",
    "EXERCISES", "HERE", "NOTEBOOKS", "PADDED", "REFERENCE", "TEXT", "FixedDraws", "Verdict", "WatchedCache",
    "check_apply_rope", "check_attention", "check_decoder_layer", "check_embed", "check_forward",
    "check_kv_cache", "check_loss", "check_mask", "check_mlp", "check_rms_norm", "check_rope_tables",
    "check_sampling", "check_yarn", "describe_ids", "generate_text", "greedy", "layer_weights", "model",
    "next_token_scores", "padded_reference", "reference", "run_exercise", "shapes", "softmax", "token_words",
    "tiny_reference", "tokenizer", "weights", "your_code", "yarn_reference", "yours_or_reference",
]

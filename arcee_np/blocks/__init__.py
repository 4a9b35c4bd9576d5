"""The blocks of the Arcee decoder: plain functions over arrays, one concept a file.

Each takes its array namespace from its inputs (``xp = array_namespace(...)``) and calls only the
array-API standard, so the same code runs on NumPy, CuPy and array_api_strict.
"""

from .activations import ACTIVATIONS, erf, gelu, gelu_pytorch_tanh, relu, relu2, silu
from .attention import attention, attention_output, attention_probs, attention_scores, repeat_kv, softmax
from .embedding import embed
from .heads import keep_positions, last_non_pad_index, lm_head, pool_positions, split_start_end
from .linear import linear
from .losses import (IGNORE_INDEX, bce_with_logits, causal_lm_loss, cross_entropy, log_softmax, mse_loss,
                     question_answering_loss, sequence_classification_loss, token_classification_loss)
from .mask import additive, allowed, causal_padding_mask, packed_causal_mask, packed_segments
from .mlp import mlp
from .precision import matmul, product_dtype
from .rms_norm import rms_norm
from .rope import (apply_rope, default_inv_freq, linear_inv_freq, rope_cos_sin, rope_frequencies, rotate_half,
                   yarn_attention_factor, yarn_correction_range, yarn_inv_freq, yarn_mscale)
from .tiled_attention import tile_sizes, tiled_attention

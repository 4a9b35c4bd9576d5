"""The blocks of the Arcee decoder: plain functions over arrays, one concept a file.

Each takes its array namespace from its inputs (``xp = array_namespace(...)``) and calls only the
array-API standard, so the same code runs on NumPy, CuPy and array_api_strict.
"""

from .activations import (ACTIVATION_BACKWARDS, ACTIVATIONS, erf, gelu, gelu_backward, gelu_pytorch_tanh,
                          gelu_pytorch_tanh_backward, relu, relu2, relu2_backward, relu_backward, silu, silu_backward)
from .attention import (attention, attention_backward, attention_output, attention_probs, attention_scores,
                        eager_attention, repeat_kv, softmax)
from .embedding import embed, embed_backward
from .heads import (keep_positions, keep_positions_backward, last_non_pad_index, lm_head, lm_head_backward,
                    pool_positions, pool_positions_backward, split_start_end, split_start_end_backward)
from .linear import linear, linear_backward, linear_stacked
from .losses import (IGNORE_INDEX, bce_with_logits, bce_with_logits_backward, causal_lm_loss, causal_lm_loss_backward,
                     cross_entropy, cross_entropy_backward, log_softmax, mse_loss, mse_loss_backward,
                     question_answering_loss, question_answering_loss_backward, sequence_classification_loss,
                     sequence_classification_loss_backward, token_classification_loss,
                     token_classification_loss_backward)
from .mask import StepMask, additive, allowed, causal_padding_mask, packed_causal_mask, packed_segments, step_mask
from .mlp import mlp, mlp_backward
from .precision import matmul, product_dtype, reduction_dtype
from .rms_norm import rms_norm, rms_norm_backward
from .rope import (ROPE_TYPES, apply_rope, apply_rope_backward, default_inv_freq, linear_inv_freq, rope_cos_sin,
                   rope_frequencies, rope_tables, rotate_half, step_positions, yarn_attention_factor,
                   yarn_correction_range, yarn_inv_freq, yarn_mscale)
from .stacked import row_stack_of, stack_rows
from .stored import StoredMatrix, is_stored
from .tiled_attention import tile_sizes, tiled_attention

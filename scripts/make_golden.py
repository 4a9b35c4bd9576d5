"""Write the golden fixtures under ``tests/golden/`` with HuggingFace transformers.

How to run (from the repository root)::

    pip install -e ".[golden]"        # torch + transformers, pinned (torch 2.13.0 CPU, transformers 5.24.0)
    python scripts/make_golden.py     # deletes and rewrites tests/golden/

The plain test run (``tests/test_golden.py``) reads these files and needs neither torch nor
transformers. Re-running the script with the pinned versions reproduces the same numbers (fixed seeds,
one torch thread); commit the result together with ``tests/golden/meta.json``, which records the
versions used.

Every case is a tiny random ``ArceeForCausalLM`` (vocab 80, hidden 32, 2 layers, ...) whose weights are
re-drawn by ``tests/torch_reference.perturb_`` (normal with standard deviation 0.15 for matrices; RMSNorm
weights 1 plus a normal of standard deviation 0.25; biases standard deviation 0.2): random init would set norms
to 1 and biases to 0 and hide bugs. The checkpoint is
written with ``save_pretrained`` and the expectations are computed from the model *re-loaded from that
folder* (``from_pretrained(..., dtype=..., attn_implementation="eager")``, ``.eval()``), i.e. from exactly
what the tests load.

Layout::

    tests/golden/meta.json                    versions, generator, list of cases
    tests/golden/<case>/config.json           written by save_pretrained (hand-edited to v4 spelling for
                                              yarn_legacy_type)
    tests/golden/<case>/model.safetensors     or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tests/golden/<case>/case.json             description, dtype, call kwargs, compare, tolerance,
                                              expectations (file -> tolerance), steps (kv_cache)
    tests/golden/<case>/inputs.safetensors    input_ids, attention_mask, position_ids, labels, inputs_embeds
    tests/golden/<case>/expected.safetensors  logits, loss, hidden_states.{i}, attentions.{i},
                                              past_key_values.{layer}.keys / .values, steps.{k}.logits, ...
    tests/golden/<case>/expected_lifted.safetensors   (float64 cases) transformers float64 with its float32
                                              casts lifted (tests/torch_reference.lifted_float32_casts)
    tests/golden/blocks/*.safetensors + *.json    per-block fixtures: RoPE, RMSNorm, one decoder layer

Gradients (``python scripts/make_golden.py --gradients`` rewrites only ``tests/golden_gradients/``): for the
checkpoints of the cases above and of the task heads in ``tests/golden_heads/`` (written by
``scripts/make_golden_heads.py``; rerun this step after either script), the loss's ``.backward()`` in
transformers (``eval()``; train mode with dropout 0 gives the same gradients, which the script asserts):
``tests/golden_gradients/<case>/case.json`` (source checkpoint folder, class, call, tolerances),
``inputs.safetensors`` (the inputs, with the labels or positions of the loss) and per dtype
``gradients_float32.safetensors`` (transformers float32) / ``gradients_float64.safetensors`` (the checkpoint
loaded in float64, transformers with its float32 casts lifted): ``loss`` plus every parameter's gradient
under its state-dict name (``model.layers.0.mlp.up_proj.weight`` ...; a tied embedding once); and
``optimizer.safetensors`` / ``optimizer.json``: torch's AdamW after clip_grad_norm_ with transformers' schedules.

``case.json["compare"]``: ``"all"`` compares every element; ``"mask"`` compares only valid rows, i.e. for
``[B, T, ...]`` tensors (logits, hidden_states) and ``attentions`` ``[B, H, T, S]`` the query rows t with
``attention_mask[b, t] == 1`` (the last T columns of the mask), and for cache tensors ``[B, KV, S, hd]``
the positions s with ``attention_mask[b, s] == 1``. Padded rows are implementation-defined (design.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

import transformers
from transformers import (ArceeConfig, ArceeForCausalLM, ArceeForQuestionAnswering, ArceeForSequenceClassification,
                          ArceeForTokenClassification)
from transformers.models.arcee.modeling_arcee import ArceeDecoderLayer, ArceeRMSNorm, ArceeRotaryEmbedding

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from torch_reference import (  # noqa: E402
    cache_of,
    flatten_outputs,
    lifted_float32_casts,
    lifted_inv_freq,
    perturb_,
)

GOLDEN = REPO / "tests" / "golden"
GOLDEN_HEADS = REPO / "tests" / "golden_heads"
GRADIENTS = REPO / "tests" / "golden_gradients"

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                "bfloat16": torch.bfloat16}

TOL_FLOAT32 = 1e-4
TOL_FLOAT64_PLAIN = 1e-6
TOL_FLOAT64_LIFTED = 1e-9
TOL_FLOAT16 = 1e-2
# bfloat16 on these tiny layers: transformers and arcee_np both multiply in float32 and round once, and sum
# the products in the same order, so they agree bit for bit; one bfloat16 ulp (2**-7 relative) is allowed
# so that a different BLAS summation order (a 1-ulp flip) does not fail, while a misplaced rounding does.
TOL_BFLOAT16 = [1e-3, 2.0**-7]
# gradients: |ours - transformers| <= atol + rtol * |transformers| elementwise (docs/numerics.md gives the
# measured gaps)
TOL_GRAD_FLOAT32 = (1e-5, 1e-4)
TOL_GRAD_FLOAT64_LIFTED = (1e-10, 0.0)

BASE_CONFIG = dict(
    vocab_size=80,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="relu2",
    max_position_embeddings=64,
    initializer_range=0.15,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    use_cache=True,
)


# --------------------------------------------------------------------------------------------------
# helpers


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def make_config(**overrides) -> ArceeConfig:
    kwargs = dict(BASE_CONFIG)
    kwargs.update(overrides)
    return ArceeConfig(**kwargs)


def build_and_save(name: str, config: ArceeConfig, out_dir: Path, build_dtype=torch.float32,
                   save_dtype=None, **save_kwargs) -> None:
    """Build a perturbed random model, cast it to ``save_dtype`` and ``save_pretrained`` it."""
    torch.manual_seed(seed_of(name))
    gen = torch.Generator().manual_seed(seed_of(name))
    model = ArceeForCausalLM(config).to(build_dtype)
    perturb_(model, gen)
    model.eval()
    if save_dtype is not None:
        model = model.to(save_dtype)
    model.save_pretrained(out_dir, **save_kwargs)


def load(out_dir: Path, dtype: torch.dtype) -> ArceeForCausalLM:
    model = ArceeForCausalLM.from_pretrained(out_dir, dtype=dtype, attn_implementation="eager")
    model.eval()
    assert model.config._attn_implementation == "eager"
    for p in model.parameters():
        assert p.dtype == dtype, (p.dtype, dtype)
    return model


def tensor_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if v is not None}


@torch.no_grad()
def run(model, inputs: dict, call: dict) -> dict:
    out = model(**tensor_inputs(inputs), **call)
    return {k: v.detach().clone() for k, v in flatten_outputs(out).items()}


def save_tensors(path: Path, tensors: dict) -> None:
    """Write tensors as safetensors; bfloat16 ones widened (exactly) to float32, which NumPy reads."""
    tensors = {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().contiguous().clone()
               for k, v in tensors.items() if v is not None}
    save_file(tensors, str(path))


def random_ids(gen, shape, vocab):
    return torch.randint(3, vocab, shape, generator=gen, dtype=torch.int64)


def right_mask(lengths, T):
    return torch.tensor([[1] * n + [0] * (T - n) for n in lengths], dtype=torch.int64)


def left_mask(lengths, T):
    return torch.tensor([[0] * (T - n) + [1] * n for n in lengths], dtype=torch.int64)


def positions_from_mask(mask):
    """What ``generate`` does in transformers 5.x: cumsum(mask) - 1, clipped at 0 for pads."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def max_abs(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def write_case(name: str, *, description: str, dtype: str, call: dict, compare: str, inputs: dict,
               expectations: dict, extra: dict | None = None) -> None:
    """``expectations``: {file name: (tolerance, reference description, {tensor name: tensor})}."""
    d = GOLDEN / name
    save_tensors(d / "inputs.safetensors", tensor_inputs(inputs))
    exp_meta = {}
    for fname, (tol, ref, tensors) in expectations.items():
        save_tensors(d / fname, tensors)
        exp_meta[fname] = {"tolerance": tol, "reference": ref, "tensors": sorted(tensors)}
    first = next(iter(expectations.values()))
    case = {
        "description": description,
        "dtype": dtype,
        "call": call,
        "compare": compare,
        "tolerance": first[0],
        "inputs": sorted(tensor_inputs(inputs)),
        "expectations": exp_meta,
    }
    if extra:
        case.update(extra)
    (d / "case.json").write_text(json.dumps(case, indent=2, sort_keys=False) + "\n")


def standard_case(name: str, description: str, config: ArceeConfig, inputs_fn, *, call: dict,
                  compare: str = "all", dtype: str = "float32", tol: float = TOL_FLOAT32,
                  save_dtype=None, save_kwargs=None, extra=None, post_save=None):
    """Build, save, reload, run once; write the case folder. Returns (model, inputs, expected)."""
    d = GOLDEN / name
    build_and_save(name, config, d, build_dtype=TORCH_DTYPES[dtype] if dtype == "float64" else torch.float32,
                   save_dtype=save_dtype, **(save_kwargs or {}))
    if post_save is not None:
        post_save(d)
    model = load(d, TORCH_DTYPES[dtype])
    gen = torch.Generator().manual_seed(seed_of(name) + 1)
    inputs = inputs_fn(gen, model.config)
    expected = run(model, inputs, call)
    ref = f"transformers {transformers.__version__} {dtype} eager"
    write_case(name, description=description, dtype=dtype, call=call, compare=compare, inputs=inputs,
               expectations={"expected.safetensors": (tol, ref, expected)}, extra=extra)
    return model, inputs, expected


def plain_inputs(B, T):
    def fn(gen, cfg):
        return {"input_ids": random_ids(gen, (B, T), cfg.vocab_size)}
    return fn


# --------------------------------------------------------------------------------------------------
# cases

CASES: list[str] = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def c_mha():
    standard_case("mha", "multi-head attention: 4 heads, 4 kv heads, head_dim 8; default use_cache "
                  "(config.use_cache=True) so the cache is returned", make_config(num_key_value_heads=4),
                  plain_inputs(2, 7), call={})


@case
def c_gqa():
    standard_case("gqa", "grouped-query attention: 4 heads, 2 kv heads (n_rep 2); hidden states requested",
                  make_config(num_key_value_heads=2), plain_inputs(2, 7), call={"output_hidden_states": True})


@case
def c_mqa():
    standard_case("mqa", "multi-query attention: 4 heads, 1 kv head", make_config(num_key_value_heads=1),
                  plain_inputs(2, 6), call={"use_cache": True})


@case
def c_head_dim_differs():
    standard_case("head_dim_differs", "explicit head_dim 12 != hidden_size / heads (8): q_proj is [48, 32], "
                  "o_proj [32, 48]", make_config(head_dim=12), plain_inputs(2, 6), call={"use_cache": True})


@case
def c_biases():
    standard_case("biases", "attention_bias and mlp_bias True (q/k/v/o and up/down biases, random)",
                  make_config(attention_bias=True, mlp_bias=True), plain_inputs(2, 6),
                  call={"use_cache": True, "output_hidden_states": True})


@case
def c_tied():
    name = "tied_embeddings"
    standard_case(name, "tie_word_embeddings True: the checkpoint has no lm_head.weight; lm_head is "
                  "model.embed_tokens.weight", make_config(tie_word_embeddings=True), plain_inputs(2, 6),
                  call={"use_cache": False})


@case
def c_rope_theta():
    standard_case("rope_theta", "default RoPE with rope_theta 500000", make_config(
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), plain_inputs(2, 8),
        call={"use_cache": False})


@case
def c_rope_linear():
    standard_case("rope_linear", "linear RoPE scaling (position interpolation), factor 4: inv_freq = "
                  "theta**(-2j/hd) / 4, attention scaling 1; T 40 (positions past the 16 a factor-4 model "
                  "would have been trained on)", make_config(
                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
                  plain_inputs(2, 40), call={"use_cache": False})


YARN_EXPLICIT = {"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0, "original_max_position_embeddings": 16,
                 "attention_factor": 1.15, "beta_fast": 1.0, "beta_slow": 0.125}


@case
def c_yarn_explicit():
    # head_dim 16 (8 frequency pairs); with theta 100, orig 16, beta_fast 1, beta_slow 0.125 the
    # correction range is low = floor(1.62) = 1, high = ceil(5.24) = 6: pair 0 kept, 1..6 ramped, 7 scaled.
    standard_case("yarn_explicit", "YaRN with explicit factor 4, attention_factor 1.15, beta_fast 1, beta_slow "
                  "0.125, theta 100, original_max_position_embeddings 16, max_position_embeddings 64; head_dim 16; "
                  "T 40 > 16", make_config(num_attention_heads=2, num_key_value_heads=1,
                                           rope_parameters=dict(YARN_EXPLICIT)),
                  plain_inputs(2, 40), call={"use_cache": False})


@case
def c_yarn_defaults():
    standard_case("yarn_defaults", "YaRN with only factor 3 and original_max_position_embeddings 16 "
                  "(max_position_embeddings 64, so max_pos/orig = 4 != 3): transformers 5.x uses the explicit "
                  "factor 3; attention_factor = 0.1 ln 3 + 1; betas 32/1; head_dim 16; T 40",
                  make_config(num_attention_heads=2, num_key_value_heads=1,
                              rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 3.0,
                                               "original_max_position_embeddings": 16}),
                  plain_inputs(2, 40), call={"use_cache": False},
                  extra={"note": "factor 3 wins over max_position_embeddings/original = 4 (transformers >= 4.56)"})


@case
def c_yarn_legacy_type():
    name = "yarn_legacy_type"

    def to_v4_spelling(d: Path):
        cfg = json.loads((d / "config.json").read_text())
        rp = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rp["rope_theta"]
        cfg["rope_scaling"] = {"type": "yarn", "factor": rp["factor"],
                               "original_max_position_embeddings": rp["original_max_position_embeddings"]}
        cfg["transformers_version"] = "4.53.0"
        (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    model, _, _ = standard_case(
        name, "v4-style config.json: top-level rope_theta 20000 and rope_scaling {type: yarn, factor 2.5, "
        "original_max_position_embeddings 16} (no rope_parameters, no rope_type); expectations from transformers "
        "5.24 loading that file; head_dim 16; T 40",
        make_config(num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=48,
                    rope_parameters={"rope_type": "yarn", "rope_theta": 20000.0, "factor": 2.5,
                                     "original_max_position_embeddings": 16}),
        plain_inputs(2, 40), call={"use_cache": False}, post_save=to_v4_spelling)
    rp = model.config.rope_parameters
    assert rp["rope_type"] == "yarn" and rp["rope_theta"] == 20000.0 and rp["factor"] == 2.5, rp
    assert model.model.rotary_emb.rope_type == "yarn"


@case
def c_right_padding():
    def fn(gen, cfg):
        T = 8
        return {"input_ids": random_ids(gen, (3, T), cfg.vocab_size), "attention_mask": right_mask([8, 5, 3], T)}
    standard_case("right_padding", "right padding (lengths 8, 5, 3), no position_ids; compare valid rows only",
                  make_config(), fn, call={"use_cache": False, "output_hidden_states": True}, compare="mask")


@case
def c_left_padding():
    def fn(gen, cfg):
        T = 8
        mask = left_mask([8, 5, 3], T)
        return {"input_ids": random_ids(gen, (3, T), cfg.vocab_size), "attention_mask": mask,
                "position_ids": positions_from_mask(mask)}
    standard_case("left_padding", "left padding (lengths 8, 5, 3) with position_ids = clip(cumsum(mask) - 1, 0) "
                  "as generate builds them; default use_cache (cache returned); compare valid rows only",
                  make_config(), fn, call={"output_hidden_states": True}, compare="mask")


@case
def c_left_padding_no_position_ids():
    def fn(gen, cfg):
        T = 8
        return {"input_ids": random_ids(gen, (3, T), cfg.vocab_size), "attention_mask": left_mask([8, 5, 3], T)}
    standard_case("left_padding_no_position_ids", "left padding (lengths 8, 5, 3) without position_ids: "
                  "positions are arange(T) for every row (pads shift the valid tokens' positions); compare "
                  "valid rows only", make_config(), fn, call={"use_cache": False}, compare="mask")


@case
def c_kv_cache():
    name = "kv_cache"
    d = GOLDEN / name
    config = make_config()
    build_and_save(name, config, d)
    model = load(d, torch.float32)
    gen = torch.Generator().manual_seed(seed_of(name) + 1)
    B, P, n_steps = 2, 5, 3
    all_ids = random_ids(gen, (B, P + n_steps), config.vocab_size)
    full_mask = torch.cat([left_mask([3, 5], P), torch.ones(B, n_steps, dtype=torch.int64)], dim=1)
    full_pos = positions_from_mask(full_mask)
    inputs, expected, steps = {}, {}, []
    cache = None
    with torch.no_grad():
        for k in range(n_steps + 1):
            lo, hi = (0, P) if k == 0 else (P + k - 1, P + k)
            step_in = {"input_ids": all_ids[:, lo:hi], "attention_mask": full_mask[:, :hi],
                       "position_ids": full_pos[:, lo:hi]}
            out = model(**step_in, cache=cache, use_cache=True)
            cache = cache_of(out)
            for key, v in step_in.items():
                inputs[f"steps.{k}.{key}"] = v
            expected[f"steps.{k}.logits"] = out.logits.clone()
            steps.append({"inputs": {key: f"steps.{k}.{key}" for key in step_in},
                          "call": {"use_cache": True, "past_key_values": "previous step's cache" if k else None},
                          "expected": {"logits": f"steps.{k}.logits"}})
        flat = flatten_outputs(out)
        for key, v in flat.items():
            if key.startswith("past_key_values."):
                expected[key] = v.clone()
        full = model(input_ids=all_ids, attention_mask=full_mask, position_ids=full_pos, use_cache=False)
        expected["full.logits"] = full.logits.clone()
    # sanity: decode == full forward on valid rows
    for k in range(1, n_steps + 1):
        err = max_abs(expected[f"steps.{k}.logits"][:, 0], full.logits[:, P + k - 1])
        assert err < 1e-5, err
    inputs["full.input_ids"], inputs["full.attention_mask"], inputs["full.position_ids"] = all_ids, full_mask, full_pos
    write_case(name, description="KV cache: batch 2 with left padding (prefill lengths 3 and 5 in a window of 5), "
               "prefill 5 tokens, then 3 single-token decode steps; attention_mask grows by one column each step "
               "and position_ids = clip(cumsum(mask) - 1, 0) as generate builds them. steps.{k}.logits per step, "
               "past_key_values.* = the cache after the last step ([B, KV, 8, hd], keys after RoPE), full.logits = "
               "one uncached forward over all 8 tokens (full.* inputs)", dtype="float32",
               call={"use_cache": True}, compare="mask", inputs=inputs,
               expectations={"expected.safetensors": (TOL_FLOAT32, f"transformers {transformers.__version__} "
                                                      "float32 eager, DynamicCache", expected)},
               extra={"steps": steps, "full": {"inputs": {k: f"full.{k}" for k in ("input_ids", "attention_mask",
                                                                                      "position_ids")},
                                               "call": {"use_cache": False}, "expected": {"logits": "full.logits"}}})


@case
def c_labels():
    def fn(gen, cfg):
        ids = random_ids(gen, (2, 8), cfg.vocab_size)
        labels = ids.clone()
        labels[0, :2] = -100
        labels[1, 5] = -100
        labels[1, 7] = -100
        return {"input_ids": ids, "labels": labels}
    standard_case("labels", "causal-LM loss: labels = input_ids with some -100 (ignored); mean over the "
                  "non-ignored shifted labels", make_config(), fn, call={"use_cache": False})


@case
def c_hidden_and_attentions():
    name = "hidden_and_attentions"
    model, inputs, expected = standard_case(
        name, "output_hidden_states and output_attentions: hidden_states has L+1 entries (the last after the final "
        "norm, equal to last_hidden_state), attentions [B, H, T, T] post-softmax; last_hidden_state from "
        "ArceeModel (model.model)", make_config(), plain_inputs(2, 6),
        call={"use_cache": False, "output_hidden_states": True, "output_attentions": True})
    with torch.no_grad():
        base = model.model(**tensor_inputs(inputs), use_cache=False)
    assert torch.equal(base.last_hidden_state, expected[f"hidden_states.{model.config.num_hidden_layers}"])


@case
def c_logits_to_keep_1():
    standard_case("logits_to_keep_1", "logits_to_keep=1: logits [B, 1, V] for the last position",
                  make_config(), plain_inputs(2, 6), call={"use_cache": False, "logits_to_keep": 1})


@case
def c_logits_to_keep_3():
    standard_case("logits_to_keep_3", "logits_to_keep=3: logits [B, 3, V] for the last 3 positions",
                  make_config(), plain_inputs(2, 6), call={"use_cache": False, "logits_to_keep": 3})


@case
def c_inputs_embeds():
    def fn(gen, cfg):
        return {"inputs_embeds": torch.randn((2, 6, cfg.hidden_size), generator=gen, dtype=torch.float32)}
    standard_case("inputs_embeds", "inputs_embeds [2, 6, 32] (random, float32) instead of input_ids; "
                  "hidden_states.0 is inputs_embeds", make_config(), fn,
                  call={"use_cache": False, "output_hidden_states": True})


@case
def c_position_ids_gaps():
    def fn(gen, cfg):
        pos = torch.tensor([[0, 1, 2, 5, 6, 9], [3, 4, 5, 6, 7, 8]], dtype=torch.int64)
        return {"input_ids": random_ids(gen, (2, 6), cfg.vocab_size), "position_ids": pos}
    standard_case("position_ids_gaps", "explicit position_ids with gaps ([0,1,2,5,6,9] and [3..8]), no mask, "
                  "default use_cache (a cache is created, so no packed-sequence detection): plain causal mask "
                  "over indices, RoPE from position_ids", make_config(), fn, call={})


@case
def c_packed_sequences():
    name = "packed_sequences"

    def fn(gen, cfg):
        return {"input_ids": random_ids(gen, (1, 7), cfg.vocab_size),
                "position_ids": torch.tensor([[0, 1, 2, 3, 0, 1, 2]], dtype=torch.int64)}

    d = GOLDEN / name
    model, inputs, expected = standard_case(
        name, "packed sequences: use_cache=False, no attention_mask, position_ids [0,1,2,3,0,1,2]. transformers "
        "5.x detects packing from position_ids and builds a block-diagonal causal mask, so tokens 4..6 equal a "
        "standalone run of those 3 tokens (see case.json transformers_block_diagonal)", make_config(), fn,
        call={"use_cache": False, "output_attentions": True})
    with torch.no_grad():
        alone = model(input_ids=inputs["input_ids"][:, 4:], use_cache=False).logits
    block_diag = max_abs(alone, expected["logits"][:, 4:]) < 1e-5
    attn0 = expected["attentions.0"]
    cross = attn0[0, :, 4:, :4].abs().max().item()
    case_json = json.loads((d / "case.json").read_text())
    case_json["transformers_block_diagonal"] = bool(block_diag and cross == 0.0)
    (d / "case.json").write_text(json.dumps(case_json, indent=2) + "\n")
    print(f"  packed_sequences: block diagonal = {case_json['transformers_block_diagonal']}")


def _act_case(act):
    def c():
        standard_case(f"act_{act}", f"hidden_act {act!r} instead of relu2 (MLP = down(act(up(x))))",
                      make_config(hidden_act=act), plain_inputs(2, 6), call={"use_cache": False})
    c.__name__ = f"c_act_{act}"
    return c


for _act in ("gelu", "silu", "relu", "gelu_pytorch_tanh"):
    case(_act_case(_act))


def float64_case(name, description, config, inputs_fn, call, compare, lifted_only=False, save_dtype=None):
    d = GOLDEN / name
    build_and_save(name, config, d, build_dtype=torch.float64, save_dtype=save_dtype)
    gen = torch.Generator().manual_seed(seed_of(name) + 1)
    model = load(d, torch.float64)
    inputs = inputs_fn(gen, model.config)
    plain = run(model, inputs, call)
    with lifted_float32_casts():
        model_l = load(d, torch.float64)
        lifted = run(model_l, inputs, call)
    v = transformers.__version__
    lifted_exp = (TOL_FLOAT64_LIFTED, f"transformers {v} float64 eager with its float32 casts lifted (RMSNorm, "
                  "RoPE inv_freq/angles/cos/sin, softmax, causal-LM loss): tests/torch_reference.lifted_float32_casts",
                  lifted)
    assert not any(torch.isnan(t).any() for t in lifted.values())
    if lifted_only:
        assert any(torch.isnan(t).any() for t in plain.values())  # the transformers quirk described
        expectations = {"expected_lifted.safetensors": lifted_exp}
    else:
        # the lift must have changed something, but only at float32-rounding level
        diff = max(max_abs(plain[k], lifted[k]) for k in plain)
        assert 0.0 < diff < 1e-4, diff
        print(f"  {name}: max |plain - lifted| = {diff:.3g}")
        expectations = {"expected.safetensors": (TOL_FLOAT64_PLAIN, f"plain transformers {v} float64 eager (rounds "
                                                 "through float32 in RMSNorm, RoPE tables, softmax, loss)", plain),
                        "expected_lifted.safetensors": lifted_exp}
    write_case(name, description=description, dtype="float64", call=call, compare=compare, inputs=inputs,
               expectations=expectations)


@case
def c_float64():
    def fn(gen, cfg):
        T = 7
        ids = random_ids(gen, (2, T), cfg.vocab_size)
        labels = ids.clone()
        labels[1, 4:] = -100  # the pads
        labels[0, 2] = -100
        return {"input_ids": ids, "attention_mask": right_mask([7, 4], T), "labels": labels}
    float64_case("float64", "whole model in float64 (float64 weights in the checkpoint), GQA, right padding, "
                 "labels, hidden states, attentions and cache; two expectations: plain float64 transformers (1e-6) "
                 "and float64 with the float32 casts lifted (1e-9). Right, not left, padding: see "
                 "float64_left_padding for why", make_config(), fn,
                 call={"use_cache": True, "output_hidden_states": True, "output_attentions": True}, compare="mask")


@case
def c_float64_left_padding():
    def fn(gen, cfg):
        T = 7
        mask = left_mask([7, 4], T)
        return {"input_ids": random_ids(gen, (2, T), cfg.vocab_size), "attention_mask": mask,
                "position_ids": positions_from_mask(mask)}
    float64_case("float64_left_padding", "float64 with left padding and position_ids. Only the lifted expectation "
                 "is stored: plain transformers float64 eager returns NaN for the whole left-padded batch row "
                 "(its fully masked pad query rows hold finfo(float64).min, which softmax(dtype=float32) turns into "
                 "-inf everywhere -> NaN, and 0 * NaN then poisons the valid rows through P @ V in the next layer)",
                 make_config(), fn, call={"use_cache": True, "output_hidden_states": True, "output_attentions": True},
                 compare="mask", lifted_only=True)


@case
def c_float64_yarn():
    def fn(gen, cfg):
        ids = random_ids(gen, (1, 40), cfg.vocab_size)
        return {"input_ids": ids, "labels": ids.clone()}
    float64_case("float64_yarn", "float64 with YaRN (the yarn_explicit rope settings, head_dim 16, biases), T 40, "
                 "labels; plain (1e-6) and lifted (1e-9) expectations",
                 make_config(num_attention_heads=2, num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                             rope_parameters=dict(YARN_EXPLICIT)), fn,
                 call={"use_cache": False, "output_hidden_states": True}, compare="all")


@case
def c_bf16_checkpoint():
    standard_case("bf16_checkpoint", "weights saved as bfloat16; expectations computed in float32 from the "
                  "bf16-rounded weights upcast (from_pretrained(dtype=float32))", make_config(),
                  plain_inputs(2, 6), call={"use_cache": False}, save_dtype=torch.bfloat16)
    from safetensors import safe_open
    with safe_open(str(GOLDEN / "bf16_checkpoint" / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())


@case
def c_sharded():
    name = "sharded"
    standard_case(name, "checkpoint sharded by save_pretrained(max_shard_size='20KB'): several "
                  "model-0000i-of-0000n.safetensors files + model.safetensors.index.json", make_config(),
                  plain_inputs(2, 6), call={"use_cache": False}, save_kwargs={"max_shard_size": "20KB"})
    shards = sorted(p.name for p in (GOLDEN / name).glob("model-*.safetensors"))
    assert len(shards) >= 2 and (GOLDEN / name / "model.safetensors.index.json").exists(), shards


@case
def c_float16():
    def fn(gen, cfg):
        T = 6
        return {"input_ids": random_ids(gen, (2, T), cfg.vocab_size), "attention_mask": right_mask([6, 4], T)}
    standard_case("float16", "weights saved float16, transformers run in float16 on the CPU (RMSNorm and softmax "
                  "in float32 inside, RoPE tables float32 then cast); loose tolerance; compare valid rows",
                  make_config(), fn, call={"use_cache": False, "output_hidden_states": True},
                  dtype="float16", tol=TOL_FLOAT16, compare="mask", save_dtype=torch.float16)


@case
def c_bfloat16():
    def fn(gen, cfg):
        T = 7
        return {"input_ids": random_ids(gen, (2, T), cfg.vocab_size), "attention_mask": right_mask([7, 5], T)}
    standard_case("bfloat16", "weights saved bfloat16, transformers run in bfloat16 on the CPU (products in float32 "
                  "rounded once, RMSNorm and softmax in float32 inside, RoPE tables float32 then cast, every "
                  "elementwise step rounded to bfloat16); GQA, right padding, hidden states and the cache; compare "
                  "valid rows", make_config(), fn, call={"use_cache": True, "output_hidden_states": True},
                  dtype="bfloat16", tol=TOL_BFLOAT16, compare="mask", save_dtype=torch.bfloat16)


@case
def c_bfloat16_from_float32():
    standard_case("bfloat16_from_float32", "weights saved float32, loaded with dtype=bfloat16 (rounded once at "
                  "load), with q/k/v/o and MLP biases, YaRN with explicit parameters and tied embeddings",
                  make_config(attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                              rope_parameters=dict(YARN_EXPLICIT)),
                  plain_inputs(2, 9), call={"use_cache": False}, dtype="bfloat16", tol=TOL_BFLOAT16)


@case
def c_float16_from_bfloat16():
    standard_case("float16_from_bfloat16", "weights saved bfloat16, loaded with dtype=float16 (rounded once at load: "
                  "bfloat16 values below float16's normal range lose bits), MQA", make_config(num_key_value_heads=1),
                  plain_inputs(2, 8), call={"use_cache": False, "output_hidden_states": True}, dtype="float16",
                  tol=TOL_FLOAT16, save_dtype=torch.bfloat16)


@case
def c_float16_checkpoint():
    standard_case("float16_checkpoint", "weights saved float16, loaded with dtype=float32 (widened exactly)",
                  make_config(), plain_inputs(2, 6), call={"use_cache": False, "output_hidden_states": True},
                  save_dtype=torch.float16)


@case
def c_float64_from_bfloat16():
    def fn(gen, cfg):
        return {"input_ids": random_ids(gen, (2, 8), cfg.vocab_size)}
    float64_case("float64_from_bfloat16", "weights saved bfloat16, golden mode (dtype=float64: widened exactly); "
                 "plain (1e-6) and lifted (1e-9) expectations", make_config(), fn,
                 call={"use_cache": False, "output_hidden_states": True}, compare="all", save_dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------------
# per-block fixtures


def rope_blocks():
    out_dir = GOLDEN / "blocks"
    specs = {
        "default_hd8": dict(hidden_size=32, num_attention_heads=4, head_dim=8, max_position_embeddings=64,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        "default_hd128": dict(hidden_size=2560, num_attention_heads=20, head_dim=128, max_position_embeddings=4096,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        "linear_hd32": dict(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=1024,
                            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
        "yarn_afm": dict(hidden_size=2560, num_attention_heads=20, head_dim=128, max_position_embeddings=65536,
                         rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 20.0,
                                          "original_max_position_embeddings": 4096}),
        "yarn_explicit": dict(hidden_size=32, num_attention_heads=2, head_dim=16, max_position_embeddings=64,
                              rope_parameters=dict(YARN_EXPLICIT)),
        "yarn_mscale": dict(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=256,
                            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                             "original_max_position_embeddings": 32, "mscale": 0.707,
                                             "mscale_all_dim": 1.3}),
        "yarn_no_truncate": dict(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=256,
                                 rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                                  "original_max_position_embeddings": 32, "truncate": False}),
    }
    positions = {
        "default_hd8": [0, 1, 2, 3, 7, 31, 63],
        "default_hd128": [0, 1, 5, 100, 1000, 4095],
        "linear_hd32": [0, 1, 4, 255, 256, 1023],
        "yarn_afm": [0, 1, 7, 100, 4095, 4096, 4097, 10000, 40000, 65535],
        "yarn_explicit": [0, 1, 5, 15, 16, 17, 39, 63],
        "yarn_mscale": [0, 1, 31, 32, 100, 255],
        "yarn_no_truncate": [0, 1, 31, 32, 100, 255],
    }
    tensors, meta = {}, {}
    for name, spec in specs.items():
        cfg = make_config(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()})
        rot = ArceeRotaryEmbedding(cfg)
        pos = torch.tensor([positions[name]], dtype=torch.int64)
        x = torch.zeros(1, dtype=torch.float32)
        cos, sin = rot(x, pos)
        tensors[f"{name}.inv_freq"] = rot.inv_freq
        tensors[f"{name}.position_ids"] = pos
        tensors[f"{name}.cos"] = cos
        tensors[f"{name}.sin"] = sin
        inv64, scale64 = lifted_inv_freq(cfg, rot.rope_type)
        assert scale64 == rot.attention_scaling
        assert torch.allclose(inv64.float(), rot.inv_freq, rtol=1e-6, atol=0), name
        ang = pos[..., None].double() * inv64
        emb = torch.cat((ang, ang), dim=-1)
        tensors[f"{name}.lifted.inv_freq"] = inv64
        tensors[f"{name}.lifted.cos"] = emb.cos() * rot.attention_scaling
        tensors[f"{name}.lifted.sin"] = emb.sin() * rot.attention_scaling
        rp = dict(cfg.rope_parameters)
        meta[name] = {
            "config": {"head_dim": spec["head_dim"], "hidden_size": spec["hidden_size"],
                       "num_attention_heads": spec["num_attention_heads"],
                       "max_position_embeddings": spec["max_position_embeddings"], "rope_parameters": rp},
            "rope_type": rot.rope_type,
            "attention_scaling": rot.attention_scaling,
            "dtype": "float32",
            "tolerance": {"inv_freq": 0.0, "cos_sin": 1e-6, "lifted": 1e-12},
            "tensors": {"inv_freq": "[hd/2] float32, transformers' buffer",
                        "position_ids": "[1, P] int64", "cos": "[1, P, hd] float32", "sin": "[1, P, hd] float32",
                        "lifted.*": "float64: the same formula computed in float64 (torch_reference.lifted_inv_freq)"},
        }
    save_tensors(out_dir / "rope.safetensors", tensors)
    (out_dir / "rope.json").write_text(json.dumps({
        "description": "RoPE tables from transformers' ArceeRotaryEmbedding(config): inv_freq (float32 buffer), "
                       "attention_scaling, and cos/sin = rotary_emb(x_float32, position_ids). inv_freq may differ "
                       "from a NumPy float32 pow by 1 ulp for hd 128 (docs/numerics.md), hence the tolerances.",
        "cases": meta}, indent=2) + "\n")


def rms_norm_blocks():
    out_dir = GOLDEN / "blocks"
    gen = torch.Generator().manual_seed(seed_of("rms_norm"))
    D = 32
    x32 = 3.0 * torch.randn((2, 5, D), generator=gen) + 0.5
    w32 = 1.0 + 0.25 * torch.randn((D,), generator=gen)
    eps = 1e-5
    tensors, meta = {}, {}

    def norm(x, w, e):
        m = ArceeRMSNorm(D, eps=e)
        with torch.no_grad():
            m.weight = torch.nn.Parameter(w.clone())
            return m(x)

    tensors["f32.input"], tensors["f32.weight"] = x32, w32
    tensors["f32.output"] = norm(x32, w32, eps)
    meta["f32"] = {"eps": eps, "input": "float32", "weight": "float32", "output": "float32", "tolerance": 1e-6}

    x16, w16 = x32.half(), w32.half()
    tensors["f16.input"], tensors["f16.weight"] = x16, w16
    tensors["f16.output"] = norm(x16, w16, eps)
    meta["f16"] = {"eps": eps, "input": "float16", "weight": "float16", "output": "float16",
                   "tolerance": 1e-3, "note": "normalised in float32, cast to float16, then times the float16 weight"}

    tensors["f16_f32w.input"], tensors["f16_f32w.weight"] = x16, w32
    tensors["f16_f32w.output"] = norm(x16, w32, eps)
    assert tensors["f16_f32w.output"].dtype == torch.float32
    meta["f16_f32w"] = {"eps": eps, "input": "float16", "weight": "float32", "output": "float32",
                        "tolerance": 1e-6, "note": "normalised in float32, cast to float16 (rounding!), then "
                                                   "times the float32 weight, result promoted to float32"}

    x64 = x32.double() * (1 + 1e-9)
    w64 = w32.double() + 1e-10
    eps64 = 1e-6
    tensors["f64.input"], tensors["f64.weight"] = x64, w64
    with lifted_float32_casts():
        tensors["f64_lifted.output"] = norm(x64, w64, eps64)
    tensors["f64.output"] = norm(x64, w64, eps64)
    meta["f64"] = {"eps": eps64, "input": "float64", "weight": "float64", "output": "float64",
                   "tolerance": {"f64.output (plain transformers, rounds through float32)": 1e-6,
                                 "f64_lifted.output (lifted)": 1e-12}}
    save_tensors(out_dir / "rms_norm.safetensors", tensors)
    (out_dir / "rms_norm.json").write_text(json.dumps({
        "description": "transformers ArceeRMSNorm: out = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(input dtype)",
        "cases": meta}, indent=2) + "\n")


@torch.no_grad()
def decoder_layer_block():
    out_dir = GOLDEN / "blocks"
    name = "decoder_layer"
    config = make_config(attention_bias=True, mlp_bias=True, attn_implementation="eager")
    config._attn_implementation = "eager"
    torch.manual_seed(seed_of(name))
    gen = torch.Generator().manual_seed(seed_of(name))
    layer = ArceeDecoderLayer(config, layer_idx=0)
    perturb_(layer, gen)
    layer.eval()
    rot = ArceeRotaryEmbedding(config)
    B, T, D = 2, 6, config.hidden_size
    h = torch.randn((B, T, D), generator=gen)
    mask2d = left_mask([6, 4], T)
    pos = positions_from_mask(mask2d)
    cos, sin = rot(h, pos)
    # eager additive mask [B, 1, T, T]: 0 where k <= q and mask2d[b, k] == 1, else finfo(float32).min
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & mask2d[:, None, :].bool()
    mask4d = torch.zeros(B, 1, T, T).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)

    captured = {}
    hooks = [
        layer.input_layernorm.register_forward_hook(lambda m, i, o: captured.__setitem__("input_layernorm.output", o)),
        layer.self_attn.register_forward_hook(lambda m, i, o: captured.update(
            {"self_attn.output": o[0], "self_attn.attn_weights": o[1]})),
        layer.post_attention_layernorm.register_forward_hook(
            lambda m, i, o: captured.__setitem__("post_attention_layernorm.output", o)),
        layer.mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("mlp.output", o)),
    ]
    out = layer(h, attention_mask=mask4d, position_ids=pos, position_embeddings=(cos, sin))
    for hk in hooks:
        hk.remove()
    # cross-check against the module-level mask builder
    from transformers.masking_utils import create_causal_mask
    hf_mask = create_causal_mask(config=config, inputs_embeds=h, attention_mask=mask2d, cache=None, position_ids=pos)
    assert torch.equal(hf_mask, mask4d), "hand-built eager mask differs from create_causal_mask"

    tensors = {f"weights.{k}": v for k, v in layer.state_dict().items()}
    tensors.update({"hidden_states": h, "attention_mask": mask2d, "causal_mask": mask4d, "position_ids": pos,
                    "cos": cos, "sin": sin, "output": out})
    tensors.update(captured)
    save_tensors(out_dir / "decoder_layer.safetensors", tensors)
    cfg = {k: v for k, v in config.to_dict().items() if k in BASE_CONFIG or k in ("head_dim", "rope_parameters")}
    (out_dir / "decoder_layer.json").write_text(json.dumps({
        "description": "one ArceeDecoderLayer (layer_idx 0) called directly: out = layer(hidden_states, "
                       "attention_mask=causal_mask, position_embeddings=(cos, sin)); cos/sin from "
                       "ArceeRotaryEmbedding(config)(hidden_states, position_ids). weights.* are the layer's "
                       "state dict (names relative to model.layers.0.). Intermediates: input_layernorm.output, "
                       "self_attn.output (after o_proj), self_attn.attn_weights [B, H, T, T], "
                       "post_attention_layernorm.output, mlp.output. Batch row 1 is left-padded (2 pads): compare "
                       "rows where attention_mask == 1",
        "config": cfg, "dtype": "float32", "compare": "mask", "tolerance": 1e-5}, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------
# gradients

HEAD_CLASSES = {"ArceeForCausalLM": ArceeForCausalLM, "ArceeForSequenceClassification": ArceeForSequenceClassification,
                "ArceeForQuestionAnswering": ArceeForQuestionAnswering,
                "ArceeForTokenClassification": ArceeForTokenClassification}


def transformers_gradients(folder: Path, cls_name: str, dtype: str, inputs: dict, call: dict,
                           train_mode: bool = False) -> dict:
    """``loss`` and every parameter's ``.grad`` (state-dict names; zeros where autograd left None) after
    ``loss.backward()``: transformers in ``dtype`` (float64 with its float32 casts lifted), eager, eval()."""
    lifted = dtype == "float64"
    with lifted_float32_casts() if lifted else contextlib.nullcontext():
        model = HEAD_CLASSES[cls_name].from_pretrained(folder, dtype=TORCH_DTYPES[dtype], attn_implementation="eager")
        model.train() if train_mode else model.eval()
        if train_mode:
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        out = model(**tensor_inputs(inputs), **call)
        out.loss.backward()
    grads = {"loss": out.loss.detach().clone()}
    for name, p in model.named_parameters():  # a tied embedding is listed once, as model.embed_tokens.weight
        grads[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return grads


# float32 cases whose checkpoints are also differentiated in float64 (lifted): every feature once, the rest
# of the float32 cases differ only in inputs or file layout
FLOAT64_GRADIENT_CASES = ("act_gelu", "act_gelu_pytorch_tanh", "act_relu", "act_silu", "biases", "head_dim_differs",
                          "inputs_embeds", "left_padding", "mqa", "packed_sequences", "tied_embeddings",
                          "yarn_defaults", "yarn_explicit")


def gradient_sources() -> list[dict]:
    """The configurations that get gradient fixtures: every golden case (but float16) and every task head."""
    sources = []
    for name in json.loads((GOLDEN / "meta.json").read_text())["cases"]:
        case_json = json.loads((GOLDEN / name / "case.json").read_text())
        if case_json["dtype"] == "float16":
            continue  # float16 gradients would test NumPy's float16 matrix products, not the backward
        raw = {k: v.clone() for k, v in _load_tensors(GOLDEN / name / "inputs.safetensors").items()}
        if "full" in case_json:  # kv_cache: the uncached forward over all tokens
            raw = {k: raw[f"full.{k}"] for k in case_json["full"]["inputs"]}
        inputs = {k: raw[k] for k in ("input_ids", "inputs_embeds", "attention_mask", "position_ids", "labels")
                  if k in raw}
        if "labels" not in inputs:
            inputs["labels"] = _default_labels(name, inputs)
        call = {"use_cache": case_json["call"].get("use_cache", True)} if "full" not in case_json else {
            "use_cache": False}
        dtypes = ["float64"] if case_json["dtype"] == "float64" else ["float32"] + (
            ["float64"] if name in FLOAT64_GRADIENT_CASES else [])
        sources.append({"name": name, "source": f"golden/{name}", "class": "ArceeForCausalLM", "inputs": inputs,
                        "call": call, "dtypes": dtypes, "description": case_json["description"]})
    for name in json.loads((GOLDEN_HEADS / "meta.json").read_text())["cases"]:
        folder = GOLDEN_HEADS / name
        if not (folder / "case.json").exists():
            continue
        case_json = json.loads((folder / "case.json").read_text())
        if case_json.get("kind") != "head":
            continue
        inputs = {k: v.clone() for k, v in _load_tensors(folder / "inputs.safetensors").items()}
        sources.append({"name": f"heads_{name}", "source": f"golden_heads/{name}", "class": case_json["class"],
                        "inputs": inputs, "call": case_json["call"], "dtypes": ["float32", "float64"],
                        "description": case_json["description"]})
    return sources


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _default_labels(name: str, inputs: dict) -> torch.Tensor:
    """input_ids as labels with padding ignored (-100); random ids when the case feeds inputs_embeds."""
    if "input_ids" in inputs:
        labels = inputs["input_ids"].clone()
    else:
        batch, length = inputs["inputs_embeds"].shape[:2]
        generator = torch.Generator().manual_seed(seed_of(name) + 2)
        labels = random_ids(generator, (batch, length), BASE_CONFIG["vocab_size"])
    if "attention_mask" in inputs:
        labels[inputs["attention_mask"] == 0] = -100
    return labels


OPTIMIZER_RUNS = {  # name: (dtype, AdamW arguments, clip max_norm, schedule, schedule arguments)
    "float64_cosine": ("float64", dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), 1.0, "cosine", {}),
    "float64_linear": ("float64", dict(lr=1e-2, betas=(0.8, 0.999), eps=1e-6, weight_decay=0.0), 0.5, "linear", {}),
    "float64_min_lr": ("float64", dict(lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), 100.0,
                       "cosine_min_lr",
                       {"min_lr_rate": 0.1}),
    "float64_beta1_0": ("float64", dict(lr=1e-2, betas=(0.0, 0.99), eps=1e-8, weight_decay=0.1), 1.0, "cosine", {}),
    "float32_cosine": ("float32", dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), 1.0, "cosine", {}),
}
OPTIMIZER_SHAPES = {"w": (6, 5), "e": (4, 3), "b": (5,)}  # "b" is in a group without weight decay
OPTIMIZER_STEPS, OPTIMIZER_WARMUP = 8, 3


def optimizer_fixtures() -> None:
    """torch.optim.AdamW (two groups: "b" without decay) after clip_grad_norm_, with a transformers schedule,
    over 8 steps of seeded gradients: tests/golden_gradients/optimizer.safetensors + optimizer.json."""
    from transformers import (get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    schedules = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup,
                 "cosine_min_lr": get_cosine_with_min_lr_schedule_with_warmup}
    tensors, runs = {}, {}
    for name, (dtype, adamw, max_norm, schedule, extra) in OPTIMIZER_RUNS.items():
        gen = torch.Generator().manual_seed(seed_of(name))
        params = {k: torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64).to(TORCH_DTYPES[dtype]))
                  for k, shape in OPTIMIZER_SHAPES.items()}
        for k, p in params.items():
            tensors[f"{name}.start.{k}"] = p.detach().clone()
        optimizer = torch.optim.AdamW([{"params": [params["w"], params["e"]]},
                                       {"params": [params["b"]], "weight_decay": 0.0}], **adamw)
        scheduler = schedules[schedule](optimizer, OPTIMIZER_WARMUP, OPTIMIZER_STEPS, **extra)
        lrs, norms = [], []
        for step in range(OPTIMIZER_STEPS):
            for k, p in params.items():
                p.grad = (3 * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype)
                tensors[f"{name}.step{step}.grad.{k}"] = p.grad.clone()
            norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm).item())
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            for k, p in params.items():
                tensors[f"{name}.step{step}.param.{k}"] = p.detach().clone()
        runs[name] = {"dtype": dtype, "adamw": adamw, "max_norm": max_norm, "schedule": schedule,
                      "schedule_arguments": extra, "warmup": OPTIMIZER_WARMUP, "steps": OPTIMIZER_STEPS,
                      "no_decay": ["b"], "lr": lrs, "clip_norm": norms,
                      "tolerance": 1e-12 if dtype == "float64" else 1e-6}
    save_tensors(GRADIENTS / "optimizer.safetensors", tensors)
    (GRADIENTS / "optimizer.json").write_text(json.dumps({
        "description": f"torch {torch.__version__} AdamW after torch.nn.utils.clip_grad_norm_, learning rates from "
                       f"transformers {transformers.__version__} schedules (LambdaLR): <run>.start.<name>, per step "
                       "<run>.step<k>.grad.<name> (before clipping) and <run>.step<k>.param.<name> (after the step); "
                       "lr and clip_norm per step below", "runs": runs}, indent=2) + "\n")


def gradient_fixtures() -> list[str]:
    if GRADIENTS.exists():
        shutil.rmtree(GRADIENTS)
    GRADIENTS.mkdir(parents=True)
    v = transformers.__version__
    names = []
    for src in gradient_sources():
        folder = REPO / "tests" / src["source"]
        out = GRADIENTS / src["name"]
        out.mkdir()
        save_tensors(out / "inputs.safetensors", src["inputs"])
        expectations = {}
        for dtype in src["dtypes"]:
            inputs = {k: (t.to(TORCH_DTYPES[dtype]) if t.is_floating_point() else t)
                      for k, t in src["inputs"].items()}
            grads = transformers_gradients(folder, src["class"], dtype, inputs, src["call"])
            assert all(torch.isfinite(g).all() for g in grads.values()), src["name"]
            if dtype == "float32" and src["class"] == "ArceeForCausalLM" and src["name"] == "labels":
                trained = transformers_gradients(folder, src["class"], dtype, inputs, src["call"], train_mode=True)
                assert all(torch.equal(trained[k], grads[k]) for k in grads), "train() and eval() gradients differ"
            file = f"gradients_{dtype}.safetensors"
            save_tensors(out / file, grads)
            tol = TOL_GRAD_FLOAT32 if dtype == "float32" else TOL_GRAD_FLOAT64_LIFTED
            reference = (f"transformers {v} float32 eager, loss.backward()" if dtype == "float32" else
                         f"transformers {v} float64 eager with its float32 casts lifted "
                         "(tests/torch_reference.lifted_float32_casts), loss.backward()")
            expectations[dtype] = {"file": file, "atol": tol[0], "rtol": tol[1], "reference": reference,
                                   "tensors": sorted(grads)}
        case = {"description": src["description"], "source": src["source"], "class": src["class"],
                "call": src["call"], "inputs": sorted(src["inputs"]), "expectations": expectations}
        (out / "case.json").write_text(json.dumps(case, indent=2) + "\n")
        names.append(src["name"])
        print(f"  gradients {src['name']}: {', '.join(src['dtypes'])}")
    optimizer_fixtures()
    meta = {"transformers": v, "torch": torch.__version__, "python": platform.python_version(),
            "generated_by": "scripts/make_golden.py --gradients", "cases": names,
            "optimizer": "optimizer.safetensors + optimizer.json"}
    (GRADIENTS / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(p.stat().st_size for p in GRADIENTS.rglob("*") if p.is_file())
    print(f"{len(names)} gradient cases, {total / 1e6:.2f} MB in {GRADIENTS.relative_to(REPO)}")
    return names


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the golden fixtures with transformers.")
    parser.add_argument("--gradients", action="store_true", help="rewrite only tests/golden_gradients/ (from the "
                        "committed checkpoints of tests/golden/ and tests/golden_heads/)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.gradients:
        gradient_fixtures()
        return
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    (GOLDEN / "blocks").mkdir(parents=True)

    names = []
    for fn in CASES:
        before = {p.name for p in GOLDEN.iterdir()}
        print(f"case {fn.__name__[2:]}")
        fn()
        new = sorted({p.name for p in GOLDEN.iterdir()} - before)
        names.extend(new)
    print("blocks: rope, rms_norm, decoder_layer")
    rope_blocks()
    rms_norm_blocks()
    decoder_layer_block()

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "generated_by": "scripts/make_golden.py",
        "cases": sorted(names),
        "blocks": ["rope", "rms_norm", "decoder_layer"],
    }
    (GOLDEN / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    print(f"{len(names)} cases, {total / 1e6:.2f} MB in {GOLDEN.relative_to(REPO)}")
    assert total < 5e6, total
    gradient_fixtures()


if __name__ == "__main__":
    main()

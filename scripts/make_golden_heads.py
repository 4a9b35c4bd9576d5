"""Write the golden fixtures of the heads, the losses, the logits processors and generation under
``tests/golden_heads/`` with HuggingFace transformers.

How to run (from the repository root)::

    pip install -e ".[golden]"            # torch 2.13.0 (CPU) + transformers 5.24.0, pinned
    python scripts/make_golden_heads.py   # deletes and rewrites tests/golden_heads/

``tests/test_heads.py`` and ``tests/test_generation.py`` read these files and need neither torch nor
transformers. Every expected value comes from transformers (never from arcee_np); fixed seeds and one
torch thread make a rerun reproduce the same numbers with the pinned versions.

Layout::

    tests/golden_heads/meta.json                   versions, generator, cases
    tests/golden_heads/<case>/config.json          save_pretrained of a tiny random transformers model
    tests/golden_heads/<case>/model.safetensors    (weights re-drawn by tests/torch_reference.perturb_)
    tests/golden_heads/<case>/generation_config.json   (only for the generation_config case: a hand-written one)
    tests/golden_heads/<case>/case.json            kind, class, call kwargs, description, tolerance
    tests/golden_heads/<case>/inputs.safetensors   input_ids, attention_mask, labels, start/end_positions
    tests/golden_heads/<case>/expected.safetensors logits / start_logits / end_logits / loss, or sequences
    tests/golden_heads/processors/*.safetensors    random scores + input_ids and each processor's output

Kinds: ``head`` (a forward of the head class, every output compared at 1e-4 max abs), ``generate``
(``model.generate`` greedy: the token sequences must be equal; ``case.json["min_margin"]`` is the smallest
gap between the best and second-best processed score over all steps, kept well above float32 noise so the
argmax is not a coin flip), ``processors`` (one file per processor).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import transformers
from transformers import (ArceeConfig, ArceeForCausalLM, ArceeForQuestionAnswering, ArceeForSequenceClassification,
                          ArceeForTokenClassification)
from transformers.generation.logits_process import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor,
                                                    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from torch_reference import perturb_, start_fixture_run  # noqa: E402

OUT = REPO / "tests" / "golden_heads"
TOLERANCE = 1e-4
CLASSES = {"ArceeForSequenceClassification": ArceeForSequenceClassification,
           "ArceeForQuestionAnswering": ArceeForQuestionAnswering,
           "ArceeForTokenClassification": ArceeForTokenClassification, "ArceeForCausalLM": ArceeForCausalLM}


def tiny_config(**overrides) -> ArceeConfig:
    """vocab 48, hidden 16, 2 layers, 4 heads / 2 KV heads (head_dim 4), relu2, pad 0 / bos 1 / eos 2."""
    settings = dict(vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                    hidden_act="relu2", tie_word_embeddings=False)
    settings.update(overrides)
    return ArceeConfig(**settings)


def write_model(case: str, cls_name: str, config: ArceeConfig, seed: int, std: float = 0.15):
    """Save a perturbed random model to tests/golden_heads/<case>/ and return it re-loaded, eager, eval."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model = perturb_(CLASSES[cls_name](config), generator, std=std)
    folder = OUT / case
    model.save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)  # only the generation_config case ships one
    return CLASSES[cls_name].from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def write_case(case: str, description: str, kind: str, cls_name: str, call: dict, inputs: dict, expected: dict,
               **extra) -> None:
    folder = OUT / case
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "inputs.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in expected.items()}, str(folder / "expected.safetensors"))
    meta = {"description": description, "kind": kind, "class": cls_name, "dtype": "float32", "call": call,
            "tolerance": TOLERANCE, "inputs": sorted(inputs), "expected": sorted(expected), **extra}
    (folder / "case.json").write_text(json.dumps(meta, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- heads
PADDED = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0],         # right padding: pooled at index 4
                       [0, 0, 0, 10, 11, 12, 13, 14],    # left padding: pooled at index 7
                       [15, 16, 17, 18, 19, 20, 21, 22]])  # no padding
PADDED_MASK = (PADDED != 0).long()


def head_cases() -> list[str]:
    cases = []

    def seq_cls(case, description, labels, seed, **config):
        model = write_model(case, "ArceeForSequenceClassification", tiny_config(**config), seed)
        ids = PADDED if model.config.pad_token_id is not None else PADDED[2:]
        mask = PADDED_MASK[: ids.shape[0]]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
        expected = {"logits": out.logits, "loss": out.loss}
        write_case(case, description, "head", "ArceeForSequenceClassification", {}, {
            "input_ids": ids, "attention_mask": mask, "labels": labels}, expected,
            problem_type=model.config.problem_type)
        cases.append(case)

    seq_cls("seq_cls_single_label", "3 labels, integer labels (one -100): single_label CE; rows right-, left- "
            "and un-padded pool at their last non-pad token", torch.tensor([2, -100, 1]), 11, num_labels=3)
    seq_cls("seq_cls_regression", "1 label: problem_type inferred as regression, MSE of squeezed logits",
            torch.tensor([0.5, -1.25, 2.0]), 12, num_labels=1)
    seq_cls("seq_cls_multi_label", "3 labels, float labels: multi_label BCE-with-logits",
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), 13, num_labels=3)
    seq_cls("seq_cls_regression_2d", "problem_type set to regression with 2 labels: MSE over [B, 2]",
            torch.tensor([[0.5, -0.5], [1.0, 0.0], [-2.0, 0.25]]), 14, num_labels=2, problem_type="regression")
    seq_cls("seq_cls_no_pad_id", "pad_token_id None, batch 1: pools the last position (a 0 token is not a pad)",
            torch.tensor([1]), 15, num_labels=2, pad_token_id=None)

    case = "question_answering"
    model = write_model(case, "ArceeForQuestionAnswering", tiny_config(), 21)
    starts, ends = torch.tensor([1, 50, 7]), torch.tensor([3, 4, 8])  # 50 and 8 (= T) are past the end: ignored
    with torch.no_grad():
        out = model(input_ids=PADDED, attention_mask=PADDED_MASK, start_positions=starts, end_positions=ends)
    write_case(case, "QA: transformer.* backbone, qa_outputs with bias; positions clamped to [0, T], T ignored",
               "head", "ArceeForQuestionAnswering", {}, {"input_ids": PADDED, "attention_mask": PADDED_MASK,
                                                         "start_positions": starts, "end_positions": ends},
               {"start_logits": out.start_logits, "end_logits": out.end_logits, "loss": out.loss})
    cases.append(case)

    for case, bias, seed in (("token_cls", True, 31), ("token_cls_no_bias", False, 32)):
        model = write_model(case, "ArceeForTokenClassification", tiny_config(num_labels=5,
                                                                               token_classification_bias=bias), seed)
        labels = torch.where(PADDED_MASK.bool(), (PADDED * 7) % 5, torch.full_like(PADDED, -100))
        labels[2, 3] = -100
        with torch.no_grad():
            out = model(input_ids=PADDED, attention_mask=PADDED_MASK, labels=labels)
        write_case(case, f"token classification, score bias={bias}; CE over labelled tokens (-100 ignored)", "head",
                   "ArceeForTokenClassification", {}, {"input_ids": PADDED, "attention_mask": PADDED_MASK,
                                                       "labels": labels}, {"logits": out.logits, "loss": out.loss})
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------------------------- generation
def min_margin(scores: tuple) -> float:
    """Smallest (best - second best) processed score over every step and row that was still generating."""
    margins = []
    for step in scores:
        finite = torch.where(torch.isfinite(step), step, torch.full_like(step, -1e30))
        top = torch.topk(finite, 2, dim=-1).values
        margins.append((top[:, 0] - top[:, 1]).min().item())
    return min(margins)


def generation_cases() -> list[str]:
    cases = []
    prompts = torch.tensor([[1, 5, 9, 13, 17, 21], [1, 30, 31, 32, 33, 34]])

    def greedy(case, description, ids, call, seed, mask=None, config=None, generation_config=None):
        model = write_model(case, "ArceeForCausalLM", config or tiny_config(), seed, std=0.5)
        if generation_config is not None:
            (OUT / case / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
            model = ArceeForCausalLM.from_pretrained(OUT / case, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
        kwargs = dict(call, return_dict_in_generate=True, output_scores=True)
        if mask is not None:
            kwargs["attention_mask"] = mask
        with torch.no_grad():
            out = model.generate(ids, **kwargs)
        margin = min_margin(out.scores)
        assert margin > 1e-3, f"{case}: greedy margin {margin} too small; pick another seed"
        inputs = {"input_ids": ids} | ({"attention_mask": mask} if mask is not None else {})
        write_case(case, description, "generate", "ArceeForCausalLM", call, inputs, {"sequences": out.sequences},
                   min_margin=margin)
        cases.append(case)
        return out.sequences

    greedy("generate_greedy", "greedy, 10 new tokens, no eos in config", prompts, {
        "max_new_tokens": 10, "do_sample": False}, 41, config=tiny_config(eos_token_id=None, pad_token_id=None))
    greedy("generate_repetition_penalty", "greedy with repetition_penalty 1.5 (prompt and generated tokens)",
           prompts, {"max_new_tokens": 10, "do_sample": False, "repetition_penalty": 1.5}, 42,
           config=tiny_config(eos_token_id=None, pad_token_id=None))
    # eos: choose an id that row 0 emits mid-way, so row 0 stops and is padded while row 1 goes on
    probe = greedy("generate_eos", "placeholder", prompts, {"max_new_tokens": 12, "do_sample": False}, 47,
                   config=tiny_config(eos_token_id=None, pad_token_id=None))
    row0, row1 = probe[0, prompts.shape[1]:].tolist(), probe[1, prompts.shape[1]:].tolist()
    eos = next(t for t in row0[2:] if t not in row1[:row0.index(t) + 1])
    cases.remove("generate_eos")
    shutil.rmtree(OUT / "generate_eos")
    greedy("generate_eos", f"greedy, eos {eos} emitted by row 0 first: row 0 then gets pad 0 until row 1 ends "
           f"or 12 tokens", prompts, {"max_new_tokens": 12, "do_sample": False}, 47,
           config=tiny_config(eos_token_id=eos, pad_token_id=0))
    left = torch.tensor([[0, 0, 0, 1, 5, 9, 13], [1, 30, 31, 32, 33, 34, 35], [0, 1, 40, 41, 42, 43, 44]])
    left_mask = (left != 0).long()
    greedy("generate_left_padding", "batched prompts, left padding with attention_mask, repetition_penalty 1.3 "
           "(left pads not penalised)", left, {"max_new_tokens": 8, "do_sample": False, "repetition_penalty": 1.3}, 44,
           mask=left_mask, config=tiny_config(eos_token_id=None, pad_token_id=0))
    greedy("generate_min_new_tokens", "min_new_tokens 6: eos (id 2, which row 0 emits third without the limit) "
           "suppressed for the first 6 new tokens", prompts,
           {"max_new_tokens": 9, "min_new_tokens": 6, "do_sample": False}, 47)
    greedy("generate_generation_config", "defaults from generation_config.json (max_new_tokens 7, "
           "repetition_penalty 1.4, no sampling); generate called with no knobs", prompts, {}, 46,
           config=tiny_config(eos_token_id=None, pad_token_id=None),
           generation_config={"max_new_tokens": 7, "repetition_penalty": 1.4, "do_sample": False,
                              "transformers_version": transformers.__version__})
    return cases


# ---------------------------------------------------------------------------------------------- processors
def processor_fixtures() -> list[str]:
    """Random scores [4, 40] through each processor of transformers (with ties at the top and at the top-k
    boundary, except for top-p: see below)."""
    folder = OUT / "processors"
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(7)
    untied = 3 * torch.randn(4, 40, generator=generator)
    scores = untied.clone()
    scores[0, [3, 17, 25]] = scores[0].max() + 1.0  # a three-way tie at the top
    kth = torch.sort(scores[1], descending=True).values[4]
    scores[1, [0, 39]] = kth  # ties with the 5th largest value: survive top-k 5
    input_ids = torch.randint(0, 40, (4, 9), generator=generator)
    processors = {
        "repetition_penalty": RepetitionPenaltyLogitsProcessor(1.7),
        "repetition_penalty_prompt_ignore": RepetitionPenaltyLogitsProcessor(
            1.7, prompt_ignore_length=torch.tensor([0, 3, 9, 1])),
        "temperature": TemperatureLogitsWarper(0.7),
        "top_k": TopKLogitsWarper(5),
        "top_k_1": TopKLogitsWarper(1),
        "top_p": TopPLogitsWarper(0.8),
        "top_p_small": TopPLogitsWarper(0.05),
        "min_new_tokens": MinNewTokensLengthLogitsProcessor(4, 6, [2, 7]),
        "chain": LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.6),
                                      TopKLogitsWarper(12), TopPLogitsWarper(0.9)]),
    }
    arguments = {"repetition_penalty": {"penalty": 1.7},
                 "repetition_penalty_prompt_ignore": {"penalty": 1.7, "prompt_ignore_length": [0, 3, 9, 1]},
                 "temperature": {"temperature": 0.7}, "top_k": {"top_k": 5}, "top_k_1": {"top_k": 1},
                 "top_p": {"top_p": 0.8}, "top_p_small": {"top_p": 0.05},
                 "min_new_tokens": {"prompt_length_to_skip": 4, "min_new_tokens": 6, "eos_token_id": [2, 7]},
                 "chain": {"repetition_penalty": 1.3, "temperature": 0.6, "top_k": 12, "top_p": 0.9}}
    for name, processor in processors.items():
        # top-p sorts with torch's unstable sort, which orders tied scores arbitrarily (even differently per row):
        # its fixtures use scores without ties so that the expected output is well defined
        inputs = untied if name.startswith("top_p") or name == "chain" else scores
        expected = processor(input_ids, inputs.clone()).contiguous()
        save_file({"scores": inputs, "input_ids": input_ids, "expected": expected}, str(folder / f"{name}.safetensors"))
    (folder / "processors.json").write_text(json.dumps(arguments, indent=2) + "\n")
    return ["processors"]


def main() -> None:
    start_fixture_run(OUT)
    cases = head_cases() + generation_cases() + processor_fixtures()
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "generated_by": "scripts/make_golden_heads.py", "cases": cases}
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {len(cases)} cases to {OUT} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

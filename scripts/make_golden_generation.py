"""Write the golden fixtures of generation (every logits processor and warper, beam search, n-gram blocking,
stop strings, generation configs) under ``tests/golden_generation/`` with HuggingFace transformers.

How to run (from the repository root)::

    pip install -e ".[golden]"                  # torch 2.13.0 (CPU) + transformers 5.24.0, pinned
    python scripts/make_golden_generation.py    # deletes and rewrites tests/golden_generation/

``tests/test_generation_golden.py`` reads these files and needs neither torch nor transformers. Every
expected value comes from transformers (never from arcee_np); fixed seeds and one torch thread make a rerun
reproduce the same numbers with the pinned versions.

Layout::

    meta.json                          versions, generator, every key of transformers' GenerationConfig
    model/config.json, model.safetensors   a tiny random transformers ArceeForCausalLM (vocab 48, eos 2, pad 0)
    processors/processors.json         {name: {"class": transformers' class name, "kwargs": ..., "input": ...}}
    processors/<name>.safetensors      scores [4, 40], input_ids [4, S], expected (the class's output)
    cases/cases.json                   {name: {"model": "tiny" or "shipped", "call": generate kwargs,
                                        "generation_config": ..., "description", "outputs": [...]}}
    cases/<name>.safetensors           input_ids (attention_mask) and transformers' outputs: sequences, and as
                                       listed scores [steps, rows, V], sequences_scores, beam_indices

Beam sampling is not here: its draws come from torch's RNG, so only its first-step processed scores are
stored (the sampling cases keep ``max_new_tokens=1``); the plain suite checks beam sampling's structure and
seeded reproducibility instead.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import transformers
from transformers import ArceeConfig, ArceeForCausalLM, AutoTokenizer
from transformers.generation import logits_process as hf_lp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from torch_reference import perturb_, start_fixture_run  # noqa: E402

from arcee_np.shipped import default_model_path  # noqa: E402

OUT = REPO / "tests" / "golden_generation"
PROMPTS = torch.tensor([[1, 5, 9, 13, 17, 21], [1, 30, 31, 32, 33, 34]])
LEFT = torch.tensor([[0, 0, 0, 1, 5, 9, 13], [1, 30, 31, 32, 33, 34, 35], [0, 1, 40, 41, 42, 43, 44]])


# ---------------------------------------------------------------------------------------------- processors
def processor_fixtures() -> None:
    """Random scores [4, 40] (no ties; a variant with -inf entries, one with NaN/inf) through each class."""
    folder = OUT / "processors"
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(11)
    plain = 3 * torch.randn(4, 40, generator=generator)
    with_inf = plain.clone()
    with_inf[torch.rand(4, 40, generator=generator) < 0.3] = -float("inf")
    invalid = plain.clone()
    invalid[0, 3], invalid[1, 5], invalid[2, 7] = float("nan"), float("inf"), -float("inf")
    repeats = torch.randint(0, 6, (4, 14), generator=generator)  # a small alphabet: n-grams repeat
    ids = torch.randint(0, 40, (4, 9), generator=generator)
    inputs = {"plain": plain, "inf": with_inf, "invalid": invalid}
    cases = {  # name: (class, kwargs (JSON), scores, input_ids)
        "min_p": ("MinPLogitsWarper", {"min_p": 0.1}, "plain", ids),
        "min_p_keep3": ("MinPLogitsWarper", {"min_p": 0.6, "min_tokens_to_keep": 3}, "plain", ids),
        "min_p_inf": ("MinPLogitsWarper", {"min_p": 0.05}, "inf", ids),
        "typical": ("TypicalLogitsWarper", {"mass": 0.3}, "plain", ids),
        "typical_keep2": ("TypicalLogitsWarper", {"mass": 0.9, "min_tokens_to_keep": 2}, "plain", ids),
        "typical_inf": ("TypicalLogitsWarper", {"mass": 0.5}, "inf", ids),
        "epsilon": ("EpsilonLogitsWarper", {"epsilon": 0.03}, "plain", ids),
        "epsilon_keep3": ("EpsilonLogitsWarper", {"epsilon": 0.3, "min_tokens_to_keep": 3}, "plain", ids),
        "eta": ("EtaLogitsWarper", {"epsilon": 0.03}, "plain", ids),
        "eta_inf_keep2": ("EtaLogitsWarper", {"epsilon": 0.2, "min_tokens_to_keep": 2}, "inf", ids),
        "top_h": ("TopHLogitsWarper", {"top_h": 0.4}, "plain", ids),
        "top_h_inf": ("TopHLogitsWarper", {"top_h": 0.7}, "inf", ids),
        "no_repeat_ngram_1": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 1}, "plain", repeats),
        "no_repeat_ngram_2": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 2}, "plain", repeats),
        "no_repeat_ngram_3": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 3}, "plain", repeats),
        "sequence_bias": ("SequenceBiasLogitsProcessor", {"sequence_bias": [
            [[4], 2.5], [[7], -1.0], [[repeats[0, -1].item(), 3], 1.5], [[repeats[1, -2].item(),
                                                                          repeats[1, -1].item(), 9], -3.0],
            [[5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5], 4.0]]}, "plain", repeats),
        "bad_words": ("NoBadWordsLogitsProcessor", {"bad_words_ids": [[2], [8], [repeats[2, -1].item(), 11], [1, 1]],
                                                    "eos_token_id": [2]}, "plain", repeats),
        "suppress_tokens": ("SuppressTokensLogitsProcessor", {"suppress_tokens": [0, 13, 39]}, "plain", ids),
        "begin_suppress_at_begin": ("SuppressTokensAtBeginLogitsProcessor", {"begin_suppress_tokens": [1, 2],
                                                                             "begin_index": 9}, "plain", ids),
        "begin_suppress_later": ("SuppressTokensAtBeginLogitsProcessor", {"begin_suppress_tokens": [1, 2],
                                                                          "begin_index": 8}, "plain", ids),
        "forced_bos": ("ForcedBOSTokenLogitsProcessor", {"bos_token_id": 6}, "plain", ids[:, :1]),
        "forced_bos_later": ("ForcedBOSTokenLogitsProcessor", {"bos_token_id": 6}, "plain", ids),
        "forced_eos": ("ForcedEOSTokenLogitsProcessor", {"max_length": 10, "eos_token_id": [2, 5]}, "plain", ids),
        "exponential_decay": ("ExponentialDecayLengthPenalty", {"exponential_decay_length_penalty": [2, 1.7],
                                                                "eos_token_id": [2, 5], "input_ids_seq_length": 4},
                              "plain", ids),
        "exponential_decay_inf": ("ExponentialDecayLengthPenalty", {"exponential_decay_length_penalty": [0, 0.6],
                                                                    "eos_token_id": 3, "input_ids_seq_length": 2},
                                  "inf", ids),
        "min_length": ("MinLengthLogitsProcessor", {"min_length": 12, "eos_token_id": [2, 7]}, "plain", ids),
        "min_length_reached": ("MinLengthLogitsProcessor", {"min_length": 9, "eos_token_id": [2, 7]}, "plain", ids),
        "remove_invalid_values": ("InfNanRemoveLogitsProcessor", {}, "invalid", ids),
        "renormalize": ("LogitNormalization", {}, "inf", ids),
    }
    table = {}
    for name, (cls_name, kwargs, kind, input_ids) in cases.items():
        scores = inputs[kind]
        expected = getattr(hf_lp, cls_name)(**kwargs)(input_ids, scores.clone())
        save_file({"scores": scores.contiguous(), "input_ids": input_ids.contiguous(),
                   "expected": expected.contiguous()}, str(folder / f"{name}.safetensors"))
        table[name] = {"class": cls_name, "kwargs": kwargs, "input": kind}
    (folder / "processors.json").write_text(json.dumps(table, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- generate
def tiny_model() -> ArceeForCausalLM:
    config = ArceeConfig(vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, hidden_act="relu2", tie_word_embeddings=False)
    with torch.no_grad():
        model = perturb_(ArceeForCausalLM(config), torch.Generator().manual_seed(47), std=0.5)
    model.save_pretrained(OUT / "model")
    (OUT / "model" / "generation_config.json").unlink(missing_ok=True)
    return ArceeForCausalLM.from_pretrained(OUT / "model", dtype=torch.float32, attn_implementation="eager").eval()


def shipped_model(generation_config: dict | None) -> ArceeForCausalLM:
    model = ArceeForCausalLM.from_pretrained(default_model_path(), dtype=torch.float32,
                                             attn_implementation="eager").eval()
    if generation_config is not None:
        model.generation_config = transformers.GenerationConfig(**generation_config)
    return model


def generate_cases() -> None:
    folder = OUT / "cases"
    folder.mkdir(parents=True)
    tiny = tiny_model()
    shipped_config = json.loads((Path(default_model_path()) / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    table = {}

    def case(name, description, call, ids=PROMPTS, mask=None, model="tiny", generation_config=None,
             outputs=("sequences", "scores")):
        hf = tiny if model == "tiny" else shipped_model(generation_config)
        extra = {"tokenizer": tokenizer} if "stop_strings" in call else {}
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True,
                              **extra, **call)
        tensors = {"input_ids": ids} | ({"attention_mask": mask} if mask is not None else {})
        for key in outputs:
            value = getattr(out, key)
            tensors[key] = torch.stack(value) if key == "scores" else value
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
        table[name] = {"description": description, "model": model, "call": call,
                       "generation_config": generation_config, "outputs": list(outputs)}
        return out

    # greedy with the processors that also run without sampling
    case("greedy_no_repeat_ngram_2", "greedy, no_repeat_ngram_size 2", {"max_new_tokens": 14, "do_sample": False,
                                                                        "no_repeat_ngram_size": 2})
    case("greedy_no_repeat_ngram_3_penalty", "greedy, no_repeat_ngram_size 3 and repetition_penalty 1.2",
         {"max_new_tokens": 14, "do_sample": False, "no_repeat_ngram_size": 3, "repetition_penalty": 1.2})
    case("greedy_left_padding_no_repeat", "left-padded batch with its mask; the n-gram block counts the pads as "
         "transformers does", {"max_new_tokens": 10, "do_sample": False, "no_repeat_ngram_size": 2}, LEFT,
         (LEFT != 0).long())
    case("greedy_bad_words_sequence_bias", "bad_words_ids (one- and two-token) and sequence_bias",
         {"max_new_tokens": 12, "do_sample": False, "bad_words_ids": [[7], [41, 3], [2]],
          "sequence_bias": [[[5], 2.0], [[3, 4], -1.5], [[41], 0.75]]})
    case("greedy_suppress_min_length_forced_eos", "suppress_tokens, min_length and forced_eos_token_id",
         {"max_new_tokens": 12, "do_sample": False, "suppress_tokens": [3, 4], "min_length": 14,
          "forced_eos_token_id": 5})
    case("greedy_decay_renormalize_invalid", "exponential_decay_length_penalty, renormalize_logits, "
         "remove_invalid_values", {"max_new_tokens": 12, "do_sample": False,
                                   "exponential_decay_length_penalty": [3, 1.5], "renormalize_logits": True,
                                   "remove_invalid_values": True})
    case("greedy_forced_bos_begin_suppress", "a one-token prompt: forced_bos_token_id and begin_suppress_tokens "
         "(which then applies one step later)", {"max_new_tokens": 8, "do_sample": False, "forced_bos_token_id": 9,
                                                 "begin_suppress_tokens": [41, 3]}, torch.tensor([[1], [30]]))
    case("greedy_sampling_knobs_ignored", "min_p, typical_p, epsilon/eta cutoffs with do_sample=False: not applied",
         {"max_new_tokens": 10, "do_sample": False, "min_p": 0.5, "typical_p": 0.2, "epsilon_cutoff": 0.1,
          "eta_cutoff": 0.1})
    # beam search
    beams = ("sequences", "scores", "sequences_scores", "beam_indices")
    case("beam_3", "num_beams 3", {"max_new_tokens": 10, "do_sample": False, "num_beams": 3}, outputs=beams)
    case("beam_4_early_true_lp_half_return_2", "num_beams 4, length_penalty 0.5, early_stopping True, "
         "num_return_sequences 2", {"max_new_tokens": 12, "do_sample": False, "num_beams": 4, "length_penalty": 0.5,
                                    "early_stopping": True, "num_return_sequences": 2}, outputs=beams)
    case("beam_4_never_lp_2", "num_beams 4, length_penalty 2.0, early_stopping 'never'",
         {"max_new_tokens": 12, "do_sample": False, "num_beams": 4, "length_penalty": 2.0,
          "early_stopping": "never", "num_return_sequences": 4}, outputs=beams)
    case("beam_2_false_lp_negative", "num_beams 2, length_penalty -1.0, early_stopping False",
         {"max_new_tokens": 12, "do_sample": False, "num_beams": 2, "length_penalty": -1.0,
          "early_stopping": False}, outputs=beams)
    case("beam_3_no_repeat_penalty", "num_beams 3 with no_repeat_ngram_size 2 and repetition_penalty 1.3",
         {"max_new_tokens": 10, "do_sample": False, "num_beams": 3, "no_repeat_ngram_size": 2,
          "repetition_penalty": 1.3}, outputs=beams)
    case("beam_3_left_padding", "num_beams 3 on a left-padded batch", {"max_new_tokens": 8, "do_sample": False,
                                                                      "num_beams": 3}, LEFT, (LEFT != 0).long(),
         outputs=beams)
    case("beam_3_two_eos_min_new", "two eos ids (3K continuations kept), min_new_tokens 3",
         {"max_new_tokens": 10, "do_sample": False, "num_beams": 3, "eos_token_id": [2, 41], "min_new_tokens": 3},
         outputs=beams)
    # sampling: the first step's processed scores (the draws use torch's RNG)
    case("sample_all_warpers_first_step", "do_sample with every warper: the processed scores of the first step",
         {"max_new_tokens": 1, "do_sample": True, "temperature": 0.7, "top_k": 30, "top_p": 0.95, "min_p": 0.02,
          "typical_p": 0.9, "epsilon_cutoff": 0.001, "eta_cutoff": 0.002, "repetition_penalty": 1.1},
         outputs=("scores",))
    case("sample_top_h_first_step", "do_sample with top_h 0.6", {"max_new_tokens": 1, "do_sample": True,
                                                                 "top_h": 0.6, "top_k": 0}, outputs=("scores",))
    case("beam_sample_first_step", "beam sampling: first-step log-probabilities, warpers keep len(eos) + 1 tokens",
         {"max_new_tokens": 1, "do_sample": True, "num_beams": 3, "top_k": 1, "min_p": 0.5, "eos_token_id": [2, 41]},
         outputs=("scores",))
    # the shipped model
    issue_config = dict(shipped_config, min_p=0.2, no_repeat_ngram_size=2, typical_p=0.3)
    case("shipped_config_min_p_no_repeat_typical", "the shipped generation_config.json plus min_p 0.2, "
         "no_repeat_ngram_size 2, typical_p 0.3 (sampling): the first step's processed scores (after a prompt "
         "where each of the three changes them)",
         {"max_new_tokens": 1}, torch.tensor([tokenizer.encode("ROMEO:\nI will not, I will")]), model="shipped",
         generation_config=issue_config, outputs=("scores",))
    case("shipped_config_greedy_no_repeat", "the same config with do_sample false: greedy with n-gram blocking",
         {"max_new_tokens": 30}, torch.tensor([tokenizer.encode("ROMEO:")]), model="shipped",
         generation_config=dict(issue_config, do_sample=False), outputs=("sequences",))
    case("shipped_beam_4", "the shipped model, num_beams 4 greedy (repetition_penalty 1.1 from its config)",
         {"max_new_tokens": 20, "do_sample": False, "num_beams": 4}, torch.tensor([tokenizer.encode("JULIET:")]),
         model="shipped", generation_config=shipped_config, outputs=("sequences", "sequences_scores",
                                                                     "beam_indices"))
    prompt = torch.tensor([tokenizer.encode("KING HENRY:")])
    probe = case("shipped_plain", "the shipped model, greedy, 40 tokens", {"max_new_tokens": 40,
                                                                          "do_sample": False},
                 prompt, model="shipped", generation_config=shipped_config, outputs=("sequences",))
    text = tokenizer.decode(probe.sequences[0, prompt.shape[1]:])
    stop = text[len(text) // 3: len(text) // 3 + 4]
    case("shipped_stop_string", f"the same with stop_strings [{stop!r}, 'zzzz'] (the first ends mid-text)",
         {"max_new_tokens": 40, "do_sample": False, "stop_strings": [stop, "zzzz"]}, prompt, model="shipped",
         generation_config=shipped_config, outputs=("sequences",))
    (folder / "cases.json").write_text(json.dumps(table, indent=2) + "\n")


def main() -> None:
    start_fixture_run(OUT)
    processor_fixtures()
    generate_cases()
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "generated_by": "scripts/make_golden_generation.py",
            "generation_config_keys": sorted(transformers.GenerationConfig().to_dict())}
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

"""Live differential tests of the backward: arcee_np's loss and gradients against transformers'
``loss.backward()`` at run time, on random configs and inputs (hypothesis), and AdamW, clipping and the
schedules against torch over several steps.

Skipped unless torch and transformers import. Configs as the forward's live suite draws them (heads / KV
heads / head_dim, biases, tied embeddings, activation, default or YaRN RoPE); plus the head (causal LM, the
three sequence-classification problem types, question answering, token classification), padding side,
position_ids (with restarts: packed sequences when no cache is used), inputs_embeds, labels with -100, and
gradient checkpointing on both sides. float32 within 1e-5 + 1e-4 |ref|; float64 against transformers with its
float32 casts lifted within 1e-10.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_live_differential import TORCH_DTYPE, configs, to_torch_call  # noqa: E402
from torch_reference import lifted_float32_casts, perturb_  # noqa: E402

import arcee_np  # noqa: E402
from arcee_np.backend import to_numpy  # noqa: E402
from arcee_np.training import (AdamW, clip_grad_norm, cosine_schedule_with_warmup,  # noqa: E402
                               cosine_with_min_lr_schedule_with_warmup, linear_schedule_with_warmup,
                               loss_and_gradients, model_parameters)

pytestmark = pytest.mark.live
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

TOL = {"float32": (1e-5, 1e-4), "float64": (1e-10, 0.0)}
HEADS = ["ArceeForCausalLM", "ArceeForSequenceClassification", "ArceeForQuestionAnswering",
         "ArceeForTokenClassification"]
EXAMPLES = int(os.environ.get("ARCEE_LIVE_EXAMPLES", "50"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
PAD = 0


@st.composite
def head_setups(draw, cfg):
    """(head class name, config overrides) for a random head; sequence classification in every problem type."""
    head = draw(st.sampled_from(HEADS))
    overrides = {"pad_token_id": PAD}
    if head == "ArceeForSequenceClassification":
        problem = draw(st.sampled_from(["regression", "single_label_classification", "multi_label_classification"]))
        overrides["num_labels"] = 1 if problem == "regression" and draw(st.booleans()) else draw(st.integers(2, 4))
        overrides["problem_type"] = problem if draw(st.booleans()) or overrides["num_labels"] == 1 else None
        if overrides["problem_type"] is None and problem == "regression":
            overrides["problem_type"] = "regression"  # with several labels it cannot be inferred
        overrides["_problem"] = problem
    elif head == "ArceeForTokenClassification":
        overrides["num_labels"] = draw(st.integers(2, 4))
        overrides["token_classification_bias"] = draw(st.booleans())
    return head, overrides


@st.composite
def calls(draw, cfg, head, problem):
    """A random call with the head's targets; arrays are NumPy."""
    B, T = draw(st.integers(1, 3)), draw(st.integers(2, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    call: dict = {}
    padding = draw(st.sampled_from(["none", "left", "right"]))
    mask = np.ones((B, T), dtype=np.int64)
    if padding != "none":
        for b in range(B):
            n = draw(st.integers(1, T))
            if padding == "left":
                mask[b, :T - n] = 0
            else:
                mask[b, n:] = 0
        call["attention_mask"] = mask
    pos_kind = draw(st.sampled_from(["none", "from_mask", "gaps"]))
    if pos_kind == "from_mask" and padding != "none":
        call["position_ids"] = np.clip(np.cumsum(mask, -1) - 1, 0, None)
    elif pos_kind == "gaps":
        steps = rng.choice([0, 1, 1, 1, 2], size=(B, T))
        if draw(st.booleans()):
            steps[:, T // 2] = -T  # a restart: packed sequences when no cache is used
        call["position_ids"] = np.clip(np.cumsum(steps, -1), 0, 63).astype(np.int64)
    ids = rng.integers(1, cfg["vocab_size"], (B, T), dtype=np.int64)
    ids[mask == 0] = PAD
    if draw(st.booleans()) and head != "ArceeForSequenceClassification":
        call["inputs_embeds"] = rng.normal(0.0, 1.0, (B, T, cfg["hidden_size"]))
    else:
        call["input_ids"] = ids
    if head in ("ArceeForCausalLM", "ArceeForTokenClassification"):
        classes = cfg["vocab_size"] if head == "ArceeForCausalLM" else cfg["num_labels"]
        labels = rng.integers(0, classes, (B, T), dtype=np.int64)
        labels[rng.random((B, T)) < 0.3] = -100
        labels[0, -1 if head == "ArceeForTokenClassification" else 1] = 3 % classes  # at least one counted
        call["labels"] = labels
    elif head == "ArceeForQuestionAnswering":
        call["start_positions"] = rng.integers(0, T + 3, B)
        call["start_positions"][0] = 0
        call["end_positions"] = rng.integers(0, T, B)
    elif problem == "single_label_classification":
        call["labels"] = rng.integers(0, cfg["num_labels"], B, dtype=np.int64)
    elif problem == "regression" and cfg["num_labels"] == 1:
        call["labels"] = rng.normal(size=B)
    else:
        call["labels"] = (rng.random((B, cfg["num_labels"])) > 0.5).astype(np.float64) if \
            problem == "multi_label_classification" else rng.normal(size=(B, cfg["num_labels"]))
    call["use_cache"] = draw(st.sampled_from([None, True, False]))
    return call


def build_hf(head: str, cfg: dict, seed: int, dtype):
    cfg = copy.deepcopy(cfg)
    torch.manual_seed(seed)
    model = getattr(transformers, head)(transformers.ArceeConfig(**cfg, attn_implementation="eager"))
    perturb_(model, torch.Generator().manual_seed(seed), std=0.15)
    return model.to(dtype).eval()


def hf_gradients(path, head, dtype, call, checkpointing):
    """transformers' loss and every parameter's gradient (zeros where autograd leaves None)."""
    with lifted_float32_casts() if dtype == "float64" else contextlib.nullcontext():
        model = getattr(transformers, head).from_pretrained(path, dtype=TORCH_DTYPE[dtype], attn_implementation="eager")
        if checkpointing:
            model.activation_checkpointing_enable()
            model.train()
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        else:
            model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(**to_torch_call(call, TORCH_DTYPE[dtype]))
        out.loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
    return out.loss.item(), grads


def compare_gradients(loss, grads, ref_loss, ref_grads, dtype, where):
    atol, rtol = TOL[dtype]
    assert set(grads) == set(ref_grads), f"{where}: names differ {sorted(set(grads) ^ set(ref_grads))}"
    if np.isnan(ref_loss):
        assert np.isnan(float(loss)), f"{where}: loss {float(loss)} where transformers gives NaN"
    else:
        assert abs(float(loss) - ref_loss) <= atol + rtol * abs(ref_loss), f"{where}: loss {float(loss)} vs {ref_loss}"
    for name, ref in ref_grads.items():
        ref = ref.detach().to(torch.float64).numpy()
        got = np.asarray(to_numpy(grads[name]), dtype=np.float64)
        excess = np.abs(got - ref) - (atol + rtol * np.abs(ref))
        assert excess.max() <= 0, f"{where}: {name} max abs error {np.abs(got - ref).max():.3g}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@SETTINGS
@given(cfg=configs(), data=st.data(), seed=st.integers(0, 2**31 - 1), checkpointing=st.booleans())
def test_random_model_gradients(tmp_path_factory, dtype, cfg, data, seed, checkpointing):
    head, overrides = data.draw(head_setups(cfg))
    problem = overrides.pop("_problem", None)
    cfg = dict(cfg, **overrides)
    call = data.draw(calls(cfg, head, problem))
    path = tmp_path_factory.mktemp(f"grad_{dtype}")
    build_hf(head, cfg, seed, TORCH_DTYPE[dtype]).save_pretrained(path)
    ref_loss, ref_grads = hf_gradients(path, head, dtype, call, checkpointing)
    ours = getattr(arcee_np, head).from_pretrained(path, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np_call = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                   for k, v in call.items()}
        loss, grads = loss_and_gradients(ours, **np_call, checkpointing=checkpointing)
    compare_gradients(loss, grads, ref_loss, ref_grads, dtype, f"{head} {dtype} {cfg} {call}")


def test_shipped_model_gradients_float32():
    """The shipped model on a real batch of 4 x 64 tokens: every gradient within the float32 tolerance."""
    from arcee_np.shipped import default_model_path

    path = default_model_path()
    ids = np.random.default_rng(0).integers(3, 4096, (4, 64))
    ref_loss, ref_grads = hf_gradients(path, "ArceeForCausalLM", "float32", {"input_ids": ids, "labels": ids}, False)
    loss, grads = loss_and_gradients(arcee_np.ArceeForCausalLM.from_pretrained(path), ids, labels=ids)
    compare_gradients(loss, grads, ref_loss, ref_grads, "float32", "shipped model")


# ------------------------------------------------------------------------------------------ optimizer


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=max(EXAMPLES // 5, 5), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lr=st.floats(1e-4, 1e-1), beta1=st.sampled_from([0.0, 0.5, 0.9]),
       beta2=st.sampled_from([0.95, 0.999]), eps=st.sampled_from([1e-8, 1e-6]),
       weight_decay=st.sampled_from([0.0, 0.1]),
       max_norm=st.sampled_from([0.5, 1.0, 100.0]), kind=st.sampled_from(["linear", "cosine", "cosine_min"]))
def test_adamw_clipping_and_schedule_equal_torch(dtype, seed, lr, beta1, beta2, eps, weight_decay, max_norm, kind):
    """Eight steps of clip_grad_norm_ + AdamW (one group without decay) + a warmup schedule, as in training."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (6, 5), "b": (5,), "e": (4, 3)}
    start = {k: rng.normal(size=s) for k, s in shapes.items()}
    torch_dtype = TORCH_DTYPE[dtype]
    params = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for k, v in start.items()}
    optimizer = torch.optim.AdamW([{"params": [params["w"], params["e"]]},
                                   {"params": [params["b"]], "weight_decay": 0.0}],
                                  lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    warmup, total = 3, 8
    if kind == "linear":
        scheduler, schedule = (transformers.get_linear_schedule_with_warmup(optimizer, warmup, total),
                               linear_schedule_with_warmup(lr, warmup, total))
    elif kind == "cosine":
        scheduler, schedule = (transformers.get_cosine_schedule_with_warmup(optimizer, warmup, total),
                               cosine_schedule_with_warmup(lr, warmup, total))
    else:
        scheduler = transformers.get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=0.1)
        schedule = cosine_with_min_lr_schedule_with_warmup(lr, warmup, total, min_lr_rate=0.1)
    ours = {k: v.astype(dtype) for k, v in start.items()}
    adamw = AdamW(ours, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, no_decay=["b"])
    tol = 1e-12 if dtype == "float64" else 1e-5
    for step in range(total):
        grads = {k: (3 * rng.normal(size=s)).astype(dtype) for k, s in shapes.items()}
        for k in shapes:
            params[k].grad = torch.tensor(grads[k])
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        clipped, our_norm = clip_grad_norm(grads, max_norm)
        assert abs(float(our_norm) - norm.item()) <= tol * max(1.0, norm.item())
        assert schedule(step) == optimizer.param_groups[0]["lr"]  # the same float, bit for bit
        adamw.lr = schedule(step)
        optimizer.step()
        scheduler.step()
        adamw.step(clipped)
        for k in shapes:
            np.testing.assert_allclose(ours[k], params[k].detach().numpy(), rtol=0, atol=tol,
                                       err_msg=f"step {step} {k}")


def test_adamw_on_a_model_equals_torch_training(tmp_path):
    """Three full training steps of a small model (gradients, clipping, AdamW, schedule) on both sides."""
    cfg = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, hidden_act="relu2", max_position_embeddings=64, tie_word_embeddings=True,
               bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.15)
    build_hf("ArceeForCausalLM", cfg, 1, torch.float64).save_pretrained(tmp_path)
    ids = np.random.default_rng(2).integers(1, 40, (3, 9))
    with lifted_float32_casts():
        hf = transformers.ArceeForCausalLM.from_pretrained(tmp_path, dtype=torch.float64, attn_implementation="eager")
        hf.eval()
        optimizer = torch.optim.AdamW(hf.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
        scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 1, 3)
        for _ in range(3):
            loss = hf(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
    model = arcee_np.ArceeForCausalLM.from_pretrained(tmp_path, dtype="float64")
    adamw = AdamW(model_parameters(model), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = linear_schedule_with_warmup(0.05, 1, 3)
    for step in range(3):
        _, grads = loss_and_gradients(model, ids, labels=ids)
        grads, _ = clip_grad_norm(grads, 1.0)
        adamw.lr = schedule(step)
        adamw.step(grads)
    ours = model.state_dict()
    for name, p in hf.state_dict().items():
        if name in ours:
            np.testing.assert_allclose(ours[name], p.numpy(), rtol=0, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------------ fine-tuning


def test_finetuned_checkpoint_loads_in_transformers(tmp_path):
    """`arcee-np finetune` writes a folder transformers' Auto classes load, with the same logits as arcee_np."""
    from tiny_lm import TEXT, write_tiny_lm

    from arcee_np.cli import main

    base = write_tiny_lm(tmp_path / "base")
    data = tmp_path / "text.txt"
    data.write_text("\n".join(TEXT[:4]) * 30, encoding="utf-8")
    assert main(["finetune", "--data", str(data), "--model", str(base), "--steps", "5", "--out", str(tmp_path / "ft"),
                 "--batch-size", "2", "--seq-len", "16"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ft", dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "ft")
    ids = tokenizer("ROMEO: But soft", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        theirs = model(ids).logits.numpy()
    ours = to_numpy(arcee_np.ArceeForCausalLM.from_pretrained(tmp_path / "ft")(ids.numpy()).logits)
    assert np.abs(ours - theirs).max() < 1e-4
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "ft").bos_token_id == 0

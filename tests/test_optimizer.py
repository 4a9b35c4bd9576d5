"""AdamW, clip_grad_norm and the schedules against torch and transformers, from the fixtures written by
``scripts/make_golden.py --gradients`` (tests/golden_gradients/optimizer.*; no torch needed): eight steps of
seeded gradients, clipping, a schedule and AdamW with a group without weight decay, float64 to 1e-12."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from arcee_np.training import (AdamW, adamw_update, clip_grad_norm, cosine_schedule_with_warmup,
                               cosine_with_min_lr_schedule_with_warmup, linear_schedule_with_warmup)

FOLDER = Path(__file__).resolve().parent / "golden_gradients"
RUNS = json.loads((FOLDER / "optimizer.json").read_text())["runs"]
TENSORS = load_file(str(FOLDER / "optimizer.safetensors"))
SCHEDULES = {"cosine": cosine_schedule_with_warmup, "linear": linear_schedule_with_warmup,
             "cosine_min_lr": cosine_with_min_lr_schedule_with_warmup}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_training_steps_equal_torch(name):
    run = RUNS[name]
    names = sorted({key.split(".")[-1] for key in TENSORS if key.startswith(f"{name}.start.")})
    params = {k: TENSORS[f"{name}.start.{k}"].copy() for k in names}
    adamw = AdamW(params, **{k: tuple(v) if k == "betas" else v for k, v in run["adamw"].items()},
                  no_decay=run["no_decay"])
    schedule = SCHEDULES[run["schedule"]](run["adamw"]["lr"], run["warmup"], run["steps"], **run["schedule_arguments"])
    tol = run["tolerance"]
    for step in range(run["steps"]):
        grads = {k: TENSORS[f"{name}.step{step}.grad.{k}"] for k in names}
        clipped, norm = clip_grad_norm(grads, run["max_norm"])
        assert float(norm) == pytest.approx(run["clip_norm"][step], rel=tol)
        assert schedule(step) == run["lr"][step]  # the same float
        adamw.lr = schedule(step)
        adamw.step(clipped)
        for k in names:
            assert params[k].dtype == np.dtype(run["dtype"])
            np.testing.assert_allclose(params[k], TENSORS[f"{name}.step{step}.param.{k}"], rtol=0, atol=tol,
                                       err_msg=f"{name} step {step} {k}")
    assert adamw.state["w"]["step"] == run["steps"]


def test_adamw_update_is_a_plain_function():
    """One step by hand: with zero moments, step 1 moves each entry by lr * g / (|g| + eps) (Adam's sign step)."""
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 0.0])
    new, m, v = adamw_update(p, g, np.zeros(3), np.zeros(3), 1, 0.1, (0.9, 0.999), 1e-8, 0.0)
    np.testing.assert_allclose(new, p - 0.1 * g / (np.abs(g) + 1e-8), atol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g) and np.testing.assert_allclose(v, 0.001 * g * g)
    assert not np.shares_memory(new, p)  # the inputs are left alone


def test_bad_arguments_are_refused():
    params = {"w": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="betas in"):
        AdamW(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="no_decay names weights"):
        AdamW(params, no_decay=["b"])
    with pytest.raises(KeyError, match="does not hold"):
        AdamW(params).step({"x": np.zeros(2)})
    with pytest.raises(ValueError, match="base_lr >= 0"):
        linear_schedule_with_warmup(-1.0, 1, 2)
    with pytest.raises(ValueError, match="at least one"):
        clip_grad_norm({}, 1.0)


def test_stored_weights_are_refused_with_the_fix():
    from arcee_np import ArceeForCausalLM
    from arcee_np.training import model_parameters

    model = ArceeForCausalLM.from_pretrained(FOLDER.parent / "golden" / "bf16_checkpoint", widen="per_use")
    with pytest.raises(TypeError, match="widen='at_load'"):
        AdamW(model_parameters(model))

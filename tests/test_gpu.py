"""arcee_np on CuPy (``device="cuda"``) against arcee_np on NumPy and the golden fixtures of transformers.

Runs only where CuPy and a CUDA GPU are present (the whole module is skipped otherwise); marked ``gpu``.
``scripts/gpu_check.py`` runs this file before its benchmark. TF32 stays off: CuPy uses TF32 for float32
matmuls only when ``CUPY_TF32`` is positive, and this module sets it to 0 before importing CuPy.

Checked: every golden case (CuPy vs NumPy within the design's tolerances: 1e-4 float32, 1e-9 float64, the
case's own 1e-2 float16; and CuPy vs transformers' expected tensors at the case's tolerance), the KV-cache
step cases, a random model with padding, hidden states, attentions and loss, inputs given as CuPy arrays
(the big ones never copied to the host), weights handed over on the GPU without a copy, the cache living on
the GPU, bfloat16 checkpoints loaded as float16, greedy generation equal token for token in float32, and the
backward (gradients on CuPy equal to NumPy's and to the gradient fixtures).
"""

from __future__ import annotations

import os

os.environ["CUPY_TF32"] = "0"  # read by CuPy at its first float32 matmul

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    import cupy

    _GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # CuPy missing, or its CUDA driver/runtime unusable
    _GPU = False
if not _GPU:
    pytest.skip("needs CuPy and a CUDA GPU: pip install 'arcee-np[gpu]'", allow_module_level=True)

from conftest import random_model, small_config  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from test_golden import (GOLDEN, SINGLE_STEP, STEPPED, _case, _forward_kwargs, _inputs, assert_close,  # noqa: E402
                         compare_all, flatten)

import arcee_np.validation.arguments  # noqa: E402
from arcee_np import ArceeForCausalLM, KVCache  # noqa: E402
from arcee_np.backend import namespace_for_device, to_numpy  # noqa: E402

pytestmark = pytest.mark.gpu

# CuPy vs NumPy, by dtype (docs/numerics.md); float16 uses the case's own tolerance
SAME_BACKEND_TOL = {"float32": 1e-4, "float64": 1e-9}


def _on_gpu(value) -> bool:
    return isinstance(value, cupy.ndarray)


@pytest.fixture(scope="module")
def golden_model():
    cache = {}

    def get(name: str, device: str):
        key = (name, device)
        if key not in cache:
            cache[key] = ArceeForCausalLM.from_pretrained(GOLDEN / name, dtype=_case(name)["dtype"], device=device)
        return cache[key]

    return get


# ------------------------------------------------------------------------------------------ set-up


def test_tf32_is_off():
    assert os.environ.get("CUPY_TF32") == "0"
    a = cupy.ones((8, 8), dtype=cupy.float32)
    a @ a  # fixes CuPy's float32 compute type, read from CUPY_TF32 at the first matmul
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:  # private module moved: the env var above is the contract
        pytest.skip("cupy._core._routines_linalg not found")
    assert linalg.compute_type_to_str(linalg.get_compute_type(np.float32)) != "COMPUTE_TYPE_TF32"


def test_cuda_namespace_and_weights_on_gpu(golden_model):
    assert "cupy" in namespace_for_device("cuda").__name__
    model = golden_model("gqa", "cuda")
    assert model.device == "cuda"
    assert all(_on_gpu(v) for v in model.params.values())
    assert all(_on_gpu(v) for v in model.head_params.values())
    assert model.params["embed_tokens.weight"].dtype == cupy.float32


# ------------------------------------------------------------------------------------------ golden fixtures


@pytest.mark.parametrize("name", SINGLE_STEP)
def test_golden_case_cupy_equals_numpy(name, golden_model):
    case = _case(name)
    inputs = _inputs(name)
    mask = inputs.get("attention_mask") if case["compare"] == "mask" else None
    gpu = flatten(golden_model(name, "cuda")(**_forward_kwargs(case, inputs)))
    cpu = flatten(golden_model(name, "cpu")(**_forward_kwargs(case, inputs)))
    assert set(gpu) == set(cpu)
    tol = SAME_BACKEND_TOL.get(case["dtype"], case["tolerance"])
    for key, value in gpu.items():
        assert _on_gpu(value), f"{name}: {key} is {type(value).__name__}, not a CuPy array"
        assert_close(value, to_numpy(cpu[key]), key, tol, mask, f"{name} cupy vs numpy")
    for file, spec in case["expectations"].items():
        compare_all(gpu, load_file(str(GOLDEN / name / file)), spec["tolerance"], mask, f"{name}/{file} (cupy)")


@pytest.mark.parametrize("name", STEPPED)
def test_golden_kv_cache_steps_on_gpu(name, golden_model):
    case = _case(name)
    inputs = _inputs(name)
    expected = load_file(str(GOLDEN / name / "expected.safetensors"))
    tol = case["expectations"]["expected.safetensors"]["tolerance"]
    caches = {"cpu": None, "cuda": None}
    for k, step in enumerate(case["steps"]):
        step_inputs = {arg: inputs[key] for arg, key in step["inputs"].items()}
        mask = step_inputs["attention_mask"] if case["compare"] == "mask" else None
        outs = {}
        for device in caches:
            outs[device] = golden_model(name, device)(**step_inputs, past_key_values=caches[device], use_cache=True)
            caches[device] = outs[device].past_key_values
        assert _on_gpu(outs["cuda"].logits)
        assert_close(outs["cuda"].logits, to_numpy(outs["cpu"].logits), "logits", SAME_BACKEND_TOL[case["dtype"]],
                     mask, f"{name} step {k} cupy vs numpy")
        for arg, key in step["expected"].items():
            assert_close(getattr(outs["cuda"], arg), expected[key], arg, tol, mask, f"{name} step {k} ({key}, cupy)")
    keys, values = caches["cuda"][0]
    assert _on_gpu(keys) and _on_gpu(values)
    final = {k: v for k, v in expected.items() if k.startswith("past_key_values.")}
    compare_all(flatten(outs["cuda"]), final, tol, mask, f"{name} final cache (cupy)")


def test_bf16_checkpoint_loads_as_float16_on_gpu():
    """bfloat16 weights are widened exactly on read, then cast to float16 for the float16 model."""
    name = "bf16_checkpoint"
    gpu = ArceeForCausalLM.from_pretrained(GOLDEN / name, dtype="float16", device="cuda")
    cpu = ArceeForCausalLM.from_pretrained(GOLDEN / name, dtype="float16", device="cpu")
    assert all(v.dtype == cupy.float16 for v in gpu.params.values())
    inputs = _inputs(name)
    a, b = gpu(**inputs, use_cache=False).logits, cpu(**inputs, use_cache=False).logits
    assert _on_gpu(a) and a.dtype == cupy.float16
    assert_close(a, to_numpy(b), "logits", 1e-2, None, "bf16 checkpoint as float16, cupy vs numpy")


# ------------------------------------------------------------------------------------------ a random model


def _padded_batch(rng, config, batch=3, length=9):
    ids = rng.integers(3, config.vocab_size, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1, :3] = 0  # left padding
    mask[2, :5] = 0
    return ids, mask


def test_random_model_cupy_equals_numpy(rng):
    config = small_config()
    cpu, gpu = random_model(config, seed=3), random_model(config, seed=3, device="cuda")
    ids, mask = _padded_batch(rng, config)
    labels = np.where(mask == 1, ids, -100)
    kwargs = dict(attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    a, b = flatten(gpu(ids, **kwargs)), flatten(cpu(ids, **kwargs))
    assert set(a) == set(b) and {"loss", "attentions.0", "hidden_states.2"} <= set(a)
    for key in a:
        assert _on_gpu(a[key]), key
        assert_close(a[key], to_numpy(b[key]), key, 1e-4, mask, "random model cupy vs numpy")


def test_inputs_given_on_the_gpu(rng, monkeypatch):
    """CuPy inputs work, give NumPy's results, and the big ones (embeddings, 4-D masks) stay on the GPU."""
    config = small_config()
    cpu, gpu = random_model(config, seed=4), random_model(config, seed=4, device="cuda")
    ids, mask = _padded_batch(rng, config)
    embeds = to_numpy(cpu.params["embed_tokens.weight"])[ids]  # [B, T, D]
    expected = to_numpy(cpu(ids, attention_mask=mask).logits)
    real_to_numpy = arcee_np.validation.arguments.to_numpy

    def small_only(x):
        assert getattr(x, "ndim", 0) <= 2, f"the input checks copied a {getattr(x, 'shape', '?')} array to the host"
        return real_to_numpy(x)

    monkeypatch.setattr(arcee_np.validation.arguments, "to_numpy", small_only)
    for kwargs in (dict(input_ids=cupy.asarray(ids), attention_mask=cupy.asarray(mask)),
                   dict(inputs_embeds=cupy.asarray(embeds), attention_mask=mask)):
        out = gpu(**kwargs).logits
        assert _on_gpu(out)
        assert_close(out, expected, "logits", 1e-4, mask, f"cupy inputs {sorted(kwargs)}")
    length = ids.shape[1]
    causal = cupy.triu(cupy.full((length, length), -1e30, dtype=cupy.float32), k=1)[None, None]  # [1, 1, T, T]
    out = gpu(cupy.asarray(ids), attention_mask=causal).logits
    assert_close(out, to_numpy(cpu(ids).logits), "logits", 1e-4, None, "4-D additive mask on the GPU")


def test_weights_handed_over_on_the_gpu_are_not_copied():
    config = small_config()
    host = random_model(config, seed=5)
    state = host.state_dict()
    on_gpu = {k: cupy.asarray(v) for k, v in state.items()}
    backbone = {k[len("model."):]: v for k, v in on_gpu.items() if k.startswith("model.")}
    head = {k: v for k, v in on_gpu.items() if not k.startswith("model.")}
    shared = ArceeForCausalLM(config, backbone, head, dtype="float32", device="cuda")
    for name, value in shared.params.items():
        assert value.data.ptr == backbone[name].data.ptr, f"{name} was copied"
    half = ArceeForCausalLM(config, backbone, head, dtype="float16", device="cuda")
    assert all(v.dtype == cupy.float16 and _on_gpu(v) for v in half.params.values())
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA: the DLPack hand-over from torch is not checked")
    tensors = {k: torch.from_dlpack(v) for k, v in on_gpu.items()}  # torch CUDA tensors over the same memory
    from_torch = ArceeForCausalLM(config, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                                  {k: v for k, v in tensors.items() if not k.startswith("model.")}, device="cuda")
    for name, value in from_torch.params.items():
        assert _on_gpu(value) and value.data.ptr == tensors["model." + name].data_ptr(), name
    ids = np.arange(3, 15).reshape(2, 6)  # torch CUDA inputs are read through DLPack too
    logits = from_torch(torch.as_tensor(ids, device="cuda")).logits
    assert_close(logits, to_numpy(host(ids).logits), "logits", 1e-4, None, "torch CUDA input_ids")


# ------------------------------------------------------------------------------------------ cache and generation


def test_cache_lives_on_the_gpu_and_decodes_like_the_full_forward(rng):
    config = small_config()
    gpu = random_model(config, seed=6, device="cuda")
    ids = rng.integers(3, config.vocab_size, size=(2, 12))
    full = gpu(ids, use_cache=False).logits
    cache = KVCache(config.num_hidden_layers)
    out = gpu(ids[:, :8], past_key_values=cache, use_cache=True)
    steps = [out.logits[:, -1]]
    for t in range(8, 12):
        out = gpu(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits[:, -1])
    assert out.past_key_values is cache and cache.get_seq_length() == 12
    for layer in range(config.num_hidden_layers):
        keys, values = cache[layer]
        assert _on_gpu(keys) and _on_gpu(values) and keys.shape[2] == 12
    decoded = cupy.stack(steps[:-1], axis=1)  # logits predicting positions 8..11, from positions 7..10
    assert_close(decoded, to_numpy(full[:, 7:11]), "logits", 1e-5, None, "cached decode vs full forward")


def test_greedy_generation_same_tokens_float32(rng):
    config = small_config()
    cpu, gpu = random_model(config, seed=7), random_model(config, seed=7, device="cuda")
    ids, mask = _padded_batch(rng, config)
    for kwargs in (dict(input_ids=ids[:1, :6]), dict(input_ids=ids, attention_mask=mask)):
        a = gpu.generate(max_new_tokens=24, do_sample=False, **kwargs)
        b = cpu.generate(max_new_tokens=24, do_sample=False, **kwargs)
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_greedy_generation_golden_checkpoint_same_tokens(golden_model):
    name = "gqa"
    assert _case(name)["dtype"] == "float32"
    prompt = _inputs(name)["input_ids"][:1]
    a = golden_model(name, "cuda").generate(prompt, max_new_tokens=16, do_sample=False)
    b = golden_model(name, "cpu").generate(prompt, max_new_tokens=16, do_sample=False)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_sampling_runs_on_the_gpu(rng):
    config = small_config()
    gpu = random_model(config, seed=8, device="cuda")
    ids = rng.integers(3, config.vocab_size, size=(2, 5))
    out = to_numpy(gpu.generate(ids, max_new_tokens=6, do_sample=True, top_k=10, top_p=0.9, temperature=0.7,
                                repetition_penalty=1.2, seed=0))
    assert out.shape == (2, 11) and ((out >= 0) & (out < config.vocab_size)).all()
    np.testing.assert_array_equal(out[:, :5], ids)


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name,dtype", [("left_padding", "float32"), ("tied_embeddings", "float64"),
                                        ("heads_question_answering", "float32"), ("float64_yarn", "float64")])
def test_gradients_on_cupy(name, dtype):
    """The backward on the GPU: every gradient on CuPy, equal to NumPy's and within the fixtures' tolerance."""
    from test_gradients_golden import CASES, GRADIENTS, gradients_of, worst_excess

    loss, grads = gradients_of(name, dtype, device="cuda")
    assert all(_on_gpu(g) for g in grads.values()) and _on_gpu(loss)
    _, host = gradients_of(name, dtype)
    for key, value in grads.items():
        assert np.abs(to_numpy(value) - host[key]).max() <= SAME_BACKEND_TOL[dtype], key
    spec = CASES[name]["expectations"][dtype]
    key, error, margin = worst_excess(dict(grads, loss=loss), load_file(str(GRADIENTS / name / spec["file"])),
                                      spec["atol"], spec["rtol"])
    assert margin <= 0, f"{name} {dtype} on CuPy: {key} max abs error {error:.3g}"

"""GPU check: run the CuPy tests, then benchmark arcee_np on CuPy against transformers on the same GPU.

One command, run from the source tree on a machine with a CUDA GPU, CuPy, torch and transformers (it
installs nothing and needs no network)::

    PYTHONPATH=. python scripts/gpu_check.py --out gpu_check.json

What it does, in order:

1. ``pytest -q tests/test_gpu.py`` in a subprocess (CuPy vs NumPy on the golden fixtures and a random model,
   greedy generation token for token, the KV cache on the GPU);
2. builds ONE AFM-4.5B-shaped random model (36 layers, hidden 2560, intermediate 18432, 20 heads, 4 KV
   heads, head_dim 128, vocab 128004, YaRN factor 20 over 4096, 65536 positions, relu2; 4.62e9 weights) in
   float16 with transformers' ``ArceeForCausalLM(config)`` directly on the GPU, and hands the very same
   GPU buffers to arcee_np through DLPack (no copy, no disk: one 9.2 GB copy of the weights in total);
3. measures the device's copy bandwidth (a large device-to-device copy) for the decode roofline;
4. for batch 1 and 16: a 2048-token prefill (last row's logits only) and greedy generation of 128 new
   tokens after that prompt, for arcee_np, transformers eager and transformers sdpa; medians of
   ``--reps`` runs after a warm-up;
5. prints a table and writes JSON (``--out``, default ``$OUT/gpu_check.json`` when ``$OUT`` is set).

Numerics: TF32 stays off. CuPy uses TF32 for float32 matmuls only when ``CUPY_TF32`` is set to a positive
value; this script sets ``CUPY_TF32=0`` before CuPy is imported (the tests do the same) and turns torch's
``allow_tf32`` flags off. The benchmark itself runs in float16, where both sides accumulate matmuls in
float32 (cuBLAS ``CUBLAS_COMPUTE_32F``).

``--cpu-smoke`` (alias ``--dry-run``) runs the same code path on the CPU (NumPy and torch CPU) at a tiny
shape in a few seconds: ``tests/live/test_live_gpu_check_script.py`` runs it so the script cannot rot unnoticed.

A CUDA graph for the decode step is deliberately not attempted: arcee_np's decode step changes shapes
every token (the cache views grow by one position), allocates from CuPy's memory pool and reads the
cache length on the host, none of which stream capture allows without restructuring the model.
"""

from __future__ import annotations

import os

_TF32_BEFORE = os.environ.get("CUPY_TF32")
os.environ["CUPY_TF32"] = "0"  # before CuPy is imported anywhere: float32 matmuls in true float32

import argparse  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from the source tree without installing
    sys.path.insert(0, ROOT)

AFM_4_5B = dict(vocab_size=128004, hidden_size=2560, intermediate_size=18432, num_hidden_layers=36,
                num_attention_heads=20, num_key_value_heads=4, head_dim=128, hidden_act="relu2",
                max_position_embeddings=65536, rope_theta=10000.0, rms_norm_eps=1e-5,
                rope_scaling={"rope_type": "yarn", "factor": 20.0, "original_max_position_embeddings": 4096},
                tie_word_embeddings=False, bos_token_id=128000, eos_token_id=None, pad_token_id=None)
# the smoke shape keeps every feature of the real one (GQA, YaRN, untied head, relu2), only small
TINY = dict(AFM_4_5B, vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
            rope_scaling={"rope_type": "yarn", "factor": 20.0, "original_max_position_embeddings": 256},
            bos_token_id=1)
SIDES = ("arcee_np", "transformers_eager", "transformers_sdpa")


# ---------------------------------------------------------------------------------------------- devices
class Device:
    """What differs between the GPU run and the CPU smoke run: arrays, sync, memory, bandwidth."""

    def __init__(self, smoke: bool):
        import torch

        self.smoke = smoke
        self.torch = torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if smoke:
            self.name, self.arcee_device, self.torch_device, self.cupy = "cpu", "cpu", torch.device("cpu"), None
            self.description = f"CPU smoke run ({platform.processor() or platform.machine()})"
            return
        import cupy

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: torch sees no CUDA GPU (use --cpu-smoke to exercise the script on a CPU).")
        self.cupy = cupy
        self.name, self.arcee_device, self.torch_device = "cuda", "cuda", torch.device("cuda")
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        self.description = f"{name} ({props['totalGlobalMem'] / 2**30:.0f} GiB)"

    def sync(self):
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()
            self.torch.cuda.synchronize()

    def to_arcee(self, tensor):
        """A torch tensor as an array arcee_np takes, sharing its memory (DLPack on the GPU)."""
        tensor = tensor.detach()
        return self.cupy.from_dlpack(tensor) if self.cupy is not None else tensor.numpy()

    def shares_memory(self, array, tensor) -> bool:
        if self.cupy is not None:
            return int(array.data.ptr) == int(tensor.data_ptr())
        return bool(np.shares_memory(np.asarray(array), tensor.detach().numpy()))

    def free(self):
        """Give cached blocks back so the next side starts from the same memory state."""
        gc.collect()
        if self.cupy is not None:
            self.cupy.get_default_memory_pool().free_all_blocks()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def memory_gib(self, side: str, weight_bytes: int) -> float | None:
        """GPU memory a side used beyond the shared weights (None on the CPU)."""
        if self.cupy is None:
            return None
        if side == "arcee_np":  # blocks CuPy's pool holds after the run: its peak, since freed blocks stay cached
            return self.cupy.get_default_memory_pool().total_bytes() / 2**30
        return max(0, self.torch.cuda.max_memory_allocated() - weight_bytes) / 2**30

    def copy_bandwidth(self, nbytes: int, reps: int = 5) -> dict:
        """Device copy bandwidth, counting the bytes read and written (2 x size per copy)."""
        if self.cupy is None:
            src = np.ones(nbytes // 4, dtype=np.float32)
            dst = np.empty_like(src)
            np.copyto(dst, src)
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                np.copyto(dst, src)
                times.append(time.perf_counter() - start)
            seconds, method = statistics.median(times), "numpy.copyto (host memory)"
        else:
            cp = self.cupy
            src = cp.ones(nbytes // 4, dtype=cp.float32)
            dst = cp.empty_like(src)
            dst.data.copy_from_device_async(src.data, src.nbytes)  # warm-up
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            for _ in range(reps):
                dst.data.copy_from_device_async(src.data, src.nbytes)  # cudaMemcpyAsync device to device
            end.record()
            end.synchronize()
            seconds, method = cp.cuda.get_elapsed_time(start, end) / 1e3 / reps, "cudaMemcpyAsync device-to-device"
        del src, dst
        self.free()
        return {"bytes": nbytes, "seconds": seconds, "gb_per_s": 2 * nbytes / seconds / 1e9, "method": method}


# ---------------------------------------------------------------------------------------------- the model
def build_models(device: Device, shape: dict, dtype: str, seed: int):
    """One random transformers model on the device, and an arcee_np model over the same weight buffers."""
    import torch
    import transformers

    import arcee_np
    from arcee_np.blocks.stacked import row_stack_of

    config = arcee_np.ArceeConfig(**shape)
    tconfig = transformers.ArceeConfig.from_dict(config.to_dict())  # the v4 spelling every release reads
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # build in the target dtype: no float32 copy on the way
    try:
        with torch.device(device.torch_device):
            tmodel = transformers.ArceeForCausalLM(tconfig)
    finally:
        torch.set_default_dtype(previous)
    tmodel.eval().requires_grad_(False)
    state = {name: tensor.detach() for name, tensor in tmodel.state_dict().items()}
    backbone = {name[len("model."):]: device.to_arcee(t) for name, t in state.items() if name.startswith("model.")}
    head = {name: device.to_arcee(t) for name, t in state.items() if not name.startswith("model.")}
    model = arcee_np.ArceeForCausalLM(config, backbone, head, dtype=dtype, device=device.arcee_device)
    # On NumPy (the CPU smoke run) a small model's q, k and v weights are copied into one stack a layer
    # (arcee_np/blocks/stacked.py); every other weight, and every weight on CuPy, is transformers' own buffer.
    stacked = {name for layer in range(config.num_hidden_layers)
               for names in [[f"layers.{layer}.self_attn.{part}_proj.weight" for part in "qkv"]]
               if row_stack_of([model.params[n] for n in names]) is not None for name in names}
    shared = all(device.shares_memory(model.params[name[len("model."):]], t) for name, t in state.items()
                 if name.startswith("model.") and name[len("model."):] not in stacked) and \
        all(device.shares_memory(model.head_params[name], t) for name, t in state.items()
            if not name.startswith("model."))
    weight_bytes = sum(p.numel() * p.element_size() for p in tmodel.parameters())
    parameters = sum(p.numel() for p in tmodel.parameters())
    del backbone, head, state
    return tmodel, model, config, {"parameters": parameters, "weight_bytes": weight_bytes, "weights_shared": shared,
                                   "stacked_copies": len(stacked)}


# ---------------------------------------------------------------------------------------------- the runners
def arcee_runner(model):
    from arcee_np.backend import to_numpy

    exact = "min_new_tokens" in inspect.signature(model.generate).parameters  # no early stop (eos is None anyway)

    def prefill(ids):
        return model(ids, use_cache=True, logits_to_keep=1).logits

    def generate(ids, new_tokens, streamer=None):
        kwargs = {"min_new_tokens": new_tokens} if exact else {}
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, streamer=streamer, **kwargs)
        return np.asarray(to_numpy(out))[:, ids.shape[1]:]

    return prefill, generate


def torch_runner(tmodel, attn: str, device: Device):
    import torch

    def use_attention():
        if hasattr(tmodel, "set_attn_implementation"):
            tmodel.set_attn_implementation(attn)
        else:  # older transformers read the attention function from the config at every forward
            tmodel.config._attn_implementation = attn

    @torch.inference_mode()
    def prefill(ids):
        use_attention()
        return tmodel(torch.as_tensor(ids, device=device.torch_device), use_cache=True, logits_to_keep=1).logits

    @torch.inference_mode()
    def generate(ids, new_tokens, streamer=None):
        use_attention()
        ids_t = torch.as_tensor(ids, device=device.torch_device)
        out = tmodel.generate(ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=streamer)
        return out[:, ids.shape[1]:].cpu().numpy()

    return prefill, generate


class StepClock:
    """A streamer (``put``/``end``, as both generate loops call it) that notes when each step's tokens reach
    the host: the prompt first, then one put per new token. Both loops copy the chosen ids to the host
    before ``put``, so each time stamp follows a finished step without any extra sync."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def timed(device: Device, fn, *args):
    device.sync()
    start = time.perf_counter()
    result = fn(*args)
    device.sync()
    return time.perf_counter() - start, result


def measure(device: Device, side: str, runner, ids, new_tokens: int, reps: int, warm_tokens: int,
            weight_bytes: int) -> dict:
    """Warm-up, then ``reps`` x (prefill forward, generate); medians.

    prefill: one forward over the prompt with the last row's logits only. generate: the whole call; its
    decode part is timed inside the call by a StepClock streamer, from the first new token (which the
    prefill yields) to the last: ``new_tokens - 1`` single-token steps, each ending with ids on the host.
    """
    prefill, generate = runner
    device.free()
    prefill(ids)  # warm-up: kernels compiled, cuBLAS heuristics chosen, pools filled
    generate(ids, warm_tokens)
    prefill_s, generate_s, first_s, decode_s, tokens = [], [], [], [], None
    for _ in range(reps):
        seconds, logits = timed(device, prefill, ids)
        prefill_s.append(seconds)
        del logits
        clock = StepClock()
        device.sync()
        start = time.perf_counter()
        tokens = generate(ids, new_tokens, clock)
        device.sync()
        generate_s.append(time.perf_counter() - start)
        assert len(clock.times) == new_tokens + 1, (side, len(clock.times))  # the prompt, then each new token
        first_s.append(clock.times[1] - start)
        decode_s.append(clock.times[-1] - clock.times[1])
    batch, length = ids.shape
    pre, gen, decode = statistics.median(prefill_s), statistics.median(generate_s), statistics.median(decode_s)
    steps = new_tokens - 1
    result = {
        "side": side, "batch": batch, "prompt": length, "new_tokens": new_tokens, "reps": reps,
        "prefill_s": pre, "prefill_tok_s": batch * length / pre,
        "first_token_s": statistics.median(first_s),
        "generate_s": gen, "generate_tok_s": batch * new_tokens / gen,
        "decode_s": decode, "decode_tok_s": batch * steps / decode, "decode_ms_per_step": 1e3 * decode / steps,
        "extra_memory_gib": device.memory_gib(side, weight_bytes),
        "runs": {"prefill_s": prefill_s, "generate_s": generate_s, "first_token_s": first_s, "decode_s": decode_s},
    }
    tokens = np.asarray(tokens)
    assert tokens.shape == (batch, new_tokens), (side, tokens.shape)
    device.free()
    return result, tokens


def roofline(config, weight_bytes: int, bandwidth: float, batch: int, prompt: int, new_tokens: int,
             itemsize: int) -> dict:
    """Decode tokens/s if every step only streamed its bytes at the measured copy bandwidth."""
    mean_context = prompt + new_tokens / 2
    kv_bytes = (batch * config.num_hidden_layers * 2 * config.num_key_value_heads * config.head_dim
                * mean_context * itemsize)
    return {"weights_only_tok_s": batch * bandwidth / weight_bytes,
            "weights_and_kv_tok_s": batch * bandwidth / (weight_bytes + kv_bytes),
            "kv_bytes_per_step": kv_bytes}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """How far two greedy continuations agree: per row, the index of the first differing token."""
    first = []
    for row_a, row_b in zip(a, b, strict=False):
        diff = np.nonzero(row_a != row_b)[0]
        first.append(int(diff[0]) if diff.size else None)
    return {"identical_rows": sum(f is None for f in first), "rows": len(first), "first_difference": first}


# ---------------------------------------------------------------------------------------------- tests
def run_tests(timeout: int) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, CUPY_TF32="0", PYTHONPATH=path)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        output, returncode = output + f"\n[gpu_check: pytest killed after {timeout} s]", None
    lines = [line for line in output.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    status = {0: "passed", 5: "nothing ran (no CuPy or no GPU: the module skips)", None: "timed out"}.get(
        returncode, "FAILED")
    return {"command": " ".join(command[1:]), "returncode": returncode, "status": status, "summary": summary,
            "seconds": time.perf_counter() - start, "output_tail": "\n".join(lines[-40:])}


# ---------------------------------------------------------------------------------------------- main
def versions() -> dict:
    import torch
    import transformers

    import arcee_np

    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
           "transformers": transformers.__version__, "arcee_np": arcee_np.__version__}
    try:
        import cupy

        out["cupy"] = cupy.__version__
        out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:
        out["cupy"] = None
    return out


def print_table(report: dict) -> None:
    m = report["model"]
    print(f"\n{report['device']}: {m['parameters'] / 1e9:.2f}e9 weights, {m['dtype']}, "
          f"{m['weight_bytes'] / 1e9:.2f} GB; copy bandwidth {report['bandwidth']['gb_per_s']:.0f} GB/s; "
          f"TF32 off")
    head = f"{'batch':>5} {'side':<20}{'prefill tok/s':>15}{'decode tok/s':>14}{'ms/step':>9}{'vs eager':>10}" \
           f"{'vs sdpa':>9}{'roofline':>10}"
    print(head)
    print("-" * len(head))
    for r in report["results"]:
        ratios = report["ratios"].get(str(r["batch"]), {})
        roof = report["roofline"][str(r["batch"])]["weights_and_kv_tok_s"]
        vs_eager = vs_sdpa = ""
        if r["side"] == "arcee_np":
            vs_eager = f"{ratios['vs_eager']['decode']:.2f}x" if "vs_eager" in ratios else "-"
            vs_sdpa = f"{ratios['vs_sdpa']['decode']:.2f}x" if "vs_sdpa" in ratios else "-"
        print(f"{r['batch']:>5} {r['side']:<20}{r['prefill_tok_s']:>15.0f}{r['decode_tok_s']:>14.1f}"
              f"{r['decode_ms_per_step']:>9.2f}{vs_eager:>10}{vs_sdpa:>9}{roof:>10.0f}")
    print("decode ratios are arcee_np / transformers tokens/s; roofline = decode tok/s if a step only streamed "
          "the weights and the mean KV cache at the copy bandwidth")
    for batch, a in report["agreement"].items():
        caveat = " (float16: near-ties may part ways; the float32 tests check equality)" \
            if report["model"]["dtype"] == "float16" else ""
        print(f"greedy tokens, batch {batch}, arcee_np vs transformers eager: {a['identical_rows']}/{a['rows']} rows "
              f"identical{caveat}")
    for note in report["skipped"]:
        print("skipped:", note)
    t = report["tests"]
    print(f"tests: {t['status']}: {t['summary']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON path (default: $OUT/gpu_check.json if $OUT is set, else gpu_check.json)")
    parser.add_argument("--cpu-smoke", "--dry-run", dest="smoke", action="store_true",
                        help="the same code path on the CPU (NumPy, torch CPU) at a tiny shape")
    parser.add_argument("--dtype", choices=("float16", "float32"),
                        help="weights and activations (default float16; float32 in the smoke run)")
    parser.add_argument("--batches", help="comma-separated batch sizes (default 1,16; 1,3 in the smoke run)")
    parser.add_argument("--prefill", type=int, help="prompt length (default 2048; 16 in the smoke run)")
    parser.add_argument("--new-tokens", type=int, help="greedy tokens generated (default 128; 6 in the smoke run)")
    parser.add_argument("--reps", type=int, help="timed runs per measurement, after one warm-up (default 3; 1 smoke)")
    parser.add_argument("--warm-tokens", type=int, default=2, help="tokens generated in the warm-up")
    parser.add_argument("--sides", default=",".join(SIDES), help="which runners, comma-separated")
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/test_gpu.py first")
    parser.add_argument("--test-timeout", type=int, default=200, help="seconds allowed to the tests")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no measurement that would likely end past this many seconds (whole script)")
    parser.add_argument("--bandwidth-mib", type=int, help="copy size for the bandwidth (default 2048; 64 smoke)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    smoke = args.smoke
    prompt = args.prefill or (16 if smoke else 2048)
    new_tokens = args.new_tokens or (6 if smoke else 128)
    reps = args.reps or (1 if smoke else 3)
    dtype = args.dtype or ("float32" if smoke else "float16")
    batches = [int(b) for b in (args.batches or ("1,3" if smoke else "1,16")).split(",") if b]
    if new_tokens < 2 or prompt < 1 or reps < 1 or not batches:
        parser.error("need --new-tokens >= 2, --prefill >= 1, --reps >= 1 and at least one batch size")
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown sides {sorted(unknown)}; choose from {', '.join(SIDES)}")
    out_path = args.out or os.path.join(os.environ.get("OUT") or ".", "gpu_check.json")

    import transformers

    transformers.logging.set_verbosity_error()

    report = {"mode": "cpu-smoke" if smoke else "gpu", "argv": sys.argv[1:] if argv is None else list(argv),
              "versions": versions(), "skipped": [],
              "tf32": {"CUPY_TF32": os.environ["CUPY_TF32"], "CUPY_TF32_before": _TF32_BEFORE,
                       "torch_allow_tf32": False}}
    report["tests"] = {"status": "not run", "summary": "--skip-tests", "returncode": None} if args.skip_tests \
        else run_tests(args.test_timeout)
    print(f"tests/test_gpu.py: {report['tests']['status']}: {report['tests']['summary']}", flush=True)

    try:
        benchmark(report, args, smoke, dtype, prompt, new_tokens, reps, batches, sides, started)
    except BaseException as err:  # keep what was measured, and say what broke
        report["error"] = "".join(traceback.format_exception(type(err), err, err.__traceback__))[-4000:]
        print(report["error"], file=sys.stderr)
        if not isinstance(err, Exception):
            raise
    finally:
        report["elapsed_s"] = time.perf_counter() - started
        report["ok"] = "error" not in report and report["tests"]["status"] not in ("FAILED", "timed out") \
            and not any("failed" in note for note in report["skipped"])
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    if "results" in report and "model" in report:
        print_table(report)
    print(f"wrote {out_path} ({report['elapsed_s']:.0f} s in all){'' if report['ok'] else '; NOT OK: see above'}")
    return report


def benchmark(report: dict, args, smoke: bool, dtype: str, prompt: int, new_tokens: int, reps: int,
              batches: list[int], sides: list[str], started: float) -> None:
    """Build the model once, measure the bandwidth, then every side at every batch; fills ``report``."""
    device = Device(smoke)
    report["device"] = device.description
    start = time.perf_counter()
    tmodel, model, config, info = build_models(device, TINY if smoke else AFM_4_5B, dtype, args.seed)
    device.sync()
    report["model"] = dict(info, shape=TINY if smoke else AFM_4_5B, dtype=dtype,
                           build_seconds=time.perf_counter() - start)
    print(f"model built in {report['model']['build_seconds']:.1f} s: {info['parameters']:,} weights, shared with "
          f"arcee_np: {info['weights_shared']}", flush=True)
    report["bandwidth"] = device.copy_bandwidth((args.bandwidth_mib or (64 if smoke else 2048)) * 2**20)
    itemsize = np.dtype(dtype).itemsize

    runners = {"arcee_np": lambda: arcee_runner(model),
               "transformers_eager": lambda: torch_runner(tmodel, "eager", device),
               "transformers_sdpa": lambda: torch_runner(tmodel, "sdpa", device)}
    rng = np.random.default_rng(args.seed)
    report.update(results=[], ratios={}, roofline={}, agreement={})
    last_duration = {}
    for batch in batches:
        ids = rng.integers(3, config.vocab_size, size=(batch, prompt), dtype=np.int64)
        report["roofline"][str(batch)] = roofline(config, info["weight_bytes"], report["bandwidth"]["gb_per_s"] * 1e9,
                                                  batch, prompt, new_tokens, itemsize)
        tokens, by_side = {}, {}
        for side in sides:
            elapsed = time.perf_counter() - started
            estimate = 2 * last_duration.get(side, 0.0)  # a bigger batch of the same side: about twice as long
            if elapsed + estimate > args.budget_s:
                report["skipped"].append(f"{side} at batch {batch}: {elapsed:.0f} s spent, about {estimate:.0f} s "
                                         f"more would pass --budget-s {args.budget_s:.0f}")
                continue
            t0 = time.perf_counter()
            failure = None
            try:
                result, tokens[side] = measure(device, side, runners[side](), ids, new_tokens, reps,
                                               args.warm_tokens, info["weight_bytes"])
            except Exception as err:  # one failing side (out of memory ...) must not lose the others' numbers
                failure = f"{side} at batch {batch} failed: {type(err).__name__}: {err}"
            if failure is not None:  # outside the except block, so the traceback's arrays can be freed
                report["skipped"].append(failure)
                print(failure, flush=True)
                device.free()
                continue
            last_duration[side] = time.perf_counter() - t0
            report["results"].append(result)
            by_side[side] = result
            print(f"batch {batch:>3} {side:<20} prefill {result['prefill_tok_s']:9.0f} tok/s   decode "
                  f"{result['decode_tok_s']:8.1f} tok/s  ({last_duration[side]:.0f} s)", flush=True)
        ratios = {}
        if "arcee_np" in by_side:
            for other, key in (("transformers_eager", "vs_eager"), ("transformers_sdpa", "vs_sdpa")):
                if other in by_side:
                    ratios[key] = {"prefill": by_side["arcee_np"]["prefill_tok_s"] / by_side[other]["prefill_tok_s"],
                                   "decode": by_side["arcee_np"]["decode_tok_s"] / by_side[other]["decode_tok_s"]}
        report["ratios"][str(batch)] = ratios
        if "arcee_np" in tokens and "transformers_eager" in tokens:
            report["agreement"][str(batch)] = agreement(tokens["arcee_np"], tokens["transformers_eager"])


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

"""Memory and time of a quantized GGUF of the AFM-4.5B shape in arcee_np: load, then one 16-token forward.

How to run (from the repository root; building needs torch + transformers for llama.cpp's converter and an
installed llama.cpp: a checkout's convert_hf_to_gguf.py and llama-cpp-python or a llama-quantize binary)::

    python scripts/bench_gguf.py --converter PATH/TO/convert_hf_to_gguf.py --layers 2     # a 2-layer slice
    python scripts/bench_gguf.py --converter PATH/TO/convert_hf_to_gguf.py                # all 36 layers

The first run builds a random bfloat16 checkpoint of AFM-4.5B's shape (36 layers, hidden 2560, 20 heads of
128 over 4 KV heads, intermediate 18432, vocab 128004, relu2, YaRN factor 20 over 4096 positions, 65536
max positions; ``--layers N`` keeps the first N layers), converts it to a BF16 GGUF with llama.cpp's
converter and quantizes it (``--type``, default Q4_K_M: llama.cpp's usual 4-bit mix of Q4_K and Q6_K) into
``--cache`` (default ``~/.cache/arcee_np/bench_gguf``); later runs reuse the file. The checkpoint is written one
shard at a time (under 1 GB of memory); the full build needs 20+ GB of disk (checkpoint 9.2 GB, BF16 GGUF
9.2 GB, deleted after quantizing, Q4_K_M 2.7 GB) and, on 2 busy cores, an hour or more.

The measurement runs in a fresh process: ``ArceeForCausalLM.from_pretrained(file.gguf)`` (float32; the
quantized matrices stay in their blocks and are dequantized a row tile at a time where used), then one
forward of 16 token ids. A thread samples /proc/self/status every 5 ms; the script prints the load and
forward times, the peak anonymous memory (RssAnon: what the process itself allocated) and the peak RSS
(VmHWM: also the file pages the memory map brought in), with the goals RssAnon <= 3 GB and VmHWM <= file
size + 3 GB, and the CPU and load average (timings on a busy machine are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

AFM = dict(vocab_size=128004, hidden_size=2560, intermediate_size=18432, num_hidden_layers=36,
           num_attention_heads=20, num_key_value_heads=4, head_dim=128, hidden_act="relu2",
           max_position_embeddings=65536, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
           eos_token_id=2, pad_token_id=0, rope_theta=10000.0,
           rope_scaling={"rope_type": "yarn", "factor": 20.0, "original_max_position_embeddings": 4096})
GB = 1e9
TOKENS = 16


def build(folder: Path, layers: int, seed: int = 0) -> None:
    """A random AFM-shaped checkpoint in bfloat16 (matrices ~ N(0, 0.02), norms 1), with a small tokenizer,
    written one shard (a layer, or the embedding / head) at a time so building needs well under 1 GB."""
    import ml_dtypes

    from arcee_np import ArceeConfig, ArceeForCausalLM
    from arcee_np.io.checkpoint import INDEX_NAME, backbone_shapes
    from arcee_np.io.safetensors import write_safetensors
    from llama_cpp_tools import tokenizer

    config = ArceeConfig(**{**AFM, "num_hidden_layers": layers})
    config.extra["architectures"] = ["ArceeForCausalLM"]
    config.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    rng = np.random.default_rng(seed)
    shapes = {"model." + k: v for k, v in backbone_shapes(config).items()} | ArceeForCausalLM.head_shapes(config)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        part = name.split(".")
        groups.setdefault(f"layer{part[2]}" if part[1:2] == ["layers"] else part[-2], []).append(name)
    weight_map, total = {}, 0
    for number, names in enumerate(groups.values(), start=1):
        shard = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in names:
            if name.endswith("norm.weight"):
                values = np.ones(shapes[name], dtype=np.float32)
            else:
                values = rng.standard_normal(shapes[name], dtype=np.float32)
                values *= 0.02
            tensors[name] = values.astype(ml_dtypes.bfloat16)
            del values
        write_safetensors(folder / shard, tensors, metadata={"format": "pt"})
        weight_map.update({name: shard for name in names})
        total += sum(t.nbytes for t in tensors.values())
        del tensors
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2))


def prepare(args) -> Path:
    """The quantized file in the cache, built once."""
    from llama_cpp_tools import convert, quantize

    name = f"afm-shape-{args.layers}l"
    out = args.cache / f"{name}-{args.type}.gguf"
    if out.exists():
        return out
    if args.converter is None:
        raise SystemExit(f"{out} is not built yet: give --converter PATH/TO/convert_hf_to_gguf.py")
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = args.cache / name
    if not (folder / "config.json").exists():
        print(f"building {folder} ...", flush=True)
        build(folder, args.layers)
    source = args.cache / f"{name}-BF16.gguf"
    print(f"converting to {source} ...", flush=True)
    convert(args.converter, folder, "BF16", source)
    print(f"quantizing to {out} ...", flush=True)
    quantize(args.quantize, source, out, args.type, threads=os.cpu_count() or 1)
    source.unlink()
    return out


# ---------------------------------------------------------------------------------------------- measuring
def _status() -> dict[str, int]:
    """VmRSS, RssAnon, VmHWM of this process in bytes."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Records the peak of RssAnon and VmRSS every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak_anon, self.peak_rss, self._done = interval, 0, 0, threading.Event()

    def run(self):
        while not self._done.is_set():
            status = _status()
            self.peak_anon = max(self.peak_anon, status["RssAnon"])
            self.peak_rss = max(self.peak_rss, status["VmRSS"])
            time.sleep(self.interval)

    def stop(self):
        self._done.set()
        self.join()
        status = _status()
        self.peak_anon = max(self.peak_anon, status["RssAnon"])


def measure(path: Path) -> dict:
    """Load ``path`` and run one forward, sampling memory (run this in a fresh process)."""
    from arcee_np import ArceeForCausalLM

    before = _status()
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    model = ArceeForCausalLM.from_pretrained(path)
    loaded = time.perf_counter()
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(1, TOKENS), dtype=np.int64)
    logits = model(ids).logits
    done = time.perf_counter()
    sampler.stop()
    after = _status()
    return {"file": str(path), "file_bytes": path.stat().st_size, "layers": model.config.num_hidden_layers,
            "load_s": loaded - start, "forward_s": done - loaded, "tokens": TOKENS,
            "finite": bool(np.isfinite(logits).all()), "peak_rss_anon": sampler.peak_anon, "vm_hwm": after["VmHWM"],
            "rss_anon_before": before["RssAnon"], "types": sorted({getattr(w, "stored_dtype", "array") for w in
                                                                   model.params.values()})}


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(result: dict) -> None:
    anon_ok = result["peak_rss_anon"] <= 3 * GB
    rss_ok = result["vm_hwm"] <= result["file_bytes"] + 3 * GB
    print(f"file: {result['file']} ({result['file_bytes'] / GB:.2f} GB, {result['layers']} layers, "
          f"types {', '.join(result['types'])})")
    print(f"load: {result['load_s']:.1f} s; forward of {result['tokens']} tokens: {result['forward_s']:.1f} s "
          f"(logits finite: {result['finite']})")
    print(f"peak RssAnon: {result['peak_rss_anon'] / GB:.2f} GB (goal <= 3 GB: {'met' if anon_ok else 'MISSED'})")
    print(f"peak RSS (VmHWM): {result['vm_hwm'] / GB:.2f} GB (goal <= file + 3 GB = "
          f"{result['file_bytes'] / GB + 3:.2f} GB: {'met' if rss_ok else 'MISSED'})")
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores, BLAS threads {result['blas_threads']}; load average before: "
          f"{', '.join(f'{x:.2f}' for x in result['load_average'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--converter", type=Path, help="convert_hf_to_gguf.py of a llama.cpp checkout (to build)")
    parser.add_argument("--quantize", default="api", help="'api' (llama-cpp-python) or the path of llama-quantize")
    parser.add_argument("--layers", type=int, default=36, help="decoder layers to keep (default: all 36)")
    parser.add_argument("--type", default="Q4_K_M", help="quantization (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "arcee_np" / "bench_gguf")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh process's job
    parser.add_argument("--blas-threads", type=int, help="BLAS threads of the measured process (OPENBLAS_NUM_THREADS, "
                        "OMP_NUM_THREADS; default: the library's own choice; 1 avoids oversubscribing a busy machine)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    path = prepare(args)
    load_average = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if args.blas_threads:
        env.update(OPENBLAS_NUM_THREADS=str(args.blas_threads), OMP_NUM_THREADS=str(args.blas_threads))
    run = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["load_average"] = load_average
    result["blas_threads"] = args.blas_threads or "default"
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

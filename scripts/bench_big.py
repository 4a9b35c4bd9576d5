"""Benchmark arcee_np on the real model's size: an AFM-4.5B-shaped checkpoint in bfloat16.

AFM-4.5B: 36 layers, hidden 2560, 20 query / 4 KV heads of 128, intermediate 18432, vocab 128004, ReLU²,
YaRN (factor 20 over 4096 original positions, 65536 in all), 4.6 B parameters, 9.2 GB in bfloat16.

The checkpoint (random weights in the real shapes) is written once by transformers into a cache folder
(``--layers N`` keeps the first N layers: a slice with the same matrices). Then, for each dtype mode and
weight policy, a fresh worker process loads it and runs a forward of ``--tokens`` tokens; the driver samples
the worker's /proc/PID/status every 100 ms from outside (VmRSS, RssAnon) and the worker reports its own
VmHWM. RssAnon is the process's own memory; VmRSS also counts the pages of the memory-mapped file, which
the kernel can drop and reread. Reported: load time, forward time (median of ``--repeats``), peak RSS and
peak RssAnon, next to the checkpoint's size.

    pip install -e ".[golden]"                        # transformers writes the checkpoint
    python scripts/bench_big.py --layers 4            # the 4-layer slice (1.09 B parameters, 2.2 GB)
    python scripts/bench_big.py                       # the full 36 layers (needs ~10 GB of RAM once, to write)
    python scripts/bench_big.py --modes float32:per_use,float64:per_use --json big.json
    python scripts/bench_big.py --layers 4 --tokens 16384 --logits last --modes float32:auto --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

AFM_SHAPE = dict(vocab_size=128004, hidden_size=2560, intermediate_size=18432, num_hidden_layers=36,
                 num_attention_heads=20, num_key_value_heads=4, head_dim=128, hidden_act="relu2",
                 max_position_embeddings=65536, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001,
                 tie_word_embeddings=False, rope_theta=10000.0,
                 rope_scaling={"rope_type": "yarn", "factor": 20.0, "original_max_position_embeddings": 4096})
# Reading /proc/PID/status slows a process whose memory map is large (each read walks its memory counters
# under the map's lock): sampled every 10 ms, a per-use forward ran 1.7x slower. 100 ms costs nothing
# measurable and still sees the steady peaks of a forward (its activations and tiles live for its duration).
SAMPLE_SECONDS = 0.1
DEFAULT_MODES = ("float32:at_load", "float32:per_use", "float64:per_use", "bfloat16:per_use", "float16:per_use")


def status(pid="self") -> dict[str, int]:
    """The memory lines of /proc/PID/status, in bytes (VmRSS, VmHWM, RssAnon, RssFile ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    return out


# ---------------------------------------------------------------------------------------------- checkpoint
def write_checkpoint(path: str, layers: int, seed: int = 0) -> None:
    """A random AFM-shaped bfloat16 checkpoint written by transformers (weights N(0, 0.02), norms 1)."""
    import torch
    import transformers

    config = transformers.ArceeConfig(**dict(AFM_SHAPE, num_hidden_layers=layers))
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters are created in bfloat16: no float32 copy of the model
    try:
        with torch.device("meta"):
            model = transformers.ArceeForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, config.initializer_range)
    tmp = path + ".partial"
    model.save_pretrained(tmp, max_shard_size="2GB")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- worker
def worker(path: str, dtype: str, widen: str, tokens: int, repeats: int, logits: str) -> dict:
    """Load, run ``repeats`` forwards of ``tokens`` tokens (the logits of every position, or of the last
    with ``logits="last"``); report times and this process's peaks."""
    import numpy as np

    from arcee_np import ArceeForCausalLM

    start = time.perf_counter()
    model = ArceeForCausalLM.from_pretrained(path, dtype=dtype, widen=widen)
    load = time.perf_counter() - start
    after_load = status()
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, tokens))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model(ids, use_cache=False, logits_to_keep=1 if logits == "last" else 0).logits
        seconds.append(time.perf_counter() - start)
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all()
    peak = status()
    return {"load_s": load, "forward_s": statistics.median(seconds), "forward_runs_s": seconds,
            "rss_after_load": after_load["VmRSS"], "anon_after_load": after_load["RssAnon"],
            "vm_hwm": peak["VmHWM"]}


def run_worker(path: str, dtype: str, widen: str, tokens: int, repeats: int, threads: int, logits: str) -> dict:
    """One worker process, its memory sampled from outside every SAMPLE_SECONDS."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, __file__, "--worker", path, dtype, widen, str(tokens), str(repeats),
                             logits],
                            stdout=subprocess.PIPE, text=True, env=env)
    peaks = {"VmRSS": 0, "RssAnon": 0}

    def sample():
        while proc.poll() is None:
            try:
                now = status(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            for key in peaks:
                peaks[key] = max(peaks[key], now.get(key, 0))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"worker {dtype}/{widen} failed with status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss=peaks["VmRSS"], peak_anon=peaks["RssAnon"])
    return result


# ---------------------------------------------------------------------------------------------- driver
def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=36, help="decoder layers (36: the full AFM-4.5B shape)")
    parser.add_argument("--tokens", type=int, default=16, help="tokens in the forward (batch 1)")
    parser.add_argument("--repeats", type=int, default=3, help="forwards per worker (the median is reported)")
    parser.add_argument("--logits", choices=["all", "last"], default="all",
                        help="logits of every position (default) or of the last one (for long prompts)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="comma-separated dtype:widen pairs (default: %(default)s)")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/arcee_np_bench"),
                        help="where the checkpoint is written once (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        path, dtype, widen, tokens, repeats, logits = args.worker
        print(json.dumps(worker(path, dtype, widen, int(tokens), int(repeats), logits)))
        return None

    path = os.path.join(args.cache, f"afm-4.5b-shape-{args.layers}-layers-bf16")
    if not os.path.isdir(path):
        print(f"writing the checkpoint to {path} (once) ...", flush=True)
        os.makedirs(args.cache, exist_ok=True)
        write_checkpoint(path, args.layers)
    file_bytes = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "unknown CPU")
    print(f"AFM-4.5B shape, {args.layers} layers, bfloat16 file {gib(file_bytes)} GiB; forward of 1 x {args.tokens} "
          f"tokens ({args.logits} logits), {args.threads} threads, median of {args.repeats}; {cpu}")
    header = f"{'dtype':9} {'widen':8} {'load s':>7} {'forward s':>10} {'peak RSS GiB':>13} {'peak anon GiB':>14}"
    print(header)
    results = {"file_bytes": file_bytes, "layers": args.layers, "tokens": args.tokens, "cpu": cpu, "runs": []}
    for mode in args.modes.split(","):
        dtype, widen = mode.split(":")
        r = run_worker(path, dtype, widen, args.tokens, args.repeats, args.threads, args.logits)
        r.update(dtype=dtype, widen=widen)
        results["runs"].append(r)
        print(f"{dtype:9} {widen:8} {r['load_s']:7.1f} {r['forward_s']:10.2f} "
              f"{gib(max(r['peak_rss'], r['vm_hwm'])):>13} {gib(r['peak_anon']):>14}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

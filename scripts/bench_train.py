"""Benchmark one training step of arcee_np against transformers + torch on the CPU, in the same run.

A step is what training does: forward with the causal-LM loss, backward, global-norm clipping at 1.0 and an
AdamW update (decay 0.1 on matrices). Both sides train the shipped Shakespeare model (3.3M parameters,
vocab 4096, hidden 256, 4 layers, 8 heads / 2 KV heads, tied embeddings) on the same batch, by default
12 x 256 tokens as the shipped model was trained, in float32 with eager attention. Four worker processes:
arcee_np and transformers, each with and without gradient checkpointing, driven alternately so that only
one computes at a time. Reported: the median step time over ``--repeats``, the ratio arcee_np /
transformers in speed, and each worker's memory from /proc/self/status: VmHWM (the peak resident set) and
the peak above what the process held before its first step (the training step's own memory).

    python scripts/bench_train.py                     # 12 x 256, 2 threads, 5 repeats
    python scripts/bench_train.py --repeats 9 --json bench_train.json

Needs the ``golden`` extra (torch + transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SIDES = ("arcee_np", "transformers")


def memory_kib() -> dict:
    """VmHWM (peak resident), VmRSS and RssAnon of this process, in KiB (/proc/self/status)."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0])
    return fields


# ---------------------------------------------------------------------------------------------- workers
def _arcee_step(path, checkpointing):
    import numpy as np

    from arcee_np import ArceeForCausalLM
    from arcee_np.training import AdamW, clip_grad_norm, loss_and_gradients, model_parameters

    model = ArceeForCausalLM.from_pretrained(path)
    weights = model_parameters(model)
    optimizer = AdamW(weights, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                      no_decay=[n for n, v in weights.items() if v.ndim < 2])

    def step(ids):
        batch = np.asarray(ids, dtype=np.int64)
        loss, grads = loss_and_gradients(model, batch, labels=batch, use_cache=False, checkpointing=checkpointing)
        grads, _ = clip_grad_norm(grads, 1.0)
        optimizer.step(grads)
        return float(loss)

    return step


def _transformers_step(path, checkpointing, threads):
    import torch
    from transformers import ArceeForCausalLM

    torch.set_num_threads(threads)
    model = ArceeForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    if checkpointing:
        model.activation_checkpointing_enable()
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.95))

    def step(ids):
        batch = torch.tensor(ids)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def worker_main(side, path, threads, checkpointing):
    """Serve requests on stdin (one JSON line in, one out): a timed step, or the memory figures."""
    step = _arcee_step(path, checkpointing) if side == "arcee_np" else _transformers_step(path, checkpointing, threads)
    loaded = memory_kib()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "step":
            start = time.perf_counter()
            loss = step(request["ids"])
            reply = {"seconds": time.perf_counter() - start, "loss": loss}
        else:
            reply = {"loaded": loaded, "now": memory_kib()}
        print(json.dumps(reply), flush=True)


# ---------------------------------------------------------------------------------------------- driver
class Worker:
    def __init__(self, side, path, threads, checkpointing):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        self.side, self.checkpointing = side, checkpointing
        argv = [sys.executable, __file__, "--worker", side, "--path", path, "--threads", str(threads)]
        self.proc = subprocess.Popen(argv + (["--checkpointing"] if checkpointing else []), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.proc.stdout.readline())["ready"]

    @property
    def label(self):
        return self.side + (" + checkpointing" if self.checkpointing else "")

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per worker (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="checkpoint folder (default: the shipped Shakespeare model)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.path, args.threads, args.checkpointing)

    import numpy as np

    from arcee_np.shipped import default_model_path

    path = args.model or default_model_path()
    vocab = json.load(open(os.path.join(path, "config.json")))["vocab_size"]
    batches = [np.random.default_rng(i).integers(3, vocab, (args.batch, args.seq)).tolist()
               for i in range(args.repeats + 2)]
    workers = [Worker(side, path, args.threads, ck) for ck in (False, True) for side in SIDES]
    times = {w.label: [] for w in workers}
    losses = {w.label: [] for w in workers}
    for i, ids in enumerate(batches):  # the same batches in the same order for everyone; the first two warm up
        for w in (workers if i % 2 == 0 else workers[::-1]):
            reply = w.ask(op="step", ids=ids)
            losses[w.label].append(reply["loss"])
            if i >= 2:
                times[w.label].append(reply["seconds"])
    memory = {w.label: w.ask(op="memory") for w in workers}
    for w in workers:
        w.close()

    results = {"cpu": cpu_model(), "args": {k: v for k, v in vars(args).items() if k not in ("worker", "path")},
               "model": path, "workers": {}}
    for w in workers:
        mem = memory[w.label]
        results["workers"][w.label] = {
            "median_step_s": statistics.median(times[w.label]), "steps_s": times[w.label],
            "first_loss": losses[w.label][0], "last_loss": losses[w.label][-1],
            "peak_rss_mib": mem["now"]["VmHWM"] / 1024, "rss_anon_mib": mem["now"]["RssAnon"] / 1024,
            "step_peak_mib": (mem["now"]["VmHWM"] - mem["loaded"]["VmRSS"]) / 1024}
    r = results["workers"]
    results["speed_ratio"] = {"plain": r["transformers"]["median_step_s"] / r["arcee_np"]["median_step_s"],
                              "checkpointing": r["transformers + checkpointing"]["median_step_s"]
                              / r["arcee_np + checkpointing"]["median_step_s"]}
    print(f"one training step (forward, backward, clip, AdamW), {args.batch} x {args.seq} tokens, float32, "
          f"{args.threads} threads, medians of {args.repeats}; {results['cpu']}")
    print(f"{'':30}{'step s':>9}{'peak RSS MiB':>14}{'step peak MiB':>15}{'RssAnon MiB':>13}{'loss 1st/last':>16}")
    for label, w in r.items():
        print(f"{label:30}{w['median_step_s']:9.3f}{w['peak_rss_mib']:14.0f}{w['step_peak_mib']:15.0f}"
              f"{w['rss_anon_mib']:13.0f}{w['first_loss']:8.4f}/{w['last_loss']:.4f}")
    print(f"speed arcee_np / transformers: {results['speed_ratio']['plain']:.2f} (plain), "
          f"{results['speed_ratio']['checkpointing']:.2f} (checkpointing)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

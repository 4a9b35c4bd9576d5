"""Benchmark arcee_np against transformers on the CPU, in the same run: prefill, decode, long context.

Every side loads the same random float32 checkpoint (125M parameters by default: vocab 32000, hidden 768,
12 layers, 12 heads, 4 KV heads, intermediate 3072) in its own worker process; the driver sends the same
requests to each in turn, so only one computes at a time. Sides: ``arcee_np`` (its default, tiled
attention), ``transformers-sdpa`` (transformers' default) and ``transformers-eager``. Reported: medians
over ``--repeats``, tokens/s, each worker's peak RSS (VmHWM), and the ratios arcee_np / transformers.

Default run (the short workload):

* prefill: one 1 x ``--prefill`` forward, logits of the last row only on every side (tokens/s);
* decode: greedy generation of ``--new-tokens`` after a ``--prompt``-token prompt (new tokens/s), plus a
  bare chain of NumPy matrix-vector products over the same weight matrices: the memory-bandwidth
  ceiling of a decode step on this machine;
* when llama-cpp-python imports (``pip install "arcee-np[llama_cpp]"``), llama.cpp too, on an F32 GGUF of
  the same checkpoint (flash attention off).

``--speculative``: arcee_np alone on the shipped Shakespeare model (or ``--model PATH``): greedy decode of
``--new-tokens`` tokens after a few prompts, plain against speculative decoding with a draft made of the
model's first ``--draft-layers`` layers (the same embeddings, final norm and head) and against prompt-lookup
decoding; reports new tokens/s, the share of draft tokens accepted, and that every output equals plain greedy.

``--long``: prefill at each of ``--lengths`` (512, 2048, 8192, 16384) in a fresh process per side and
length, so that each peak RSS belongs to one length (transformers eager only up to ``--eager-max``, its
[H, T, T] scores growing with the square of T; llama.cpp with flash attention off and on when it imports),
and decode of ``--new-tokens`` tokens after an ``--decode-cache``-token prefill (8192). ``--plot FILE``
draws time and peak memory against length.

``--baseline DIR``: another checkout's arcee_np (the folder holding its package) runs as one more side,
``arcee_np@baseline``, so a change and what it changed are measured in the same run.

``--profile``: arcee_np alone, one prefill of ``--prefill`` tokens and one decode step split into the
model's parts against this machine's roofs (scripts/bench_profile.py).

    pip install -e ".[golden]"                          # torch==2.13.0 (CPU) + transformers==5.24.0
    python scripts/bench.py --repeats 5 --json bench.json
    python scripts/bench.py --long --plot docs/images/long_context.png --json long.json
    python scripts/bench.py --profile
    python scripts/bench.py --speculative --draft-layers 1 --new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHAPE_125M = dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, intermediate_size=3072, max_position_embeddings=16384,
                  bos_token_id=1, eos_token_id=2)
SIDES = ("arcee_np", "transformers-sdpa", "transformers-eager")
LLAMA_CPP_SIDES = ("llama.cpp-f32", "llama.cpp-f32-fa")  # flash attention off and on


def peak_rss_mib() -> float:
    """VmHWM of this process (its peak resident memory) in MiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


# ---------------------------------------------------------------------------------------------- workers
class ArceeSide:
    def __init__(self, path):
        import numpy as np

        from arcee_np import ArceeForCausalLM, KVCache

        self.np, self.KVCache = np, KVCache
        self.model = ArceeForCausalLM.from_pretrained(path)

    def prefill(self, ids):
        self.model(self.np.asarray(ids), use_cache=False, logits_to_keep=1)

    def generate(self, ids, new_tokens):
        out = self.model.generate(self.np.asarray(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False)
        return out[0, len(ids[0]):].tolist()

    def decode_after(self, ids, new_tokens):
        """Prefill ``ids`` into a cache, then time ``new_tokens`` greedy steps; returns (seconds, tokens)."""
        np, model = self.np, self.model
        cache = self.KVCache(model.config.num_hidden_layers, max_length=len(ids[0]) + new_tokens)
        logits = model(np.asarray(ids), past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        tokens, start = [], time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(logits[0, -1]))
            tokens.append(token)
            logits = model(np.asarray([[token]]), past_key_values=cache, use_cache=True).logits
        return time.perf_counter() - start, tokens


class TransformersSide:
    def __init__(self, path, threads, implementation):
        import torch
        from transformers import ArceeForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = ArceeForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                      attn_implementation=implementation).eval()

    def prefill(self, ids):
        with self.torch.inference_mode():
            self.model(self.torch.tensor(ids), use_cache=False, logits_to_keep=1)

    def generate(self, ids, new_tokens):
        with self.torch.inference_mode():
            out = self.model.generate(self.torch.tensor(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      do_sample=False, pad_token_id=0)
        return out[0, len(ids[0]):].tolist()

    def decode_after(self, ids, new_tokens):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.tensor(ids), use_cache=True, logits_to_keep=1)
            cache, logits = out.past_key_values, out.logits
            tokens, start = [], time.perf_counter()
            for _ in range(new_tokens):
                token = int(torch.argmax(logits[0, -1]))
                tokens.append(token)
                out = self.model(torch.tensor([[token]]), cache=cache, use_cache=True)
                cache, logits = out.past_key_values, out.logits
            return time.perf_counter() - start, tokens


class LlamaCppSide:
    """llama.cpp through llama-cpp-python on an F32 GGUF of the same checkpoint (written by arcee_np's GGUF
    writer as llama.cpp's converter writes it); flash attention off (``llama.cpp-f32``) or on
    (``llama.cpp-f32-fa``), llama.cpp's other defaults."""

    def __init__(self, path, threads, flash_attn=False):
        import llama_cpp

        from arcee_np.io.gguf_writer import convert_checkpoint

        gguf = os.path.join(path, "model-F32.gguf")
        if not os.path.exists(gguf):  # the random checkpoint has no tokenizer: ids go straight in
            convert_checkpoint(path, gguf, "F32", metadata={"tokenizer.ggml.model": "none"})
        self.llama_cpp = llama_cpp
        self.model = llama_cpp.Llama(model_path=gguf, n_ctx=SHAPE_125M["max_position_embeddings"], n_batch=16384,
                                     n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                                     flash_attn=flash_attn, verbose=False)

    def prefill(self, ids):
        self.model.reset()
        self.model.eval(ids[0])

    def generate(self, ids, new_tokens):
        return self.decode_after(ids, new_tokens)[1]

    def decode_after(self, ids, new_tokens):
        """Prefill ``ids``, then time ``new_tokens`` greedy steps; returns (seconds, tokens)."""
        import numpy as np

        self.model.reset()
        self.model.eval(ids[0])
        tokens, start = [], time.perf_counter()
        for _ in range(new_tokens):
            logits = np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(self.model.ctx, -1),
                                           shape=(self.model.n_vocab(),))
            tokens.append(int(np.argmax(logits)))
            self.model.eval([tokens[-1]])
        return time.perf_counter() - start, tokens


def gemv_chain_step_seconds(path, repeats=20):
    """One decode step's matrix-vector products over the checkpoint's matrices, back to back (median), as
    scripts/bench_profile.py's ``decode_chain`` makes them (q, k and v stacked, as a decode step multiplies them)."""
    import bench_profile  # beside this file

    from arcee_np import ArceeConfig
    from arcee_np.io.checkpoint import read_checkpoint

    tensors = read_checkpoint(path)
    params = {name.removeprefix("model."): tensor for name, tensor in tensors.items()}
    run, _ = bench_profile.decode_chain(params, ArceeConfig(**SHAPE_125M), tensors["lm_head.weight"])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker_main(side, path, threads):
    """Serve timing requests on stdin: one JSON line in, one JSON line out (on the original stdout; whatever
    the libraries print, C code included, goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if side in ("arcee_np", BASELINE):
        runner = ArceeSide(path)
    elif side.startswith("llama.cpp-f32"):
        runner = LlamaCppSide(path, threads, flash_attn=side.endswith("-fa"))
    else:
        runner = TransformersSide(path, threads, side.split("-")[1])
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        if request["op"] == "prefill":
            runner.prefill(request["ids"])
            reply = {"seconds": time.perf_counter() - start}
        elif request["op"] == "generate":
            tokens = runner.generate(request["ids"], request["new_tokens"])
            reply = {"seconds": time.perf_counter() - start, "tokens": tokens}
        elif request["op"] == "decode_after":
            seconds, tokens = runner.decode_after(request["ids"], request["new_tokens"])
            reply = {"seconds": seconds, "tokens": tokens}
        else:
            reply = {"peak_rss_mib": peak_rss_mib()}
        print(json.dumps(reply), file=replies, flush=True)


# ---------------------------------------------------------------------------------------------- driver
BASELINE = "arcee_np@baseline"  # the side of --baseline: another checkout's arcee_np, before/after in one run


class Worker:
    def __init__(self, side, path, threads, baseline=None):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        if side == BASELINE:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, os.environ.get("PYTHONPATH")]))
        self.side = side
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", side, "--path", path,
                                      "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        rss = self.ask(op="rss")["peak_rss_mib"]
        self.proc.stdin.close()
        self.proc.wait()
        return rss


def llama_cpp_importable() -> bool:
    """Whether llama-cpp-python imports: then llama.cpp runs beside the others in the short run."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def make_checkpoint(path, seed=0):
    from arcee_np import ArceeConfig, ArceeForCausalLM

    ArceeForCausalLM.from_config(ArceeConfig(**SHAPE_125M), seed=seed).save_pretrained(path)


def random_ids(length, seed):
    import numpy as np

    return np.random.default_rng(seed).integers(3, SHAPE_125M["vocab_size"], (1, length)).tolist()


# Between two sides' requests: long enough for the last side's idle BLAS and ggml threads, which spin-wait a
# while after their work, to go to sleep and leave both cores to the next side.
SETTLE_SECONDS = 0.3


def timed(workers, repeats, **request):
    """Each worker answers ``request`` once to warm up, then ``repeats`` times, the workers taking turns."""
    for w in workers:
        w.ask(**request)
    seconds = {w.side: [] for w in workers}
    for _ in range(repeats):
        for w in workers:
            time.sleep(SETTLE_SECONDS)
            seconds[w.side].append(w.ask(**request)["seconds"])
    return {side: statistics.median(s) for side, s in seconds.items()}


def short_run(path, args):
    """Prefill 1 x --prefill and greedy decode --prompt + --new-tokens on every side, one worker each."""
    sides = ["arcee_np"] + ([BASELINE] if args.baseline else []) + ["transformers-sdpa", "transformers-eager"] + (
        ["llama.cpp-f32"] if llama_cpp_importable() else [])
    workers = [Worker(side, path, args.threads, args.baseline) for side in sides]
    prefill = timed(workers, args.repeats, op="prefill", ids=random_ids(args.prefill, 0))
    prompt = random_ids(args.prompt, 1)
    decode = timed(workers, args.repeats, op="generate", ids=prompt, new_tokens=args.new_tokens)
    tokens = {w.side: w.ask(op="generate", ids=prompt, new_tokens=args.new_tokens)["tokens"] for w in workers}
    rss = {w.side: w.close() for w in workers}
    results = {side: {"prefill_tok_s": args.prefill / prefill[side], "decode_tok_s": args.new_tokens / decode[side],
                      "peak_rss_mib": rss[side]} for side in rss}
    results["gemv_chain_tok_s"] = 1.0 / gemv_chain_step_seconds(path)
    results["same_greedy_tokens"] = len({tuple(t) for t in tokens.values()}) == 1
    print(f"{'':20}{'prefill 1x' + str(args.prefill) + ' tok/s':>22}{'decode tok/s':>16}{'peak RSS MiB':>15}")
    for side in rss:
        r = results[side]
        print(f"{side:20}{r['prefill_tok_s']:22.1f}{r['decode_tok_s']:16.1f}{r['peak_rss_mib']:15.0f}")
    for side in sides[1:]:
        ours, theirs = results["arcee_np"], results[side]
        print(f"{'ratio vs ' + side:20}{ours['prefill_tok_s'] / theirs['prefill_tok_s']:22.2f}"
              f"{ours['decode_tok_s'] / theirs['decode_tok_s']:16.2f}")
    print(f"bare chain of NumPy matrix-vector products over the weights: {results['gemv_chain_tok_s']:.1f} steps/s")
    print(f"greedy tokens identical on every side: {results['same_greedy_tokens']}")
    return results


def sliced_draft(path, layers, folder):
    """A checkpoint of ``path``'s first ``layers`` decoder layers (embeddings, final norm and head kept)."""
    from safetensors.numpy import load_file, save_file

    config = json.load(open(os.path.join(path, "config.json")))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(dict(config, num_hidden_layers=layers), fh)
    weights = load_file(os.path.join(path, "model.safetensors"))
    kept = {k: v for k, v in weights.items()
            if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < layers}
    save_file(kept, os.path.join(folder, "model.safetensors"))


def speculative_run(args):
    """Plain greedy decode against assisted decoding (a sliced draft) and prompt lookup, arcee_np only."""
    import numpy as np

    from arcee_np import ArceeForCausalLM, default_model_path
    from arcee_np.io.tokenizer import ArceeTokenizer

    path = args.model or default_model_path()
    target, tokenizer = ArceeForCausalLM.from_pretrained(path), ArceeTokenizer.from_pretrained(path)
    prompts = [np.array([tokenizer.encode(text)]) for text in ("ROMEO:", "KING HENRY:\nWhat", "First Citizen:\n")]
    with tempfile.TemporaryDirectory() as folder:
        sliced_draft(path, args.draft_layers, folder)
        draft = ArceeForCausalLM.from_pretrained(folder)
    modes = {"plain": {}, f"draft ({args.draft_layers} layers)": {"assistant_model": draft},
             "prompt lookup": {"prompt_lookup_num_tokens": 10}}
    results, plain = {}, {}
    for name, extra in modes.items():
        seconds, accepted, new, same = [], 0, 0, True
        for prompt in prompts:
            kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, return_dict_in_generate=True, **extra)
            target.generate(prompt, **kwargs)  # warm up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = target.generate(prompt, **kwargs)
                times.append(time.perf_counter() - start)
            seconds.append(statistics.median(times))
            new += out.sequences.shape[1] - prompt.shape[1]
            accepted += out.num_accepted_tokens or 0
            plain.setdefault(prompt.tobytes(), out.sequences)
            same &= bool(np.array_equal(out.sequences, plain[prompt.tobytes()]))
        results[name] = {"new_tok_s": new / sum(seconds), "accepted_share": accepted / new, "same_as_plain": same}
    print(f"{'':22}{'new tok/s':>12}{'accepted':>10}{'vs plain':>10}  same tokens")
    for name, r in results.items():
        print(f"{name:22}{r['new_tok_s']:12.1f}{r['accepted_share']:10.2f}"
              f"{r['new_tok_s'] / results['plain']['new_tok_s']:10.2f}  {r['same_as_plain']}")
    return results


def long_run(path, args):
    """Prefill at each length, a fresh worker per side and length; then decode after a long prefill. llama.cpp
    runs too when llama-cpp-python imports, with flash attention off and on."""
    results = {"prefill": [], "decode": {}}
    llama = list(LLAMA_CPP_SIDES) if llama_cpp_importable() else []
    baseline = [BASELINE] if args.baseline else []
    print(f"{'T':>6} {'side':20} {'tok/s':>9} {'peak RSS MiB':>13}")
    for length in args.lengths:
        sides = [s for s in SIDES if s != "transformers-eager" or length <= args.eager_max] + llama + baseline
        workers = [Worker(side, path, args.threads, args.baseline) for side in sides]
        seconds = timed(workers, args.repeats, op="prefill", ids=random_ids(length, length))
        for w in workers:
            row = {"length": length, "side": w.side, "tok_s": length / seconds[w.side], "peak_rss_mib": w.close()}
            results["prefill"].append(row)
            print(f"{length:6d} {w.side:20} {row['tok_s']:9.1f} {row['peak_rss_mib']:13.0f}", flush=True)
    workers = [Worker(side, path, args.threads, args.baseline) for side in ["arcee_np", "transformers-sdpa"] + llama +
               baseline]
    prompt = random_ids(args.decode_cache, 7)
    seconds = timed(workers, args.repeats, op="decode_after", ids=prompt, new_tokens=args.new_tokens)
    for w in workers:
        results["decode"][w.side] = {"tok_s": args.new_tokens / seconds[w.side], "peak_rss_mib": w.close()}
        print(f"decode {args.new_tokens} tokens after a {args.decode_cache}-token prefill, {w.side}: "
              f"{results['decode'][w.side]['tok_s']:.1f} tok/s")
    by = {(r["length"], r["side"]): r for r in results["prefill"]}
    for length in args.lengths:
        ours = by[(length, "arcee_np")]
        for side in ["transformers-sdpa"] + llama + baseline:
            theirs = by[(length, side)]
            print(f"T={length}: arcee_np / {side} {ours['tok_s'] / theirs['tok_s']:.2f}x tok/s, "
                  f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}x peak RSS")
    decode = results["decode"]
    for side in ["transformers-sdpa"] + llama + baseline:
        print(f"decode: arcee_np / {side} {decode['arcee_np']['tok_s'] / decode[side]['tok_s']:.2f}x")
    if args.plot:
        plot(results, args.plot)
    return results


def plot(results, file):
    """Prefill time (log-log) and peak memory (linear, from 0) against the prompt length, one line per side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for side in dict.fromkeys(r["side"] for r in results["prefill"]):
        rows = [r for r in results["prefill"] if r["side"] == side]
        lengths = [r["length"] for r in rows]
        left.plot(lengths, [r["length"] / r["tok_s"] for r in rows], marker="o", label=side)
        right.plot(lengths, [r["peak_rss_mib"] / 1024 for r in rows], marker="o", label=side)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    right.set_ylim(bottom=0)
    for axis, label in ((left, "prefill time (s), log scale"), (right, "peak RSS (GiB)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({r["length"] for r in results["prefill"]}))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.set_xlabel("prompt length T (tokens)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    left.set_title("prefill of 1 x T, 125M model, float32")
    right.set_title("peak memory of the process")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    fig.savefig(file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=512, help="prefill length of the short run (batch 1)")
    parser.add_argument("--prompt", type=int, default=16, help="decode prompt length of the short run")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long", action="store_true", help="the long-context run instead of the short one")
    parser.add_argument("--profile", action="store_true", help="arcee_np's prefill and decode step, part by part "
                        "against the machine's roofs (scripts/bench_profile.py)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    parser.add_argument("--eager-max", type=int, default=4096, help="longest prefill run with transformers eager")
    parser.add_argument("--decode-cache", type=int, default=8192, help="prefill before the long decode")
    parser.add_argument("--plot", help="with --long: save a picture of time and memory against length")
    parser.add_argument("--speculative", action="store_true", help="plain vs speculative / prompt-lookup decode "
                        "(arcee_np only, the shipped model)")
    parser.add_argument("--model", help="with --speculative: the checkpoint (default: the shipped model)")
    parser.add_argument("--draft-layers", type=int, default=1, help="with --speculative: layers of the draft")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--baseline", help="a folder holding another checkout's arcee_np package (e.g. an export "
                        "of main), run beside the others as arcee_np@baseline: before and after in one run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.path, args.threads)

    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "unknown CPU")
    if args.profile:
        import bench_profile  # beside this file

        return bench_profile.main(["--prefill", str(args.prefill), "--cache", str(args.prompt),
                                  "--repeats", str(args.repeats)])
    if args.speculative:
        print(f"speculative decoding, float32, medians of {args.repeats}; {cpu}")
        results = dict(speculative_run(args), args=vars(args), cpu=cpu)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=2)
        return results
    import numpy
    from threadpoolctl import threadpool_info

    blas = "; ".join(f"{i['internal_api']} {i['version']} ({i['architecture']} kernel)" for i in threadpool_info()
                     if i["user_api"] == "blas")
    print(f"125M Arcee, float32, {args.threads} threads, medians of {args.repeats}; {cpu}; NumPy {numpy.__version__}, "
          f"{blas}")
    with tempfile.TemporaryDirectory() as path:
        make_checkpoint(path)
        results = long_run(path, args) if args.long else short_run(path, args)
    results.update(config=SHAPE_125M, args=vars(args), cpu=cpu)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

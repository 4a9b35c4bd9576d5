"""Benchmark arcee_np against transformers on the CPU, in the same run: prefill and greedy decode.

Both sides load the same random float32 checkpoint (125M parameters by default: vocab 32000, hidden 768,
12 layers, 12 heads, 4 KV heads, intermediate 3072) and run in two worker processes, driven alternately
so that only one computes at a time. Reported: medians over ``--repeats`` of

* prefill: one 1 x ``--prefill`` forward, logits of the last row only on both sides (tokens/s);
* decode: greedy generation of ``--new-tokens`` after a ``--prompt``-token prompt (new tokens/s);
* peak RSS of each worker process;

and the ratios arcee_np / transformers. Needs the ``golden`` extra (torch + transformers).

    python scripts/bench.py                  # the 125M model, 2 threads
    python scripts/bench.py --repeats 10 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SHAPE_125M = dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, intermediate_size=3072, max_position_embeddings=2048,
                  bos_token_id=1, eos_token_id=2)


# ---------------------------------------------------------------------------------------------- workers
def _arcee_worker(path):
    import numpy as np
    from arcee_np import ArceeForCausalLM

    model = ArceeForCausalLM.from_pretrained(path)

    def prefill(ids):
        model(np.asarray(ids), use_cache=False, logits_to_keep=1)

    def decode(ids, new_tokens):
        return model.generate(np.asarray(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False)[0, len(ids[0]):].tolist()

    return prefill, decode


def _transformers_worker(path, threads):
    import torch
    from transformers import ArceeForCausalLM

    torch.set_num_threads(threads)
    model = ArceeForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()

    @torch.inference_mode()
    def prefill(ids):
        model(torch.tensor(ids), use_cache=False, logits_to_keep=1)

    @torch.inference_mode()
    def decode(ids, new_tokens):
        out = model.generate(torch.tensor(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
        return out[0, len(ids[0]):].tolist()

    return prefill, decode


def worker_main(side, path, threads):
    """Serve timing requests on stdin: one JSON line in, one JSON line out."""
    prefill, decode = _arcee_worker(path) if side == "arcee_np" else _transformers_worker(path, threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "prefill":
            start = time.perf_counter()
            prefill(request["ids"])
            reply = {"seconds": time.perf_counter() - start}
        elif request["op"] == "decode":
            start = time.perf_counter()
            tokens = decode(request["ids"], request["new_tokens"])
            reply = {"seconds": time.perf_counter() - start, "tokens": tokens}
        else:
            reply = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(json.dumps(reply), flush=True)


# ---------------------------------------------------------------------------------------------- driver
class Worker:
    def __init__(self, side, path, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
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
        self.proc.stdin.close()
        self.proc.wait()


def make_checkpoint(path, seed=0):
    from arcee_np import ArceeConfig, ArceeForCausalLM

    ArceeForCausalLM.from_config(ArceeConfig(**SHAPE_125M), seed=seed).save_pretrained(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=512, help="prefill length (batch 1)")
    parser.add_argument("--prompt", type=int, default=16, help="decode prompt length")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.path, args.threads)

    import numpy as np

    rng = np.random.default_rng(0)
    prefill_ids = rng.integers(3, SHAPE_125M["vocab_size"], (1, args.prefill)).tolist()
    prompt_ids = rng.integers(3, SHAPE_125M["vocab_size"], (1, args.prompt)).tolist()
    with tempfile.TemporaryDirectory() as path:
        make_checkpoint(path)
        workers = [Worker("arcee_np", path, args.threads), Worker("transformers", path, args.threads)]
        times = {w.side: {"prefill": [], "decode": []} for w in workers}
        tokens = {}
        for w in workers:  # warm-up
            w.ask(op="prefill", ids=prefill_ids)
            tokens[w.side] = w.ask(op="decode", ids=prompt_ids, new_tokens=args.new_tokens)["tokens"]
        for _ in range(args.repeats):
            for w in workers:
                times[w.side]["prefill"].append(w.ask(op="prefill", ids=prefill_ids)["seconds"])
            for w in reversed(workers):
                times[w.side]["decode"].append(w.ask(op="decode", ids=prompt_ids,
                                                     new_tokens=args.new_tokens)["seconds"])
        rss = {w.side: w.ask(op="rss")["peak_rss_mib"] for w in workers}
        for w in workers:
            w.close()

    results = {"config": SHAPE_125M, "args": vars(args), "same_greedy_tokens": tokens["arcee_np"] == tokens["transformers"]}
    for side, t in times.items():
        results[side] = {"prefill_tok_s": args.prefill / statistics.median(t["prefill"]),
                         "decode_tok_s": args.new_tokens / statistics.median(t["decode"]),
                         "peak_rss_mib": rss[side]}
    ours, theirs = results["arcee_np"], results["transformers"]
    results["ratio"] = {"prefill": ours["prefill_tok_s"] / theirs["prefill_tok_s"],
                        "decode": ours["decode_tok_s"] / theirs["decode_tok_s"]}
    print(f"125M Arcee, float32, {args.threads} threads, medians of {args.repeats}")
    print(f"{'':14}{'prefill 1x' + str(args.prefill) + ' tok/s':>22}{'decode tok/s':>16}{'peak RSS MiB':>15}")
    for side in ("arcee_np", "transformers"):
        r = results[side]
        print(f"{side:14}{r['prefill_tok_s']:22.1f}{r['decode_tok_s']:16.1f}{r['peak_rss_mib']:15.0f}")
    print(f"{'ratio':14}{results['ratio']['prefill']:22.2f}{results['ratio']['decode']:16.2f}")
    print(f"greedy tokens identical: {results['same_greedy_tokens']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()

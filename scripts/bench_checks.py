"""What the input checks cost on the 125M model of scripts/bench.py: loading with and without the NaN/Inf check
of the weights, a checked forward call against the forward alone, and greedy decode speed.

    python scripts/bench_checks.py                 # the 125M float32 checkpoint, 7 repeats
    python scripts/bench_checks.py --repeats 15 --new-tokens 64

Medians over ``--repeats``, the runs with and without a check taking turns so both see the same machine.
The file is read once before timing, so every load finds it in the page cache (the check then costs its
sum over the weights, not a disk read). Run it on main and on a branch to compare decode speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench import make_checkpoint  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=16)
    args = parser.parse_args(argv)

    from arcee_np import ArceeForCausalLM
    from arcee_np.io.checkpoint import read_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        make_checkpoint(folder)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        read_checkpoint(folder, check_finite=True)  # warm the page cache
        loads = {True: [], False: []}
        for _ in range(args.repeats):
            for check in (True, False):
                start = time.perf_counter()
                ArceeForCausalLM.from_pretrained(folder, check_finite=check)
                loads[check].append(time.perf_counter() - start)
        checked, unchecked = statistics.median(loads[True]), statistics.median(loads[False])
        print(f"checkpoint: {size / 2**20:.0f} MiB of float32 weights (125M parameters)")
        print(f"from_pretrained, weights checked for NaN/Inf: {checked * 1e3:8.1f} ms")
        print(f"from_pretrained, check_finite=False:          {unchecked * 1e3:8.1f} ms")
        print(f"the check: {(checked - unchecked) * 1e3:.1f} ms, {size / 2**30 / max(checked - unchecked, 1e-9):.1f} "
              f"GiB/s")

        model = ArceeForCausalLM.from_pretrained(folder)
        rng = np.random.default_rng(0)
        ids = rng.integers(3, model.config.vocab_size, (1, args.prompt))
        model.generate(ids, max_new_tokens=2, do_sample=False)  # warm up
        decode = median_seconds(lambda: model.generate(ids, max_new_tokens=args.new_tokens,
                                                       min_new_tokens=args.new_tokens, do_sample=False), args.repeats)
        print(f"greedy decode, {args.prompt}-token prompt, {args.new_tokens} new tokens: "
              f"{args.new_tokens / decode:.1f} tokens/s")
        forward = median_seconds(lambda: model(ids, use_cache=False, logits_to_keep=1), args.repeats)
        print(f"one checked forward of 1 x {args.prompt} tokens: {forward * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

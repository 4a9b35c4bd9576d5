"""Fine-tuning a causal LM on a text file: ``arcee-np finetune --data FILE.txt --steps N --out DIR``.

The text is encoded with the model's own tokenizer; its last ``--eval-fraction`` is held out. Training
draws random windows ``[bos] + (seq_len - 1)`` tokens from the rest and takes ``--steps`` steps of
``loss_and_gradients``, global-norm clipping and AdamW under a warmup + cosine schedule (the
``arcee_np.training`` functions, equal to torch's), showing a progress bar with the loss. The held-out
loss is measured before and after. DIR receives a checkpoint transformers loads (config.json,
model.safetensors, generation_config.json), the tokenizer files, and ``finetune.json`` (settings, losses,
timing). Every check of the data, the model folder and DIR runs before any training.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import FileAccessError, InputError, MissingFileError, TokenizerError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ---------------------------------------------------------------------------------------------- checks
def read_text(path) -> str:
    """The text of ``path``, UTF-8; ValueError / FileNotFoundError naming the problem and the fix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"--data {path!r} is not a file; give a UTF-8 text file to train on.")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise InputError(f"--data {path!r} is not UTF-8 text ({err.reason} at byte {err.start}); convert it to "
                         f"UTF-8.") from err
    if not text.strip():
        raise InputError(f"--data {path!r} is empty (or only whitespace); give a file with the text to train on.")
    return text


def split_tokens(ids: np.ndarray, seq_len: int, eval_fraction: float, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, held-out ids): the last ``eval_fraction`` of the tokens held out; ValueError when the text
    cannot fill one training window ``seq_len - 1`` tokens (plus bos) and still hold some tokens out."""
    n = len(ids)
    window = seq_len - 1
    held_out = max(1, int(round(n * eval_fraction)))
    if n - held_out < window:
        raise InputError(f"--data {path!r} holds {n} tokens, too few for one training sequence of {window} tokens "
                         f"(--seq-len {seq_len}, bos included) plus a held-out slice of {held_out}: give more text "
                         f"or a smaller --seq-len (at most {max(2, n - held_out + 1)}).")
    return ids[: n - held_out], ids[n - held_out :]


def check_output_folder(out, model_path) -> Path:
    """DIR created if needed and proved writable (a file written and removed); it may not be the model's folder."""
    out = Path(os.path.expanduser(os.fspath(out)))
    if out.exists() and not out.is_dir():
        raise FileAccessError(f"--out {os.fspath(out)!r} is a file; give a folder for the fine-tuned checkpoint.")
    if out.exists() and out.resolve() == Path(model_path).resolve():
        raise InputError(f"--out {os.fspath(out)!r} is the model's own folder; write the fine-tuned model elsewhere.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as err:
        raise FileAccessError(f"--out {os.fspath(out)!r} cannot be written ({err.strerror or err}); choose a folder "
                              f"you can write to.") from err
    return out


# ---------------------------------------------------------------------------------------------- progress
class ProgressBar:
    """A one-line progress bar with the loss on ``stream`` (redrawn in place on a terminal; elsewhere one line
    every tenth of the steps)."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.width = total, width
        self.stream = stream if stream is not None else sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.every = max(1, total // 10)

    def update(self, step: int, loss: float) -> None:
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / max(step, 1)
        filled = int(self.width * step / self.total)
        line = (f"finetune {100 * step // self.total:3d}% |{'#' * filled}{'.' * (self.width - filled)}| "
                f"{step}/{self.total}  loss {loss:.4f}  {per_step:.2f} s/step  eta {per_step * (self.total - step):.0f} s")
        if self.live:
            self.stream.write("\r" + line + ("\n" if step == self.total else ""))
        elif step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------- training
def finetune(model, train_ids: np.ndarray, *, steps: int, batch_size: int = 8, seq_len: int = 256, lr: float = 3e-4,
             warmup: int | None = None, weight_decay: float = 0.01, grad_clip: float = 1.0, seed: int = 0,
             bos_token_id: int = 0, checkpointing: bool = False, progress=None) -> list[float]:
    """Train ``model`` (an arcee_np ArceeForCausalLM; its weights are replaced in place) on random windows of
    ``train_ids``: ``steps`` steps of loss_and_gradients, clip_grad_norm (``grad_clip``) and AdamW
    (betas 0.9 / 0.999, ``weight_decay`` on matrices only) under a linear warmup (default: a tenth of the
    steps) and a cosine decay to 0. ``progress(step, loss)`` is called after every step. Returns the losses.
    """
    from .gradients import loss_and_gradients, model_parameters
    from .data import random_windows
    from .optimizer import AdamW, clip_grad_norm
    from .schedules import cosine_schedule_with_warmup

    weights = model_parameters(model)
    optimizer = AdamW(weights, lr=lr, weight_decay=weight_decay,
                      no_decay=[name for name, value in weights.items() if len(value.shape) < 2])
    schedule = cosine_schedule_with_warmup(lr, max(1, steps // 10) if warmup is None else warmup, steps)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        batch = random_windows(train_ids, batch_size, seq_len, rng, bos_token_id)
        loss, grads = loss_and_gradients(model, batch, labels=batch, use_cache=False, checkpointing=checkpointing)
        grads, _ = clip_grad_norm(grads, grad_clip)
        optimizer.lr = schedule(step)
        optimizer.step(grads)
        losses.append(float(loss))
        if progress is not None:
            progress(step + 1, losses[-1])
    return losses


def save_finetuned(model, tokenizer, out: Path, record: dict) -> None:
    """The checkpoint (config.json, model.safetensors, generation_config.json), the tokenizer files (copied from
    the folder ``tokenizer`` was read from; a GGUF file's own tokenizer written by ``save_pretrained``) and
    finetune.json into ``out``."""
    if not model.generation_config:
        c = model.config
        model.generation_config = {k: v for k, v in (("bos_token_id", c.bos_token_id), ("eos_token_id", c.eos_token_id),
                                                     ("pad_token_id", c.pad_token_id)) if v is not None}
    model.save_pretrained(out)
    if tokenizer.folder is not None:
        for name in TOKENIZER_FILES:
            source = os.path.join(tokenizer.folder, name)
            if os.path.isfile(source):
                shutil.copyfile(source, out / name)
    else:
        tokenizer.save_pretrained(out)
    (out / "finetune.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- command
def add_finetune_command(commands) -> None:
    """Add ``finetune`` to an argparse subparsers object (it sets ``func(args) -> exit status``)."""
    from ..backend import DEVICES
    from ..validation.cli import non_negative_float, non_negative_int, number_type, positive_float, positive_int

    window_length = number_type(int, lambda v: v >= 2, "an integer >= 2 (bos plus at least one token)")
    fraction = number_type(float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")

    p = commands.add_parser("finetune", help="fine-tune a model on a text file and write the new checkpoint",
                            description="Train the model (default: the shipped Shakespeare model) on the text of FILE "
                            "with its own tokenizer: random windows of --seq-len tokens, AdamW, a warmup + cosine "
                            "schedule, gradient clipping; the last --eval-fraction of the text is held out and "
                            "evaluated before and after. Writes a checkpoint transformers loads, the tokenizer files "
                            "and finetune.json to DIR.")
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file to train on")
    p.add_argument("--model", metavar="PATH", help="checkpoint folder with tokenizer.json, or a llama.cpp .gguf file "
                   "(default: the shipped model)")
    p.add_argument("--steps", required=True, type=positive_int, metavar="N", help="optimizer steps")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the fine-tuned checkpoint")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="windows per step (default: 8)")
    p.add_argument("--seq-len", type=window_length, default=256, metavar="L",
                   help="tokens per window, bos included (default: 256)")
    p.add_argument("--lr", type=positive_float, default=3e-4, help="peak learning rate (default: 3e-4)")
    p.add_argument("--warmup", type=non_negative_int, metavar="N", help="warmup steps (default: a tenth of --steps)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.01,
                   help="AdamW weight decay on the matrices (default: 0.01)")
    p.add_argument("--grad-clip", type=positive_float, default=1.0, help="global gradient-norm clip (default: 1.0)")
    p.add_argument("--eval-fraction", type=fraction, default=0.1,
                   help="share of the text held out for evaluation, taken from its end (default: 0.1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the window sampler (default: 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="training dtype (default: float32; float64 is the exact golden mode)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="cpu (NumPy) or cuda (CuPy) (default: cpu)")
    p.add_argument("--checkpointing", action="store_true",
                   help="recompute each layer's activations in the backward (less memory, more time)")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    """Check everything, train, evaluate before and after, write the checkpoint; exit status 0."""
    from .. import __version__
    from ..cli import _model_path
    from ..io.checkpoint import read_config
    from ..io.gguf import is_gguf
    from ..io.tokenizer import ArceeTokenizer
    from ..models import ArceeForCausalLM
    from .data import heldout_loss

    model_path = _model_path(args)
    text = read_text(args.data)
    if not is_gguf(model_path) and not os.path.isfile(os.path.join(model_path, "tokenizer.json")):
        raise MissingFileError(f"no tokenizer.json in {model_path!r}: finetune encodes --data with the model's own "
                                f"tokenizer; copy the model's tokenizer.json (and tokenizer_config.json) there.")
    tokenizer = ArceeTokenizer.from_pretrained(model_path)  # a GGUF file: the tokenizer.json beside it, or its own
    config = read_config(model_path)
    if args.seq_len > config.max_position_embeddings:
        raise InputError(f"--seq-len {args.seq_len} is longer than the model's max_position_embeddings "
                         f"({config.max_position_embeddings}); give at most that.")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id
    if bos is None:
        raise TokenizerError(f"the tokenizer in {model_path!r} has no bos token and config.json no bos_token_id; every "
                         f"window starts with bos: set bos_token in tokenizer_config.json.")
    pad = next(i for i in (tokenizer.pad_token_id, config.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    if ids.size and (ids.max() >= config.vocab_size):
        raise TokenizerError(f"the tokenizer in {model_path!r} makes ids up to {int(ids.max())}, outside the model's "
                         f"vocab_size {config.vocab_size}: the tokenizer does not belong to this model.")
    train_ids, eval_ids = split_tokens(ids, args.seq_len, args.eval_fraction, args.data)
    out = check_output_folder(args.out, model_path)

    model = ArceeForCausalLM.from_pretrained(model_path, dtype=args.dtype, device=args.device, widen="at_load")
    print(f"model: {model_path} ({model.num_parameters():,} parameters, {args.dtype}, {args.device})")
    print(f"data: {args.data}: {len(ids):,} tokens, {len(train_ids):,} for training, {len(eval_ids):,} held out")
    before = heldout_loss(model, eval_ids, args.seq_len, bos, pad)
    print(f"held-out loss before: {before[0] / before[1]:.4f} nats/token")
    start = time.perf_counter()
    losses = finetune(model, train_ids, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                      lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                      seed=args.seed, bos_token_id=bos, checkpointing=args.checkpointing,
                      progress=ProgressBar(args.steps).update)
    seconds = time.perf_counter() - start
    after = heldout_loss(model, eval_ids, args.seq_len, bos, pad)
    print(f"held-out loss after {args.steps} steps: {after[0] / after[1]:.4f} nats/token "
          f"(before {before[0] / before[1]:.4f}); {seconds:.0f} s")
    record = {
        "base_model": os.path.abspath(model_path), "data": os.path.abspath(args.data), "tokens": int(len(ids)),
        "train_tokens": int(len(train_ids)), "heldout_tokens": int(len(eval_ids)),
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "command", "model", "data", "out")},
        "heldout_loss_before": round(before[0] / before[1], 6), "heldout_loss_after": round(after[0] / after[1], 6),
        "train_losses": [round(x, 6) for x in losses], "train_seconds": round(seconds, 1),
        "arcee_np": __version__,
    }
    save_finetuned(model, tokenizer, out, record)
    print(f"wrote {out}: config.json, model.safetensors, generation_config.json, tokenizer files, finetune.json")
    return 0

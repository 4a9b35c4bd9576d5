"""Fine-tuning a causal LM on a text file (the library of ``arcee-np finetune --data FILE.txt --steps N --out DIR``).

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import FileAccessError, InputError, MissingFileError
from ..io.atomic import FolderWrite

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
                f"{step}/{self.total}  loss {loss:.4f}  {per_step:.2f} s/step  "
                f"eta {per_step * (self.total - step):.0f} s")
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
    the folder ``tokenizer`` was read from; the tokenizer a GGUF file stores, written as tokenizer.json and
    tokenizer_config.json) and finetune.json into ``out``."""
    if not model.generation_config:
        c = model.config
        model.generation_config = {k: v for k, v in (("bos_token_id", c.bos_token_id), ("eos_token_id", c.eos_token_id),
                                                     ("pad_token_id", c.pad_token_id)) if v is not None}
    model.save_pretrained(out)
    with FolderWrite(out) as files:  # each replaced whole (io.atomic), as the checkpoint's files are
        if tokenizer.folder is None:  # the tokenizer a GGUF file stores
            for name, text in tokenizer.saved_files().items():
                files.write_text(name, text)
        else:
            for name in TOKENIZER_FILES:
                source = os.path.join(tokenizer.folder, name)
                if os.path.isfile(source):
                    files.copy(name, source)
        files.write_text("finetune.json", json.dumps(record, indent=2) + "\n")


def __getattr__(name: str):
    """The command's functions moved to arcee_np.cli (arcee_np.moved.MOVED_NAMES): they warn, for a release."""
    from ..moved import moved_name

    return moved_name(__name__, name)

"""``arcee-np finetune --data FILE.txt --steps N --out DIR``: fine-tune a model on a text file and write the
new checkpoint (the training itself is arcee_np.training.finetune's)."""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError, TokenizerError
from .arguments import (EXIT_OK, add_device_argument, add_dtype_argument, add_model_argument, model_path,
                        model_tokenizer, require_dtype)
from .checks import non_negative_float, non_negative_int, number_type, positive_float, positive_int

TRAINING_DTYPES = ("float32", "float64")


def add_command(commands) -> None:
    """Add ``finetune`` to an argparse subparsers object."""
    window_length = number_type(int, lambda v: v >= 2, "an integer >= 2 (bos plus at least one token)")
    fraction = number_type(float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")

    p = commands.add_parser("finetune", help="fine-tune a model on a text file and write the new checkpoint",
                            description="Train the model (default: the shipped Shakespeare model) on the text of FILE "
                            "with its own tokenizer: random windows of --seq-len tokens, AdamW, a warmup + cosine "
                            "schedule, gradient clipping; the last --eval-fraction of the text is held out and "
                            "evaluated before and after. Writes a checkpoint transformers loads, the tokenizer files "
                            "and finetune.json to DIR.")
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file to train on")
    add_model_argument(p)
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
    add_dtype_argument(p, help="training dtype: float32 or float64, the exact golden mode (default: %(default)s)")
    add_device_argument(p)
    p.add_argument("--checkpointing", action="store_true",
                   help="recompute each layer's activations in the backward (less memory, more time)")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    """Check everything, train, evaluate before and after, write the checkpoint; exit status 0."""
    from .. import __version__
    from ..io.checkpoint import read_config
    from ..models import ArceeForCausalLM
    from ..training.data import heldout_loss
    from ..training.finetune import ProgressBar, check_output_folder, finetune, read_text, save_finetuned, split_tokens

    require_dtype(args.dtype, TRAINING_DTYPES, "finetune", "its gradients are checked in these two")
    path = model_path(args)
    text = read_text(args.data)
    tokenizer = model_tokenizer(path, "finetune encodes --data with the model's own tokenizer: it")
    config = read_config(path)
    if args.seq_len > config.max_position_embeddings:
        raise InputError(f"--seq-len {args.seq_len} is longer than the model's max_position_embeddings "
                         f"({config.max_position_embeddings}); give at most that.")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id
    if bos is None:
        raise TokenizerError(f"the tokenizer of {path!r} has no bos token and its config no bos_token_id; every "
                             f"window starts with bos: set bos_token in tokenizer_config.json.")
    pad = next(i for i in (tokenizer.pad_token_id, config.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    if ids.size and (ids.max() >= config.vocab_size):
        raise TokenizerError(f"the tokenizer of {path!r} makes ids up to {int(ids.max())}, outside the model's "
                             f"vocab_size {config.vocab_size}: the tokenizer does not belong to this model.")
    train_ids, eval_ids = split_tokens(ids, args.seq_len, args.eval_fraction, args.data)
    out = check_output_folder(args.out, path)

    model = ArceeForCausalLM.from_pretrained(path, dtype=args.dtype, device=args.device, widen="at_load")
    print(f"model: {path} ({model.num_parameters():,} parameters, {args.dtype}, {args.device})")
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
        "base_model": os.path.abspath(path), "data": os.path.abspath(args.data), "tokens": int(len(ids)),
        "train_tokens": int(len(train_ids)), "heldout_tokens": int(len(eval_ids)),
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "command", "model", "data", "out")},
        "heldout_loss_before": round(before[0] / before[1], 6), "heldout_loss_after": round(after[0] / after[1], 6),
        "train_losses": [round(x, 6) for x in losses], "train_seconds": round(seconds, 1),
        "arcee_np": __version__,
    }
    save_finetuned(model, tokenizer, out, record)
    print(f"wrote {out}: config.json, model.safetensors, generation_config.json, tokenizer files, finetune.json")
    return EXIT_OK

"""``arcee-np generate PROMPT``: stream text from a model (default: the shipped Shakespeare model)."""

from __future__ import annotations

import sys

from ..errors import UsageError
from .arguments import EXIT_OK, add_device_argument, add_dtype_argument, add_model_argument, model_path, model_tokenizer
from .checks import check_prompt_text, non_negative_int, positive_float, positive_int, probability


def add_command(commands) -> None:
    """Add ``generate`` to an argparse subparsers object."""
    gen = commands.add_parser("generate", help="generate text from a prompt, streaming it as it comes",
                              description="Generate text from PROMPT (or stdin when it is piped), printing the "
                              "prompt and each new token as it comes. Unset knobs come from the model's "
                              "generation_config.json ('arcee-np info' lists them), else transformers' defaults. "
                              "Sampling follows generation_config.json's do_sample; --temperature, --top-k or "
                              "--top-p turn it on, --greedy turns it off.")
    gen.add_argument("prompt", nargs="?", metavar="PROMPT",
                     help="text to continue (default: stdin when piped, else just the bos token)")
    add_model_argument(gen)
    add_dtype_argument(gen)
    add_device_argument(gen)
    gen.add_argument("--max-new-tokens", type=positive_int, metavar="N", help="how many tokens to add at most")
    gen.add_argument("--temperature", type=positive_float, metavar="T", help="sampling temperature (> 0); samples")
    gen.add_argument("--top-k", type=non_negative_int, metavar="K", help="keep the K most likely tokens (0 = all); "
                     "samples")
    gen.add_argument("--top-p", type=probability, metavar="P", help="nucleus: keep the most likely tokens whose "
                     "probabilities reach P (1 = all); samples")
    gen.add_argument("--repetition-penalty", type=positive_float, metavar="R",
                     help="divide the scores of tokens already present by R (1 = off)")
    gen.add_argument("--min-new-tokens", type=non_negative_int, metavar="N", help="forbid eos for the first N tokens")
    gen.add_argument("--seed", type=non_negative_int, metavar="S", help="seed of the sampler (reproducible output)")
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT as a user message with the tokenizer's chat "
                     "template")
    gen.add_argument("--no-prompt", action="store_true", help="print only the generated text, not the prompt")
    gen.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    """Load the model and its tokenizer, encode the prompt, stream the generated text to stdout."""
    import numpy as np

    from ..io.tokenizer import TextStreamer
    from ..models import ArceeForCausalLM

    path = model_path(args)
    prompt = check_prompt_text(args.prompt) if args.prompt is not None else _read_stdin()
    tokenizer = model_tokenizer(path, "arcee-np generate")
    if args.chat:
        if tokenizer.chat_template is None:
            raise UsageError("--chat needs a tokenizer with a chat template and this model has none: drop --chat.")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=False)
    else:
        ids = tokenizer.encode(prompt)
    if not ids:
        raise UsageError("the prompt is empty and the tokenizer adds no bos token: give a PROMPT.")
    model = ArceeForCausalLM.from_pretrained(path, dtype=args.dtype, device=args.device)
    sampling = args.temperature is not None or args.top_k is not None or args.top_p is not None
    do_sample = False if args.greedy else (True if sampling else None)
    streamer = TextStreamer(tokenizer, skip_prompt=args.no_prompt or args.chat, skip_special_tokens=True)
    model.generate(np.asarray([ids], dtype=np.int64), max_new_tokens=args.max_new_tokens,
                   min_new_tokens=args.min_new_tokens, do_sample=do_sample, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                   streamer=streamer)
    return EXIT_OK


def _read_stdin() -> str:
    """The prompt from stdin when it is piped ("" when it is a terminal), as UTF-8 text."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    stream = getattr(sys.stdin, "buffer", None)  # a text stream without one (a test's StringIO) is read as text
    raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"the prompt on stdin is not UTF-8 text (byte {err.start}); pipe UTF-8 text.") from None

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
                              "Sampling follows generation_config.json's do_sample; --temperature, --top-k, "
                              "--top-p or --min-p turn it on, --greedy turns it off.")
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
    gen.add_argument("--min-p", type=probability, metavar="P", help="drop tokens less likely than P times the most "
                     "likely one; samples")
    gen.add_argument("--no-repeat-ngram-size", type=non_negative_int, metavar="N",
                     help="never repeat a sequence of N tokens (0 = off)")
    gen.add_argument("--num-beams", type=positive_int, metavar="N", help="beam search with N beams: the best "
                     "hypothesis is printed at the end instead of streamed (add --greedy for plain beam search)")
    gen.add_argument("--stop", action="append", metavar="TEXT", help="stop once the text ends with TEXT "
                     "(repeatable)")
    gen.add_argument("--seed", type=non_negative_int, metavar="S", help="seed of the sampler (reproducible output)")
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT as a user message with the tokenizer's chat "
                     "template")
    gen.add_argument("--no-prompt", action="store_true", help="print only the generated text, not the prompt")
    gen.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    """Load the model and its tokenizer, encode the prompt, stream the generated text to stdout."""
    import numpy as np

    from ..io.gguf import GGUFFile
    from ..io.tokenizer import TextStreamer
    from ..models import ArceeForCausalLM
    from ..validation.files import is_gguf

    path = model_path(args)
    prompt = check_prompt_text(args.prompt) if args.prompt is not None else _read_stdin()
    gguf = GGUFFile(path) if is_gguf(path) else None  # read once, for its tokenizer and its weights
    tokenizer = model_tokenizer(gguf or path, "arcee-np generate")
    if args.chat:
        if tokenizer.chat_template is None:
            raise UsageError("--chat needs a tokenizer with a chat template and this model has none: drop --chat.")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=False)
    else:
        ids = tokenizer.encode(prompt)
    if not ids:
        raise UsageError("the prompt is empty and the tokenizer adds no bos token: give a PROMPT.")
    model = ArceeForCausalLM.from_gguf(gguf, dtype=args.dtype, device=args.device) if gguf is not None else \
        ArceeForCausalLM.from_pretrained(path, dtype=args.dtype, device=args.device)
    sampling = any(value is not None for value in (args.temperature, args.top_k, args.top_p, args.min_p))
    do_sample = False if args.greedy else (True if sampling else None)
    skip_prompt = args.no_prompt or args.chat
    beams = args.num_beams is not None and args.num_beams > 1  # a beam's tokens are only known at the end
    streamer = None if beams else TextStreamer(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True)
    stops = None if args.stop is None else [check_prompt_text(text, "--stop") for text in args.stop]
    if stops is not None and not all(stops):
        raise UsageError("--stop needs some text to stop at (an empty string would stop at once): drop it.")
    out = model.generate(np.asarray([ids], dtype=np.int64), max_new_tokens=args.max_new_tokens,
                         min_new_tokens=args.min_new_tokens, do_sample=do_sample, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                         streamer=streamer, min_p=args.min_p, no_repeat_ngram_size=args.no_repeat_ngram_size,
                         num_beams=args.num_beams, stop_strings=stops, tokenizer=tokenizer if stops else None)
    if beams:
        print(tokenizer.decode(out[0, len(ids) if skip_prompt else 0:], skip_special_tokens=True))
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

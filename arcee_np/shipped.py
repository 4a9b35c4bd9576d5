"""Where the small Shakespeare model that ships inside the package lives (docs/shakespeare-model.md)."""

from __future__ import annotations

import os

from .errors import MissingFileError

SHIPPED_MODEL = "shakespeare"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def default_model_path() -> str:
    """The folder of the shipped Shakespeare model (``arcee_np/data/shakespeare``): a transformers checkpoint
    (config.json, model.safetensors, generation_config.json) with its tokenizer.json and tokenizer_config.json.

    Raises FileNotFoundError naming the missing files when the package was installed without them.
    """
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", SHIPPED_MODEL)
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise MissingFileError(
            f"the shipped model is incomplete: {', '.join(missing)} missing from {folder}. Reinstall arcee-np "
            f"(pip install .) from a full checkout, or pass --model PATH / model=PATH to use another checkpoint.")
    return folder

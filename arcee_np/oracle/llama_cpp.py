"""llama.cpp's own logits for a GGUF file, through llama-cpp-python (optional: ``pip install llama-cpp-python``).

``llama_cpp_logits(path, ids)`` loads the file with llama.cpp, evaluates the token ids in one batch and
returns the logits of every position. Two settings decide how exact they are:

* ``flash_attention``: llama.cpp's flash-attention kernel converts the KV cache to float16 whatever its
  type, so with it on an "F32" run is only float16-accurate (about 5e-3 on logits of small models);
* ``kv_cache``: ``"f32"`` (default here) or ``"f16"`` (llama.cpp's default).

The defaults (flash attention off, an F32 KV cache) give float32-accurate logits. ``extra_buffers=False``
(default) turns off llama.cpp's repacked weight buffers (``use_extra_bufts``, ``--repack 0``): builds of
llama.cpp made with GCC 12 on AMX-capable CPUs die of SIGILL in them on quantized prompts of more than one
token. ``kv_overrides``
changes metadata keys at load (``{"arcee.rope.scaling.attn_factor": 0.7}``) and ``context`` passes context
parameters (``{"yarn_beta_fast": 16.0}``), as llama.cpp's ``--override-kv`` and ``--yarn-*`` flags do.
"""

from __future__ import annotations

import os

import numpy as np


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_version() -> str:
    """llama-cpp-python's version string."""
    import llama_cpp

    return llama_cpp.__version__


def llama_cpp_logits(path: str | os.PathLike, input_ids, flash_attention: bool = False, kv_cache: str = "f32",
                     kv_overrides: dict | None = None, context: dict | None = None, threads: int | None = None,
                     extra_buffers: bool = False) -> np.ndarray:
    """llama.cpp's logits for ``input_ids`` ([T] or [1, T] integers) from the GGUF at ``path``: [T, V] float32."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    ids = [int(i) for i in np.asarray(input_ids).reshape(-1)]
    if kv_cache not in ("f32", "f16"):
        raise ValueError(f"kv_cache must be 'f32' or 'f16', got {kv_cache!r}.")
    cache_type = llama_cpp.GGML_TYPE_F32 if kv_cache == "f32" else llama_cpp.GGML_TYPE_F16
    length = len(ids)
    defaults = bindings.llama_model_default_params

    def model_params():  # the Llama class starts from these: switch the repacked buffers off there
        params = defaults()
        params.use_extra_bufts = extra_buffers
        return params

    bindings.llama_model_default_params = model_params
    try:
        model = llama_cpp.Llama(
            model_path=os.fspath(path), n_ctx=max(length, 32), n_batch=length, n_ubatch=length, logits_all=True,
            flash_attn=flash_attention, type_k=cache_type, type_v=cache_type, kv_overrides=kv_overrides,
            n_threads=threads or 1, n_threads_batch=threads or 1, verbose=False, **(context or {}))
    finally:
        bindings.llama_model_default_params = defaults
    try:
        model.eval(ids)
        return np.array(model.scores[:length], dtype=np.float32)
    finally:
        model.close()

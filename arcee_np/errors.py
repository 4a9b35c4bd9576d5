"""The library's own exception classes, one place for all of them (exported from ``arcee_np``).

Every error arcee_np raises about what it was given is an ``ArceeError`` and also a subclass of the
built-in class that fits (``ValueError``, ``TypeError``, ``OSError`` ...), so ``except ValueError`` keeps
working. Each message names the thing (file, tensor, field, argument), its value and the fix. The checks
that raise them live in ``arcee_np.validation``, one module per surface (docs/errors.md).
"""


class ArceeError(Exception):
    """Base of every error arcee_np raises on bad input: ``except arcee_np.ArceeError`` catches them all."""


class ConfigError(ArceeError, ValueError):
    """config.json, an ArceeConfig argument or generation_config.json that arcee_np cannot run."""


class CheckpointError(ArceeError, ValueError):
    """Weights that cannot be loaded as asked: a malformed safetensors file or sharded index, tensors that
    do not match the config (all listed at once), NaN/Inf in a weight."""


class TokenizerError(ArceeError, ValueError):
    """tokenizer.json, tokenizer_config.json or a chat template that cannot be used."""


class TraceFileError(ArceeError, ValueError):
    """A trace file (``arcee-np trace``, ``save_trace``) whose contents or metadata are malformed."""


class InputError(ArceeError, ValueError):
    """A call argument with a value, shape or range the call cannot take (token ids, masks, labels, knobs
    of ``generate`` ...)."""


class InputTypeError(ArceeError, TypeError):
    """A call argument of the wrong type (a float array for token ids, a string for a list of ids ...)."""


class CacheError(InputError):
    """A KV cache that does not fit the call: another batch size, layer count, head layout, dtype or device."""


class NonFiniteError(ArceeError, FloatingPointError):
    """NaN or Inf where numbers must be finite: a weight at load, or the output of a forward pass.

    ``name`` names the first tensor found holding them; for a forward pass ``value`` is that tensor,
    ``trace`` what was recorded up to it and ``previous`` ``(name, max |x|, dtype)`` of the last finite one.
    """

    def __init__(self, message: str, name: str | None = None, value=None, trace=None, previous=None):
        super().__init__(message)
        self.name, self.value, self.trace, self.previous = name, value, trace, previous


class MissingFileError(ArceeError, FileNotFoundError):
    """A file or folder that is not there (a checkpoint folder, config.json, a trace file, a shard ...)."""


class FileAccessError(ArceeError, OSError):
    """A file that is there but cannot be read or written (permissions, a folder where a file should be,
    an I/O error)."""


class DeviceError(ArceeError, RuntimeError):
    """A device that cannot be used here (CuPy missing, no CUDA GPU)."""


class UsageError(ArceeError, ValueError):
    """A command-line usage error: a flag value, a flag combination or a path on the command line that
    cannot be used (``arcee-np`` exits with status 2)."""

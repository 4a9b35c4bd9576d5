"""The library's own exception classes, one place for all of them (exported from ``arcee_np``)."""


class ConfigError(ValueError):
    """A config.json or ArceeConfig argument that arcee_np cannot run; the message names the fix."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message lists every problem and the fix."""

"""Errors the command line reports as one line, importable without orbax or jax."""


class CheckpointError(RuntimeError):
    """A missing, corrupt or mismatched checkpoint."""

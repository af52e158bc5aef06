"""The `pam-jax` command: one module per command group (train, eval, demo, collect, study, bench,
data, serve/export/info), assembled in :mod:`pam_jax.cli.app`."""
from pam_jax.cli.app import build_parser, main

__all__ = ["build_parser", "main"]

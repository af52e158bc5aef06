"""Shared helpers for the data and data-builder tests: write the fixture layout and build it."""
from __future__ import annotations

import logging
import pathlib

from pam_jax.data import fixtures
from pam_jax.data.build import build as build_dataset


def build_fixture(root: pathlib.Path, *, task: str = "rope", kind: str = "supervised",
                  malformed=("missing_npz",), **kw) -> tuple[dict, dict, pathlib.Path]:
    """Write the fixture under root/src and build it into root/tfds.
    -> (fixture info, build report, dataset folder)."""
    info = fixtures.write_fixture(root / "src", task=task, kind=kind, malformed=malformed, **kw)
    logging.getLogger("pam_jax.data").setLevel(logging.WARNING)
    report = build_dataset(root / "src", task=task, kind=kind, data_dir=root / "tfds",
                           progress=False)
    return info, report, pathlib.Path(report["dataset_dir"])


def text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

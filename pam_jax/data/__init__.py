"""Datasets: the DeformPAM sample layout, TFDS builds (ArrayRecord), and the grain pipeline.

- :mod:`pam_jax.data.layout`    read/validate one sample folder; write one atomically
- :mod:`pam_jax.data.fixtures`  a tiny dataset in the published layout
- :mod:`pam_jax.data.sources`   build (``data_builders/deformpam``), locate and open datasets
- :mod:`pam_jax.data.stats`     padded shapes and normalisation statistics stored with a dataset
- :mod:`pam_jax.data.pipeline`  ``DeformPAMData``: process-local batches, resumable order
- :mod:`pam_jax.data.tasks`     per-task facts and augmentation defaults
- :mod:`pam_jax.data.cli`       ``pam-jax data build | inspect | fixture``
- :mod:`pam_jax.data.bench`     reading throughput

Three lines from sample folders to batches::

    sources.build("/data/rope_supervised", task="rope", kind="supervised", data_dir="/data/tfds")
    data = pipeline.make_train_data("/data/tfds", task="rope", kind="supervised", batch_size=32)
    batch = data.batch(0)   # points (32, 3000, 3), actions (32, M, 2, 3), action_valid, ...

Submodules are imported on use, so ``import pam_jax.data`` stays light (no TFDS import).
"""
from __future__ import annotations

import importlib

__all__ = ["layout", "fixtures", "sources", "stats", "pipeline", "tasks", "cli", "bench",
           "build", "make_train_data", "load_norm_stats", "write_sample", "TASKS"]


def __getattr__(name):
    if name in ("layout", "fixtures", "sources", "stats", "pipeline", "tasks", "cli", "bench",
                "scan", "inspect_dataset"):
        return importlib.import_module(f"pam_jax.data.{name}")
    if name == "build":
        return importlib.import_module("pam_jax.data.sources").build
    if name == "make_train_data":
        return importlib.import_module("pam_jax.data.pipeline").make_train_data
    if name == "load_norm_stats":
        return importlib.import_module("pam_jax.data.stats").load_norm_stats
    if name == "write_sample":
        return importlib.import_module("pam_jax.data.layout").write_sample
    if name == "TASKS":
        return importlib.import_module("pam_jax.data.tasks").TASKS
    raise AttributeError(f"module 'pam_jax.data' has no attribute {name!r}")

"""The training data a config names (``data.source``): each source gives this process's slice
of every global batch (``batch(step)``), its resumable state, and the normalisation statistics.

A preference stage starts from a supervised policy (``parent``, a
:class:`pam_jax.models.policy.Policy`): the toy preference source samples its candidates from it.
"""
from __future__ import annotations

import jax

from pam_jax import config as config_lib
from pam_jax.models.policy import Policy

SOURCES = config_lib.DATA_SOURCES


def make_train_data(cfg: config_lib.Config, parent: Policy | None = None):
    """The data source named by `cfg.data.source`, giving this process's slice of every batch."""
    d = cfg.data
    pi, pc = jax.process_index(), jax.process_count()
    if d.source == "toy_bimodal":
        from pam_jax.data.toy import ToyBimodalData

        return ToyBimodalData(batch_size=d.batch_size, num_points=d.num_points, seed=d.seed,
                              process_index=pi, process_count=pc)
    if d.source == "toy_preference":
        from pam_jax.data.toy_preference import ToyPreferenceData

        if parent is None:
            raise ValueError("data.source='toy_preference' needs a supervised parent (train.stage dpo or reward)")
        return ToyPreferenceData.from_parent(cfg, parent, process_index=pi, process_count=pc)
    if d.source == "tfds":
        from pam_jax.data import pipeline
        from pam_jax.preference import PairBatches

        data = pipeline.from_config(cfg, process_index=pi, process_count=pc)
        return PairBatches(data) if cfg.train.stage in ("dpo", "reward") else data
    raise ValueError(f"unknown data.source {d.source!r}: expected one of {', '.join(map(repr, SOURCES))}")

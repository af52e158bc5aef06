"""The training data a config names (``data.source``): each source gives this process's slice
of every global batch (``batch(step)``), its resumable state, and the normalisation statistics.

A preference stage starts from a supervised policy (``parent``, a
:class:`pam_jax.models.policy.Policy`): the toy preference source samples its candidates from it.
"""
from __future__ import annotations

import dataclasses

import jax

from pam_jax import config as config_lib
from pam_jax.models.policy import Policy

SOURCES = config_lib.DATA_SOURCES


def make_train_data(cfg: config_lib.Config, parent: Policy | None = None):
    """The data source named by `cfg.data.source`, giving this process's slice of every batch."""
    d = cfg.data
    pi, pc = jax.process_index(), jax.process_count()
    if d.source == "toy_bimodal":
        from pam_jax.toy.data import ToyBimodalData

        return ToyBimodalData(batch_size=d.batch_size, num_points=d.num_points, seed=d.seed,
                              process_index=pi, process_count=pc)
    if d.source == "toy_preference":
        from pam_jax.toy.preference_data import ToyPreferenceData

        if parent is None:
            raise ValueError("data.source='toy_preference' needs a supervised parent (train.stage dpo or reward)")
        if not cfg.preference.annotator_pairs:
            raise ValueError("preference.annotator_pairs=false: only the tfds source can drop the annotator's pairs")
        return ToyPreferenceData.from_parent(cfg, parent, process_index=pi, process_count=pc)
    if d.source == "tfds":
        from pam_jax.data import pipeline
        from pam_jax.preference import PairBatches

        data = pipeline.from_config(cfg, process_index=pi, process_count=pc)
        if cfg.train.stage in ("dpo", "reward"):
            return PairBatches(data, annotator_pairs=cfg.preference.annotator_pairs)
        return data
    raise ValueError(f"unknown data.source {d.source!r}: expected one of {', '.join(map(repr, SOURCES))}")


VALIDATION_SEED_OFFSET = 1_000_003   # generated sources: the validation draws use data.seed + this


def make_validation_data(cfg: config_lib.Config, parent: Policy | None = None):
    """The held-out data of `cfg` (for `train.eval_every`): the dataset's "validation" split for
    `tfds`, or the same generator under another seed for the generated sources."""
    d = cfg.data
    if d.source == "tfds":
        held_out = dataclasses.replace(d, split="validation")
    else:
        held_out = dataclasses.replace(d, seed=d.seed + VALIDATION_SEED_OFFSET)
    try:
        return make_train_data(dataclasses.replace(cfg, data=held_out), parent)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise ValueError(f"train.eval_every={cfg.train.eval_every} needs validation data, but it could not be "
                         f"opened: {e}") from None

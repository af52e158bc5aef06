"""TFDS builder for the DeformPAM sample layout (published ``DeformPAM_Dataset`` and pam_jax's own data).

Configs: ``{rope,nut,tshirt_short}_{supervised,finetune}``. Nothing is downloaded: the samples
are read from a local folder, given either explicitly (``Builder(src_dir=...)``) or as the TFDS
manual dir (``<manual_dir>/<config name>/`` when that exists, else ``<manual_dir>``).

Each example:

=========================  ==================  =================================================
feature                    shape / dtype       meaning
=========================  ==================  =================================================
points                     (N, 3) float32      processed cloud (float16 on disk), N varies
action_type                text                annotation.action_type (else action.type)
action                     (2, 3) float32      the two action_poses rows the task uses, NaN -> 0
action_finite              (2,) bool           which of the two points was finite in the file
multiple_actions           (M, 2, 3) float32   the same two rows of every multiple_action_poses
multiple_actions_finite    (M, 2) bool
episode_id                 int64               episode_idx
sample_id                  text                sample folder, relative to the source root
candidate_points           (K, 3) float32      finetune: pose_virtual.prediction.begin xyz
pair_indices               (P, 4) int32        finetune: selected_grasp_point_indices
rankings                   (P,) int32          finetune: grasp_point_rankings (codes 0..3)
=========================  ==================  =================================================

Rows used: fling (tshirt_short) = left pick, right pick (rows 0, 1); single pick-and-place
(rope) and sweep (nut) = left pick, left place (rows 0, 2). Samples of other action types are
left out (reported as ``filtered``); malformed samples are skipped with a warning naming each,
or raise with ``strict=True``. Splits ``train``/``validation``/``test`` hold whole episodes
(8:1:1, ``split_seed``). Output is ArrayRecord; read it with ``tfds.data_source`` or
``pam_jax.data.open_source``; TensorFlow is not needed.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout, scan

_DESCRIPTION = __doc__.split("\n\n")[0]
_HOMEPAGE = "https://arxiv.org/abs/2410.11584"
_CITATION = """@inproceedings{chen2025deformpam,
  title={DeformPAM: Data-Efficient Learning for Long-horizon Deformable Object Manipulation via Preference-based Action Alignment},
  author={Chen, Wendi and Xue, Han and Zhou, Fangyuan and Fang, Yuan and Lu, Cewu},
  booktitle={ICRA},
  year={2025}
}"""


class DeformPAMConfig(tfds.core.BuilderConfig):
    """One task x kind."""

    def __init__(self, *, task: str, kind: str, **kwargs):
        spec = tasks_lib.get_data_task(task)
        tasks_lib.check_kind(kind)
        super().__init__(name=f"{task}_{kind}",
                         description=f"{task} ({spec.primitive}), {kind} data", **kwargs)
        self.task, self.kind = task, kind


def config_name(task: str, kind: str) -> str:
    return f"{task}_{kind}"


def parse_config_name(name: str) -> tuple[str, str]:
    """'tshirt_short_finetune' -> ('tshirt_short', 'finetune')."""
    task, _, kind = str(name).rpartition("_")
    tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    return task, kind


class Builder(tfds.core.GeneratorBasedBuilder):
    """DeformPAM sample folders -> ArrayRecord. Extra constructor arguments:

    - ``src_dir``: the folder of samples (default: the TFDS manual dir);
    - ``strict``: raise on the first malformed sample instead of skipping it;
    - ``split_seed``, ``split_ratios``: the episode split (8:1:1, seed 0);
    - ``progress``: show a progress bar while checking samples.

    ``file_format`` defaults to ``"array_record"``. After ``download_and_prepare``,
    ``builder.report`` holds the counts and every skipped sample with its reason.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: processed cloud, two-point actions, all "
                              "annotated poses, candidates and rankings for finetune data."}
    BUILDER_CONFIGS = [DeformPAMConfig(task=t, kind=k)
                       for t in tasks_lib.data_task_names() for k in tasks_lib.KINDS]
    DEFAULT_CONFIG_NAME = "rope_supervised"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put the DeformPAM sample folders (e.g. the released DeformPAM_Dataset, or data written by
    pam_jax.data.layout.write_sample) in the manual dir, one sub-folder per config
    (`<manual_dir>/rope_supervised/<sample_id>/metadata.yaml`, ...), or pass `src_dir=` /
    `pam-jax data build deformpam --src DIR`.
    """

    def __init__(self, *, src_dir=None, strict: bool = False, split_seed: int = 0,
                 split_ratios=scan.DEFAULT_RATIOS, namespace: str | None = None,
                 progress: bool = True, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        self._src_dir = pathlib.Path(src_dir) if src_dir is not None else None
        self._strict = bool(strict)
        self._split_seed = int(split_seed)
        self._split_ratios = tuple(split_ratios)
        self._namespace = namespace
        self._progress = bool(progress)
        self.report: dict | None = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ info

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        feats = {
            "points": f.Tensor(shape=(None, 3), dtype=np.float32),
            "action_type": f.Text(),
            "action": f.Tensor(shape=(2, 3), dtype=np.float32),
            "action_finite": f.Tensor(shape=(2,), dtype=np.bool_),
            "multiple_actions": f.Tensor(shape=(None, 2, 3), dtype=np.float32),
            "multiple_actions_finite": f.Tensor(shape=(None, 2), dtype=np.bool_),
            "episode_id": f.Scalar(dtype=np.int64),
            "sample_id": f.Text(),
        }
        if self.builder_config.kind == "finetune":
            feats.update({
                "candidate_points": f.Tensor(shape=(None, 3), dtype=np.float32),
                "pair_indices": f.Tensor(shape=(None, 4), dtype=np.int32),
                "rankings": f.Tensor(shape=(None,), dtype=np.int32),
            })
        return tfds.core.DatasetInfo(
            builder=self, description=_DESCRIPTION, features=f.FeaturesDict(feats),
            homepage=_HOMEPAGE, citation=_CITATION, disable_shuffling=True)

    # ------------------------------------------------------------------ generation

    def _source(self, dl_manager) -> pathlib.Path:
        if self._src_dir is not None:
            src = self._src_dir
        else:
            try:
                manual = pathlib.Path(str(dl_manager.manual_dir))
            except AssertionError:
                raise FileNotFoundError(
                    "no source folder: pass src_dir= (CLI: --src DIR) or fill the TFDS manual dir"
                ) from None
            sub = manual / self.builder_config.name
            src = sub if sub.is_dir() else manual
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: no such directory")
        return src

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        src = self._source(dl_manager)
        res = scan.scan(src, task=cfg.task, kind=cfg.kind, strict=self._strict,
                        namespace=self._namespace, progress=self._progress)
        splits = scan.assign_splits(res, seed=self._split_seed, ratios=self._split_ratios)
        self.report = {
            "config": cfg.name, "task": cfg.task, "kind": cfg.kind, "src": str(src),
            "split_seed": self._split_seed, "split_ratios": list(self._split_ratios),
            "found": res.found,
            "num_examples": {k: len(v) for k, v in splits.items()},
            "episodes": {k: sorted({e for _, _, e in v}) for k, v in splits.items()},
            "action_types": res.action_types,
            "skipped": res.skipped,
        }
        return {name: self._generate_examples(src, items)
                for name, items in splits.items() if items}

    def _generate_examples(self, src, items):
        cfg = self.builder_config
        for sample_dir, sid, _ in items:
            # Validated during the scan; read again here to keep memory flat.
            s = layout.read_sample(sample_dir, root=src, task=cfg.task, kind=cfg.kind,
                                   namespace=self._namespace)
            yield sid, to_example(s, cfg.kind)


def to_example(s: layout.Sample, kind: str) -> dict:
    ex = {
        "points": s.points,
        "action_type": s.action_type,
        "action": s.action,
        "action_finite": s.action_finite,
        "multiple_actions": s.multiple_actions,
        "multiple_actions_finite": s.multiple_actions_finite,
        "episode_id": s.episode_id,
        "sample_id": s.sample_id,
    }
    if kind == "finetune":
        ex.update(candidate_points=s.candidate_points, pair_indices=s.pair_indices,
                  rankings=s.rankings)
    return ex

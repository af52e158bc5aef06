"""Locate and open built DeformPAM datasets (TFDS ArrayRecord, read without TensorFlow),
and the build report stored beside them.

Layout on disk (TFDS)::

    <data_dir>/deformpam/<task>_<kind>/<version>/
        dataset_info.json, features.json, deformpam-<split>.array_record-*
        pam_jax_build.json     # build report (pam_jax.data.build): counts, episodes per split, skipped samples
        pam_jax_stats.json     # shapes and normalisation statistics (pam_jax.data.stats)
"""
from __future__ import annotations

import os
import pathlib

from pam_jax import tasks as tasks_lib
from pam_jax.data.io import read_json

BUILDER_NAME = "deformpam"
BUILD_REPORT = "pam_jax_build.json"


# --------------------------------------------------------------------------- locating


def _version_key(name: str):
    try:
        return tuple(int(x) for x in name.split("."))
    except ValueError:
        return (-1,)


def resolve_dataset_dir(path, dataset: str | None = None) -> pathlib.Path:
    """Find a built dataset folder (the one holding ``dataset_info.json``).

    Accepts the folder itself, ``<data_dir>/deformpam/<config>`` (latest version), or a TFDS
    ``data_dir`` plus ``dataset`` = ``"deformpam/<config>"`` / ``"<config>"``, optionally
    ``":<version>"``."""
    if path is None or str(path) == "":
        import tensorflow_datasets as tfds
        path = tfds.core.constants.DATA_DIR
    base = pathlib.Path(os.path.expanduser(str(path)))
    if dataset and (base / "dataset_info.json").is_file():
        return base                                   # already a dataset folder
    cand = base
    if dataset:
        name, _, version = str(dataset).partition(":")
        parts = name.split("/")
        if len(parts) == 1:
            parts = [BUILDER_NAME] + parts
        cand = base.joinpath(*parts)
        if version:
            cand = cand / version
    if (cand / "dataset_info.json").is_file():
        return cand
    if cand.is_dir():
        versions = sorted((d for d in cand.iterdir() if (d / "dataset_info.json").is_file()),
                          key=lambda d: _version_key(d.name))
        if versions:
            return versions[-1]
    what = f"{base} (dataset {dataset!r})" if dataset else str(base)
    raise FileNotFoundError(f"no built dataset at {what}; build one with "
                            "`pam-jax data build deformpam --src DIR --task TASK --kind KIND --data-dir DIR`")


def dataset_dir(data_dir, task: str, kind: str) -> pathlib.Path:
    tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    return resolve_dataset_dir(data_dir, f"{BUILDER_NAME}/{task}_{kind}")


def task_kind_of(ds_dir) -> tuple[str, str]:
    """(task, kind) from the config name stored in dataset_info.json."""
    info = read_json(pathlib.Path(ds_dir) / "dataset_info.json") or {}
    name = info.get("configName") or pathlib.Path(ds_dir).parent.name
    task, _, kind = str(name).rpartition("_")
    tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    return task, kind


def split_sizes(ds_dir) -> dict[str, int]:
    info = read_json(pathlib.Path(ds_dir) / "dataset_info.json") or {}
    out = {}
    for s in info.get("splits", []):
        out[s["name"]] = int(sum(int(x) for x in s.get("shardLengths", [])))
    return out


def open_source(ds_dir, split: str = "train"):
    """A random-access TFDS data source (ArrayRecord) over one split: ``len(src)``,
    ``src[i]`` -> dict of numpy arrays (text fields as bytes)."""
    import tensorflow_datasets as tfds

    ds_dir = pathlib.Path(ds_dir)
    sizes = split_sizes(ds_dir)
    if split not in sizes:
        raise ValueError(f"{ds_dir}: no split {split!r} (has {', '.join(sorted(sizes)) or 'none'})")
    try:
        src = tfds.builder_from_directory(str(ds_dir)).as_data_source(split=split)
    except Exception as e:  # noqa: BLE001 - an unreadable file set: one line with the fix
        raise ValueError(_unreadable(ds_dir, split, e)) from None
    return CheckedSource(src, ds_dir, split)


def _unreadable(ds_dir, split: str, e: BaseException, record: int | None = None) -> str:
    text = str(e).strip().splitlines()
    what = f"record {record} of split {split!r}" if record is not None else f"split {split!r}"
    return (f"{ds_dir}: {what} is unreadable ({type(e).__name__}: {text[0] if text else ''}): its ArrayRecord "
            "file is truncated or corrupt; rebuild the dataset (pam-jax data build ... --overwrite)")


class CheckedSource:
    """A TFDS data source whose read failures (a truncated or corrupt ArrayRecord file: Riegeli
    errors deep inside the reader) become one ValueError line naming the dataset and the fix."""

    def __init__(self, source, ds_dir, split: str):
        self._source, self._ds_dir, self._split = source, ds_dir, split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i):
        try:
            return self._source[i]
        except (IndexError, KeyError, TypeError):
            raise
        except Exception as e:  # noqa: BLE001
            raise ValueError(_unreadable(self._ds_dir, self._split, e, i)) from None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._source, name)


def read_build_report(ds_dir) -> dict | None:
    return read_json(pathlib.Path(ds_dir) / BUILD_REPORT)

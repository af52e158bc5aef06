"""Build, locate and open DeformPAM datasets (TFDS ArrayRecord, read without TensorFlow),
and the statistics stored beside them.

Layout on disk (TFDS)::

    <data_dir>/deformpam/<task>_<kind>/<version>/
        dataset_info.json, features.json, deformpam-<split>.array_record-*
        pam_jax_build.json     # build report: counts, episodes per split, skipped samples
        pam_jax_stats.json     # shapes (max M, K, P, points) and normalisation statistics
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import sys
import uuid

from pam_jax.data import tasks as tasks_lib

log = logging.getLogger("pam_jax.data")

BUILDER_NAME = "deformpam"
BUILD_REPORT = "pam_jax_build.json"
STATS_FILE = "pam_jax_stats.json"
STATS_FORMAT = 1


# --------------------------------------------------------------------------- builder import


def import_builder():
    """The TFDS builder class in ``data_builders/deformpam``.

    ``data_builders`` lives at the repository root beside ``pam_jax``; when it is not
    importable (e.g. the ``pam-jax`` console script, whose sys.path lacks the repo root) the
    repository root of this package is added to ``sys.path``."""
    try:
        from data_builders.deformpam import Builder  # noqa: F401
    except ImportError:
        repo = pathlib.Path(__file__).resolve().parents[2]
        if not (repo / "data_builders" / "deformpam").is_dir():
            raise ImportError("data_builders/deformpam not found: run from a pam_jax checkout "
                              "(the builders are not part of the installed wheel)") from None
        sys.path.insert(0, str(repo))
        from data_builders.deformpam import Builder  # noqa: F401
    return Builder


# --------------------------------------------------------------------------- json helpers


def _write_json_atomic(path: pathlib.Path, data) -> bool:
    """Write JSON via a temp file + os.replace. Returns False if the folder is read-only."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.info("could not write %s (%s)", path, e)
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


def read_json(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None


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
    tasks_lib.get_task(task)
    tasks_lib.check_kind(kind)
    return resolve_dataset_dir(data_dir, f"{BUILDER_NAME}/{task}_{kind}")


def task_kind_of(ds_dir) -> tuple[str, str]:
    """(task, kind) from the config name stored in dataset_info.json."""
    info = read_json(pathlib.Path(ds_dir) / "dataset_info.json") or {}
    name = info.get("configName") or pathlib.Path(ds_dir).parent.name
    task, _, kind = str(name).rpartition("_")
    tasks_lib.get_task(task)
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
    builder = tfds.builder_from_directory(str(ds_dir))
    return builder.as_data_source(split=split)


def read_build_report(ds_dir) -> dict | None:
    return read_json(pathlib.Path(ds_dir) / BUILD_REPORT)


# --------------------------------------------------------------------------- building


def build(src, *, task: str, kind: str, data_dir=None, strict: bool = False,
          split_seed: int = 0, overwrite: bool = False, progress: bool = True,
          namespace: str | None = None, compute_stats: bool = True) -> dict:
    """Build ``deformpam/<task>_<kind>`` from the sample folders under ``src``.

    Returns the build report (``dataset_dir``, ``num_examples`` per split, ``episodes`` per
    split, ``skipped`` samples with reasons, ...); it is also saved as ``pam_jax_build.json``
    in the dataset folder, next to ``pam_jax_stats.json`` (shapes and normalisation stats).
    An existing build is reused unless ``overwrite``."""
    import tensorflow_datasets as tfds

    tasks_lib.get_task(task)
    tasks_lib.check_kind(kind)
    src = pathlib.Path(os.path.expanduser(str(src)))
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src}: no such directory")
    Builder = import_builder()
    kwargs = dict(config=f"{task}_{kind}", src_dir=src, strict=strict, split_seed=split_seed,
                  namespace=namespace, progress=progress)
    if data_dir is not None:
        kwargs["data_dir"] = os.path.expanduser(str(data_dir))
    builder = Builder(**kwargs)
    out = pathlib.Path(str(builder.data_path))
    if (out / "dataset_info.json").is_file():
        if not overwrite:
            report = read_build_report(out) or {}
            report.update(dataset_dir=str(out), reused=True)
            return report
        shutil.rmtree(out)
        builder = Builder(**kwargs)
    tqdm_utils = tfds.core.utils.tqdm_utils
    was_active = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(bool(progress))
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(src)))
    finally:
        tqdm_utils.display_progress_bar(was_active)
    report = dict(builder.report or {})
    report["dataset_dir"] = str(out)
    report["version"] = str(builder.version)
    _write_json_atomic(out / BUILD_REPORT, {k: v for k, v in report.items() if k != "reused"})
    if compute_stats:
        from pam_jax.data import stats as stats_lib
        stats_lib.load_norm_stats(out, progress=progress)
    return report

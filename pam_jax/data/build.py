"""Build a DeformPAM dataset (TFDS ArrayRecord) from sample folders in the published layout,
with the TFDS builder of :mod:`pam_jax.data_builders.deformpam`, then store its build report and
statistics beside it."""
from __future__ import annotations

import os
import pathlib
import shutil

from pam_jax import tasks as tasks_lib
from pam_jax.data import stats as stats_lib
from pam_jax.data.io import write_json_atomic
from pam_jax.data.sources import BUILD_REPORT, read_build_report
from pam_jax.data_builders.deformpam import Builder


def build(src, *, task: str, kind: str, data_dir=None, strict: bool = False,
          split_seed: int = 0, overwrite: bool = False, progress: bool = True,
          namespace: str | None = None, compute_stats: bool = True) -> dict:
    """Build ``deformpam/<task>_<kind>`` from the sample folders under ``src``.

    Returns the build report (``dataset_dir``, ``num_examples`` per split, ``episodes`` per
    split, ``skipped`` samples with reasons, ...); it is also saved as ``pam_jax_build.json``
    in the dataset folder, next to ``pam_jax_stats.json`` (shapes and normalisation stats).
    An existing build is reused unless ``overwrite``."""
    import tensorflow_datasets as tfds

    tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    src = pathlib.Path(os.path.expanduser(str(src)))
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src}: no such directory")
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
    write_json_atomic(out / BUILD_REPORT, {k: v for k, v in report.items() if k != "reused"})
    if compute_stats:
        stats_lib.load_norm_stats(out, progress=progress)
    return report

"""Are a supervised data set's actions in its clouds' frame? One training batch as the SL stage
sees it (augmented, processed frame): the xy distance from each sample's pick to the nearest
cloud point, against the cloud's own point spacing.

    .venv/bin/python benchmarks/frame_check.py --experiment sim_rope --data-dir runs/rope_sl_diag/tfds_e40
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from pam_jax import config as config_lib
from pam_jax.data import pipeline


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--batches", type=int, default=4)
    a = ap.parse_args(argv)
    cfg = config_lib.override(config_lib.load_experiment(f"{a.experiment}:supervised"), [f"data.data_dir={a.data_dir}"])
    data = pipeline.from_config(cfg)
    pick, place, spacing = [], [], []
    for step in range(a.batches):
        b = data.batch(step)
        for pts, act in zip(b["points"], b["actions"]):
            d = np.linalg.norm(pts[:, None, :2] - pts[None, :, :2], axis=-1)
            np.fill_diagonal(d, np.inf)
            spacing.append(float(np.median(d.min(axis=1))))
            pick.append(float(np.min(np.linalg.norm(pts[:, :2] - act[0, 0, :2], axis=1))))
            place.append(float(np.min(np.linalg.norm(pts[:, :2] - act[0, 1, :2], axis=1))))
    print(json.dumps({"samples": len(pick), "pick_to_cloud_median": float(np.median(pick)),
                      "pick_to_cloud_max": float(np.max(pick)), "place_to_cloud_median": float(np.median(place)),
                      "cloud_spacing_median": float(np.median(spacing)), "units": "processed frame"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

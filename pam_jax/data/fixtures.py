"""A tiny dataset in the exact published DeformPAM layout, for tests, docs and smoke runs.

:func:`write_fixture` writes a few episodes of synthetic samples with
:func:`pam_jax.data.layout.write_sample` (so the writer is exercised too), in the published
form: one namespace key, 4 x 6 ``action_poses`` with NaN in the unused rows, M x 4 x 6
``multiple_action_poses`` (one pose with NaN in a used row), point-cloud paths with and
without the ``.npz`` suffix, float16 clouds, rgb/mask images; finetune data adds K x 6
candidate points, P x 4 pair indices and P ranking codes. On request it adds broken samples
(one per entry of ``malformed``) and a sample of another action type (``filtered``).

It returns what a correct reader must produce for every good sample, so tests can compare.

    pam-jax data fixture --out /tmp/deformpam_fixture --task rope --kind finetune
"""
from __future__ import annotations

import pathlib

import numpy as np
import yaml

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout

MALFORMED_KINDS = ("missing_npz", "unreadable_npz", "missing_key", "bad_shape", "no_annotation",
                   "bad_indices")


def _cloud(rng: np.random.Generator, n: int, task: str) -> np.ndarray:
    """A synthetic object on a table at z = 0, about 0.4 m in front of the robot (metres)."""
    if task == "rope":
        t = rng.uniform(0, 1, n)
        xy = np.stack([0.25 * np.cos(3 * t) + 0.4, 0.2 * np.sin(2 * t)], 1)
        z = rng.uniform(0.0, 0.01, n)
    elif task == "nut":
        r = 0.08 * np.sqrt(rng.uniform(0, 1, n))
        a = rng.uniform(0, 2 * np.pi, n)
        xy = np.stack([0.45 + r * np.cos(a), r * np.sin(a)], 1)
        z = rng.uniform(0.0, 0.02, n) * (1 - r / 0.08)
    else:  # tshirt_short
        xy = rng.uniform([-0.25, -0.2], [0.25, 0.2], (n, 2)) + [0.5, 0.0]
        z = rng.uniform(0.0, 0.03, n)
    xy = xy + rng.normal(0, 0.002, xy.shape)
    return np.concatenate([xy, z[:, None]], 1).astype(np.float16)


def _action(rng, cloud32: np.ndarray, task: str) -> np.ndarray:
    """(2, 3): points on the cloud (fling: two picks) or pick on the cloud + place beside it."""
    i, j = rng.choice(cloud32.shape[0], 2, replace=False)
    if task == "tshirt_short":
        return np.stack([cloud32[i], cloud32[j]])
    place = cloud32[j] + np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), 0.0])
    return np.stack([cloud32[i], place])


def write_fixture(root, *, task: str = "rope", kind: str = "supervised", num_episodes: int = 10,
                  samples_per_episode: int = 2, num_points=(300, 500), num_multiple: int = 3,
                  num_candidates: int = 8, num_pairs: int = 24,
                  malformed=("missing_npz",), filtered: bool = False, images: bool = True,
                  namespace: str = "experiment_real", seed: int = 0) -> dict:
    """Write the fixture under ``root``; returns ``{"root", "samples", "malformed",
    "filtered"}`` where ``samples[sample_id]`` holds the expected example of each good sample
    (points float32 (N, 3), action (2, 3), action_finite (2,), multiple_actions (M, 2, 3),
    multiple_actions_finite (M, 2), episode_id, action_type, and for finetune
    candidate_points (K, 3), pair_indices (P, 4), rankings (P,))."""
    spec = tasks_lib.get_data_task(task)
    tasks_lib.check_kind(kind)
    bad = tuple(malformed or ())
    for b in bad:
        if b not in MALFORMED_KINDS:
            raise ValueError(f"malformed: unknown kind {b!r} (choose from {', '.join(MALFORMED_KINDS)})")
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    primitive = spec.primitive
    expected: dict[str, dict] = {}
    counter = 0

    def new_sample(episode: int, *, action_type: str = primitive, sid: str | None = None):
        nonlocal counter
        counter += 1
        sid = sid or f"{task}_{kind}_ep{episode:03d}_{counter:04d}"
        n = int(rng.integers(num_points[0], num_points[1] + 1))
        cloud16 = _cloud(rng, n, task)
        cloud = cloud16.astype(np.float32)
        act = _action(rng, cloud, task)
        poses = layout.poses_from_actions(act, action_type, rows=spec.rows)
        multi_act = np.stack([_action(rng, cloud, task) for _ in range(num_multiple)]) \
            if num_multiple else np.zeros((0, 2, 3))
        multi = layout.poses_from_actions(multi_act, action_type, rows=spec.rows)
        multi_fin = np.ones((num_multiple, 2), bool)
        if num_multiple >= 2 and counter % 3 == 1:   # an annotated pose with a NaN in a used row
            multi[1, spec.rows[1], 1] = np.nan
            multi_fin[1, 1] = False
        kw = {}
        exp = {
            "episode_id": episode, "action_type": action_type, "points": cloud,
            "action": act.astype(np.float32), "action_finite": np.ones(2, bool),
            "multiple_actions": np.nan_to_num(multi[:, list(spec.rows), :3]).astype(np.float32),
            "multiple_actions_finite": multi_fin,
        }
        if kind == "finetune":
            cand = np.concatenate([_action(rng, cloud, task) for _ in range(num_candidates)])
            k = cand.shape[0]
            a = rng.integers(0, num_candidates, num_pairs)
            b = (a + rng.integers(1, num_candidates, num_pairs)) % num_candidates
            idx = np.stack([2 * a, 2 * a + 1, 2 * b, 2 * b + 1], 1)
            ranks = rng.integers(0, 4, num_pairs)
            ranks[num_pairs * 2 // 3:] = 3                  # padded "not comparable" tail
            cand6 = np.concatenate([cand, np.zeros((k, 3))], 1)
            if counter % 2 == 0:
                cand6[-1, 3:] = np.nan                     # NaN in the unused rpy columns
            kw.update(candidates=cand6, pair_indices=idx, rankings=ranks)
            exp.update(candidate_points=cand.astype(np.float32), pair_indices=idx.astype(np.int32),
                       rankings=ranks.astype(np.int32))
        path = layout.write_sample(
            root, sid, points=cloud16, episode_idx=episode, action_type=action_type,
            action_poses=poses, multiple_action_poses=multi, rows=spec.rows,
            raw_points=cloud16 if counter % 2 else None, namespace=namespace,
            tag=f"{task}_{kind}", npz_suffix_in_metadata=bool(counter % 2), **kw)
        if images:
            _write_images(path)
        return sid, path, exp

    for ep in range(num_episodes):
        for _ in range(samples_per_episode):
            sid, _, exp = new_sample(ep)
            expected[sid] = exp

    broken = []
    for i, b in enumerate(bad):
        sid, path, _ = new_sample(i % max(num_episodes, 1), sid=f"{task}_{kind}_broken_{b}")
        _break(path, b, namespace)
        broken.append(sid)
    other = []
    if filtered:
        sid, _, _ = new_sample(0, action_type="done", sid=f"{task}_{kind}_done")
        other.append(sid)
    return {"root": str(root), "task": task, "kind": kind, "samples": expected,
            "malformed": broken, "filtered": other}


def _write_images(path: pathlib.Path) -> None:
    from PIL import Image

    obs = path / "observations" / "0"
    (obs / "rgb").mkdir(parents=True, exist_ok=True)
    (obs / "mask").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(obs / "rgb" / "begin.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(obs / "mask" / "begin.png")


def _break(path: pathlib.Path, how: str, namespace: str) -> None:
    pcd = next((path / "observations").rglob("processed_begin.npz"))
    meta_path = path / layout.METADATA
    meta = yaml.safe_load(meta_path.read_text())
    if how == "missing_npz":
        pcd.unlink()
    elif how == "unreadable_npz":
        pcd.write_bytes(b"this is not a zip file")
    elif how == "missing_key":
        del meta[namespace]["annotation"]["action_poses"]
    elif how == "bad_shape":
        meta[namespace]["annotation"]["action_poses"] = meta[namespace]["annotation"]["action_poses"][:3]
    elif how == "no_annotation":
        (path / layout.ANNOTATION).unlink()
    elif how == "bad_indices":
        ann = meta[namespace]["annotation"]
        ann["selected_grasp_point_indices"] = [[0, 1, 2, 999]]
        ann["grasp_point_rankings"] = [0]
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))

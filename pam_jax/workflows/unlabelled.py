"""Candidates waiting for a person: a policy's K candidates per state, written with no labels.

DeformPAM's own loop is robot rollouts, then human ranking, then DPO. The two writers here make
the first step's output: sample folders in the published layout (:mod:`pam_jax.data.layout`)
with the processed cloud and ``pose_virtual.prediction.begin`` = the 2K candidate points
(candidate k = points 2k, 2k+1), and no ``annotation`` key, no ``annotation.yaml``, no pairs.
``pam-jax annotate`` ranks them, which adds the annotation; ``pam-jax data build deformpam
--kind finetune`` then reads them like the released data (an unranked sample is reported as
skipped and never built).

* :func:`write_unlabelled_rollouts`: the policy rolls out in a simulated task; every recorded
  state (the horizon protocol of :func:`pam_jax.sim.episodes.write_preference_round`) is written.
  To move on, a random candidate that the task accepts is executed (the simulated expert's
  action when none is), since nobody has ranked them yet.
* :func:`write_unlabelled_clouds`: recorded clouds (a folder of ``.npy`` / ``.npz`` files,
  world or table frame, metres) each get one sample; nothing is executed.

``candidates_fn(cloud (N, 3)) -> (K, 2, 3)`` works in the cloud's frame, as
:meth:`pam_jax.eval.closed_loop.Agent.candidates` does. It may also return a pair (as sampled,
as executed): the samples hold the candidates as sampled, the rollout executes them as executed.
"""
from __future__ import annotations

import pathlib
import re
from typing import Callable

import numpy as np

from pam_jax import tasks as tasks_lib
from pam_jax.data import layout
from pam_jax.sim import episodes
from pam_jax.sim.experts import expert_actions

__all__ = ["CLOUD_SUFFIXES", "load_cloud", "write_unlabelled_clouds", "write_unlabelled_rollouts"]

CLOUD_SUFFIXES = (".npy", ".npz")
NAMESPACE = episodes.NAMESPACE
KIND = "rollout"                    # the sample ids' middle word: <data task>_rollout_...
_RNG_ROLLOUT = 0xA110               # stream tag for np.random.default_rng([episode, tag])
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _split(out, where: str) -> tuple[np.ndarray, np.ndarray]:
    """candidates_fn's result -> (as sampled, as executed), both checked (K, 2, 3)."""
    raw, done_as = out if isinstance(out, tuple) else (out, out)
    cands = episodes._check_candidates(raw, where)
    acts = episodes._check_candidates(done_as, f"{where} (as executed)")
    if acts.shape != cands.shape:
        raise ValueError(f"candidates_fn at {where}: the executed candidates' shape {acts.shape} "
                         f"differs from the candidates' {cands.shape}")
    return cands, acts


def write_unlabelled_rollouts(task: str, out_root, *, states: int,
                              candidates_fn: Callable[[np.ndarray], np.ndarray], seed: int = 0,
                              num_points: int | None = None, warmup_steps: int = 0,
                              steps_per_episode: int | None = 10, stride: int | None = None,
                              max_steps: int | None = None, max_alternatives: int = 10,
                              if_exists: str = "skip", progress: bool = True) -> dict:
    """Roll a policy out in simulated ``task`` and write ``states`` recorded states, unlabelled.

    Episodes, warm-up, horizon and recorded steps follow
    :func:`pam_jax.sim.episodes.write_preference_round` (same arguments). Returns ``{"task",
    "data_task", "kind", "out_root", "samples", "skipped_existing", "states", "episodes",
    "records"}``; a record holds sample_id, episode_idx, step and candidates (K, 2, 3)."""
    states = episodes._check_count(states, "states")
    seed = episodes._check_count(seed, "seed")
    episodes._check_count(warmup_steps, "warmup_steps")
    episodes._check_count(max_alternatives, "max_alternatives", 1)
    if steps_per_episode is not None:
        episodes._check_count(steps_per_episode, "steps_per_episode", 1)
    if stride is not None:
        episodes._check_count(stride, "stride", 1)
    if steps_per_episode is None and stride is None:
        raise ValueError("steps_per_episode, stride: give at least one (states per episode or steps between them)")
    if max_steps is not None:
        episodes._check_count(max_steps, "max_steps", 1)
    if not callable(candidates_fn):
        raise ValueError("candidates_fn: expected a callable cloud (N, 3) -> (K, 2, 3)")
    if if_exists not in episodes.IF_EXISTS:
        raise ValueError(f"if_exists: expected one of {episodes.IF_EXISTS}, got {if_exists!r}")
    out_root = pathlib.Path(out_root)
    t, spec = episodes._open_task(task, num_points)
    out_root.mkdir(parents=True, exist_ok=True)

    horizon = t.step_limit if max_steps is None else min(t.step_limit, max_steps)
    every = stride if stride is not None else max(1, -(-horizon // steps_per_episode))
    records, written, skipped, used, ep_count = [], 0, 0, 0, 0
    bar = episodes._progress(states, f"{t.name} unlabelled states", "state", progress)
    try:
        while len(records) < states and ep_count < 10 * states + 10:
            ep = seed + ep_count
            ep_count += 1
            t.reset(ep)
            rng = np.random.default_rng([ep, _RNG_ROLLOUT])
            for _ in range(int(rng.integers(0, warmup_steps + 1))):
                if t.done:
                    break
                t.step(expert_actions(t, rng, max_alternatives)[0])
            offset = t.steps_taken + (int(rng.integers(0, every)) if every > 1 else 0)
            in_ep = 0
            while (not t.done and t.steps_taken < horizon and len(records) < states
                   and (steps_per_episode is None or in_ep < steps_per_episode)):
                step = t.steps_taken
                cloud = t.observe()
                cands, acts = _split(candidates_fn(cloud.copy()), f"episode {ep} step {step}")
                if not (step < offset or (step - offset) % every):
                    sid = f"{spec.name}_{KIND}_ep{ep:05d}_step{step:02d}"
                    records.append({"sample_id": sid, "episode_idx": ep, "step": step, "candidates": cands})
                    if episodes._exists(out_root, sid, if_exists):
                        skipped += 1
                    else:
                        layout.write_sample(
                            out_root, sid, points=cloud, episode_idx=ep, action_type=t.action_type,
                            candidates=cands.reshape(-1, 3), annotated=False, namespace=NAMESPACE,
                            tag=f"sim_{t.name}_{KIND}", overwrite=(if_exists == "overwrite"),
                            extra_metadata={"sim": {"task": t.name, "seed": ep, "step": step, "frame": "world",
                                                    "num_candidates": len(cands)}})
                        written += 1
                    in_ep += 1
                    bar.update(1)
                t.step(episodes._execute_unrecorded(t, "random", acts, rng, max_alternatives))
            used += bool(in_ep)
    finally:
        bar.close()
    return {"task": t.name, "data_task": spec.name, "kind": "finetune", "out_root": str(out_root),
            "samples": written, "skipped_existing": skipped, "states": len(records), "episodes": used,
            "records": records}


def load_cloud(path) -> np.ndarray:
    """One recorded cloud -> (N, 3) float64, its non-finite rows (a depth sensor's holes) dropped.

    ``.npy``: an (N, C >= 3) array, the first three columns x, y, z in metres (colour may
    follow). ``.npz``: the array ``points``, else its only array. Raises ValueError (one line)."""
    path = pathlib.Path(path)
    where = path.name
    magic = {".npy": b"\x93NUMPY", ".npz": b"PK"}[path.suffix]
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(magic))
    except OSError as e:
        raise ValueError(f"{where}: cannot read ({e.strerror or e})") from None
    if head != magic:
        raise ValueError(f"{where}: not a numpy {path.suffix} file (no {path.suffix} header)")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{where}: cannot load it ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if isinstance(f, np.ndarray):
        a = f
    else:
        with f:
            names = list(f.files)
            if "points" not in names and len(names) != 1:
                raise ValueError(f"{where}: expected an array 'points' (arrays: {', '.join(names[:6]) or 'none'})")
            try:
                a = f["points" if "points" in names else names[0]]
            except (OSError, ValueError, EOFError) as e:
                raise ValueError(f"{where}: unreadable array ({e})") from None
    if a.dtype.kind not in "fiu" or a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"{where}: expected an (N, 3) array of numbers (x, y, z; extra columns "
                         f"ignored), got {a.dtype} {a.shape}")
    p = a[:, :3].astype(np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        raise ValueError(f"{where}: no finite point")
    if np.abs(p).max() > layout.MAX_ABS_COORD:
        raise ValueError(f"{where}: a coordinate beyond {layout.MAX_ABS_COORD:g} (expected metres)")
    return p


def cloud_files(folder) -> list[pathlib.Path]:
    """The ``.npy`` / ``.npz`` files directly in ``folder``, sorted by name."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--clouds {folder}: no such directory")
    files = sorted(p for p in folder.iterdir() if p.suffix in CLOUD_SUFFIXES and p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"--clouds {folder}: no {' or '.join(CLOUD_SUFFIXES)} files in it")
    return files


def write_unlabelled_clouds(task: str, clouds, out_root, *,
                            candidates_fn: Callable[[np.ndarray], np.ndarray],
                            if_exists: str = "skip", progress: bool = True) -> dict:
    """One unlabelled sample per recorded cloud in folder ``clouds`` (sorted by file name; the
    i-th file is episode i, sample ``<data task>_rollout_<file stem>``). Every file is read and
    checked before anything is written, so a bad one stops the command with its name and
    nothing half done. The stored cloud is the file's finite points, unchanged. Returns
    ``{"task", "data_task", "kind", "out_root", "samples", "skipped_existing", "states",
    "records"}`` (a record: sample_id, episode_idx, file, candidates)."""
    if not callable(candidates_fn):
        raise ValueError("candidates_fn: expected a callable cloud (N, 3) -> (K, 2, 3)")
    if if_exists not in episodes.IF_EXISTS:
        raise ValueError(f"if_exists: expected one of {episodes.IF_EXISTS}, got {if_exists!r}")
    spec = tasks_lib.get_task(task)
    action_type = spec.primitive
    files = cloud_files(clouds)
    loaded = [(f, load_cloud(f)) for f in files]
    ids = [f"{spec.name}_{KIND}_{_UNSAFE.sub('_', f.stem)}" for f in files]
    if len(set(ids)) != len(ids):
        dup = next(f.name for f, i in zip(files, ids) if ids.count(i) > 1)
        raise ValueError(f"--clouds: {dup} names the same sample as another file (same stem)")
    out_root = pathlib.Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    records, written, skipped = [], 0, 0
    bar = episodes._progress(len(files), f"{spec.name} recorded clouds", "cloud", progress)
    try:
        for i, ((f, cloud), sid) in enumerate(zip(loaded, ids)):
            if episodes._exists(out_root, sid, if_exists):
                skipped += 1
                bar.update(1)
                continue
            cands, _ = _split(candidates_fn(cloud.copy()), f.name)
            layout.write_sample(out_root, sid, points=cloud, episode_idx=i, action_type=action_type,
                                candidates=cands.reshape(-1, 3), annotated=False, namespace=NAMESPACE,
                                tag=f"recorded_{spec.name}_{KIND}", overwrite=(if_exists == "overwrite"),
                                extra_metadata={"recorded": {"file": f.name, "num_candidates": len(cands)}})
            records.append({"sample_id": sid, "episode_idx": i, "file": f.name, "candidates": cands})
            written += 1
            bar.update(1)
    finally:
        bar.close()
    return {"task": spec.name, "data_task": spec.name, "kind": "finetune", "out_root": str(out_root),
            "samples": written, "skipped_existing": skipped, "states": len(files), "records": records}

"""The built-in synthetic task: pick both ends of a thin bar.

Scenes are generated on the fly (no files): a bar of random length, position and yaw, sampled as
a noisy point cloud. The correct action picks the two endpoints in EITHER order, so the action
distribution is truly bimodal. The modes are named by the x-order of the endpoints: mode 0 picks
the lower-x endpoint first ("left first"), mode 1 the other. Data for global step s comes from a
key derived from (seed, s), so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import numpy as np

from pam_jax.normalize import NormStats

LENGTH = (0.3, 0.6)     # metres
CENTRE = 0.1            # centre uniform in [-CENTRE, CENTRE]^2
WIDTH, HEIGHT = 0.03, 0.02
NOISE = 0.002


def make_scene(rng: np.random.Generator, num_points: int = 1000):
    """-> cloud (Np, 3), endpoints (2, 3) ordered by x (left first), bar length."""
    length = rng.uniform(*LENGTH)
    yaw = rng.uniform(0.0, 2 * np.pi)
    centre = np.array([*rng.uniform(-CENTRE, CENTRE, 2), 0.0])
    local = rng.uniform(-0.5, 0.5, (num_points, 3)) * np.array([length, WIDTH, HEIGHT])
    local[:, 2] += HEIGHT / 2
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    cloud = local @ rot.T + centre + rng.normal(0.0, NOISE, (num_points, 3))
    ends = np.array([[length / 2, 0.0, HEIGHT / 2], [-length / 2, 0.0, HEIGHT / 2]]) @ rot.T + centre
    ends = ends[np.argsort(ends[:, 0])]
    return cloud.astype(np.float32), ends.astype(np.float32), float(length)


def make_batch(rng: np.random.Generator, batch_size: int, num_points: int) -> dict[str, np.ndarray]:
    clouds, poses, lengths = [], [], []
    for _ in range(batch_size):
        cloud, ends, length = make_scene(rng, num_points)
        clouds.append(cloud)
        poses.append(np.stack([ends, ends[::-1]]))  # M=2 annotated poses: both orders
        lengths.append(length)
    return {
        "points": np.stack(clouds),
        "actions": np.stack(poses).astype(np.float32),               # (B, 2, 2, 3)
        "action_valid": np.ones((batch_size, 2), bool),
        "action_mask": np.ones((batch_size, 2), np.float32),
        "length": np.asarray(lengths, np.float32),
    }


class ToyBimodalData:
    """Process-local batches for global step `step`; stateless, so resuming is exact."""

    def __init__(self, *, batch_size: int, num_points: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1):
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        self.batch_size, self.num_points, self.seed = batch_size, num_points, seed
        self.process_index, self.process_count = process_index, process_count

    def batch(self, step: int) -> dict[str, np.ndarray]:
        full = make_batch(np.random.default_rng([self.seed, step]), self.batch_size, self.num_points)
        n = self.batch_size // self.process_count
        lo = self.process_index * n
        return {k: v[lo : lo + n] for k, v in full.items()}

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        del state

    def norm_stats(self) -> NormStats:
        batch = make_batch(np.random.default_rng([self.seed, 10**9]), 512, 16)
        return NormStats.from_actions(batch["actions"])

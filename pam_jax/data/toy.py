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


def score_samples(samples: np.ndarray, ends: np.ndarray, lengths: np.ndarray, tol: float = 0.05):
    """samples (S, N, 2, 3), true ordered ends (S, 2, 3), lengths (S,).

    -> dict: `within` = fraction of samples whose two points are both within tol*length of a true
    endpoint pair (either order); `mode0`/`mode1` = fraction of samples nearer each order.
    """
    d0 = np.linalg.norm(samples - ends[:, None], axis=-1).max(-1)          # (S, N) left first
    d1 = np.linalg.norm(samples - ends[:, None, ::-1], axis=-1).max(-1)    # right first
    best = np.minimum(d0, d1)
    within = best <= tol * lengths[:, None]
    mode0 = d0 <= d1
    return {
        "within": float(within.mean()),
        "mode0": float(mode0.mean()),
        "mode1": float(1.0 - mode0.mean()),
    }


def evaluate(run_dir, *, scenes: int = 64, samples: int = 16, seed: int = 12345, png: str | None = None):
    """Sample a trained toy policy on fresh scenes; -> score_samples(...) dict (+ optional PNG)."""
    import jax

    from pam_jax.models.policy import sample_actions
    from pam_jax.train.loop import load_policy

    cfg, graphdef, params, norm = load_policy(run_dir)
    batch = make_batch(np.random.default_rng([seed, 7]), scenes, cfg.data.num_points)
    ends = batch["actions"][:, 0]
    out = sample_actions(graphdef, params, batch["points"], np.asarray(norm.center, np.float32),
                         np.asarray(norm.scale, np.float32), jax.random.key(seed),
                         num_samples=samples, diff=cfg.diffusion, action_points=cfg.model.action_points)
    out = np.asarray(out)
    result = score_samples(out, ends, batch["length"])
    if png:
        plot_samples(batch["points"], out, ends, png)
    return result


def plot_samples(clouds, samples, ends, png, max_scenes: int = 6):
    """Top view of a few scenes: the cloud, the true ends, and the sampled pick pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_scenes, len(clouds))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.scatter(clouds[i, :, 0], clouds[i, :, 1], s=1, c="0.7")
        for s in samples[i]:
            ax.plot(s[:, 0], s[:, 1], "-", c="tab:blue", alpha=0.3, lw=0.8)
            ax.scatter(s[0, 0], s[0, 1], s=10, c="tab:green")   # first pick point
            ax.scatter(s[1, 0], s[1, 1], s=10, c="tab:red")     # second pick point
        ax.scatter(ends[i, :, 0], ends[i, :, 1], marker="x", s=60, c="k")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("sampled pick pairs (green = first, red = second, x = true ends)")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png

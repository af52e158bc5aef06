"""Evaluation of the toy bar task: sample a trained policy on fresh scenes and score the samples
against the true endpoints (both orders are correct; the two orders are the two modes)."""
from __future__ import annotations

import jax
import numpy as np

from pam_jax.models.policy import sample_actions
from pam_jax.toy.data import make_batch
from pam_jax.train.restore import load_policy


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
    policy = load_policy(run_dir)
    cfg, norm = policy.cfg, policy.norm
    batch = make_batch(np.random.default_rng([seed, 7]), scenes, cfg.data.num_points)
    ends = batch["actions"][:, 0]
    out = sample_actions(policy.graphdef, policy.params, batch["points"], np.asarray(norm.center, np.float32),
                         np.asarray(norm.scale, np.float32), jax.random.key(seed),
                         num_samples=samples, diff=cfg.diffusion, action_points=cfg.model.action_points,
                         runtime=cfg.runtime)
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

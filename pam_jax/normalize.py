"""Normalization statistics: one affine map shared by the point cloud and the actions.

The denoiser works in a frame where every action coordinate lies in [-1, 1] (so DDIM's
`clip_sample` is meaningful). The point cloud goes through the *same* map, so the 3D rotary
encoding compares queries (noisy action xyz) and keys (point xyz) in one coordinate system.
The statistics travel with every checkpoint.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class NormStats:
    """x_norm = (x - center) / scale, per axis."""

    center: tuple[float, float, float]
    scale: tuple[float, float, float]

    @classmethod
    def from_actions(cls, actions, *, margin: float = 1.1, min_scale: float = 1e-3) -> "NormStats":
        """Fit the map to the bounds of every finite action point (array of shape (..., 3)).

        The centre is per axis; the scale is ONE number for all axes (the largest half-range times
        `margin`), so every action coordinate lands in [-1, 1] while the geometry stays undistorted:
        a nearly constant axis (the table height) is not blown up, and distances keep their ratios.
        """
        a = np.asarray(actions, dtype=np.float64).reshape(-1, 3)
        a = a[np.isfinite(a).all(axis=1)]
        if a.shape[0] == 0:
            raise ValueError("NormStats.from_actions: no finite action points to fit")
        lo, hi = a.min(axis=0), a.max(axis=0)
        center = (hi + lo) / 2
        scale = max(float(np.max(hi - lo)) / 2 * margin, min_scale)
        return cls(tuple(float(c) for c in center), (scale, scale, scale))

    @classmethod
    def identity(cls) -> "NormStats":
        return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def normalize(self, x):
        """Works on numpy or jax arrays of shape (..., 3)."""
        return (x - np.asarray(self.center, np.float32)) / np.asarray(self.scale, np.float32)

    def unnormalize(self, x):
        return x * np.asarray(self.scale, np.float32) + np.asarray(self.center, np.float32)

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        try:
            center, scale = tuple(map(float, d["center"])), tuple(map(float, d["scale"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"normalization stats: malformed record {d!r} ({e})") from None
        if len(center) != 3 or len(scale) != 3 or min(scale) <= 0:
            raise ValueError(f"normalization stats: need 3 centres and 3 positive scales, got {d!r}")
        return cls(center, scale)

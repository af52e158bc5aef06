"""Point-cloud sampling from simulated object surfaces (what a top-down depth camera sees).

Each function returns noise-free points in the world frame; :meth:`pam_jax.sim.base.Task.observe`
adds the sensor noise. Randomness comes only from the ``rng`` argument.

* :func:`sample_tube` -- a rope: points on the upper half of a tube around a polyline (the
  lower half faces the table and is not seen).
* :func:`sample_spheres` -- granular material: points on the upper hemispheres of spheres.
* :func:`sample_triangles` -- cloth: area-weighted uniform points on a triangle mesh (both
  layers of a fold are returned; occlusion is ignored).
"""
from __future__ import annotations

import numpy as np

__all__ = ["sample_tube", "sample_spheres", "sample_triangles", "densify_polyline", "grid_upsample"]


def sample_tube(centreline: np.ndarray, radius: float, n: int, rng: np.random.Generator) -> np.ndarray:
    c = np.asarray(centreline, dtype=np.float64)
    seg = c[1:] - c[:-1]
    length = np.linalg.norm(seg, axis=1)
    w = length / length.sum() if length.sum() > 0 else np.full(len(seg), 1.0 / len(seg))
    k = rng.choice(len(seg), size=n, p=w)
    t = rng.random(n)[:, None]
    centre = c[k] + t * seg[k]
    tangent = seg[k] / np.maximum(length[k], 1e-12)[:, None]
    up = np.array([0.0, 0.0, 1.0])
    side = np.cross(up, tangent)
    norm = np.linalg.norm(side, axis=1)
    side = np.where(norm[:, None] > 1e-6, side / np.maximum(norm, 1e-12)[:, None], np.array([1.0, 0.0, 0.0]))
    upward = np.cross(tangent, side)
    upward *= np.where(upward[:, 2] < 0, -1.0, 1.0)[:, None]
    phi = rng.uniform(0.0, np.pi, n)[:, None]
    return centre + radius * (np.cos(phi) * side + np.sin(phi) * upward)


def sample_spheres(centres: np.ndarray, radius: float, n: int, rng: np.random.Generator) -> np.ndarray:
    c = np.asarray(centres, dtype=np.float64)
    k = rng.integers(0, len(c), n)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[:, 2] = np.abs(v[:, 2])
    return c[k] + radius * v


def sample_triangles(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    w = area / area.sum() if area.sum() > 0 else np.full(len(faces), 1.0 / len(faces))
    k = rng.choice(len(faces), size=n, p=w)
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1.0
    r1, r2 = np.where(flip, 1.0 - r1, r1), np.where(flip, 1.0 - r2, r2)
    return a[k] + r1[:, None] * (b[k] - a[k]) + r2[:, None] * (c[k] - a[k])


def densify_polyline(points: np.ndarray, per_segment: int) -> np.ndarray:
    """``per_segment`` evenly spaced points on every segment, plus the last vertex."""
    p = np.asarray(points, dtype=np.float64)
    t = (np.arange(per_segment) / per_segment)[None, :, None]
    dense = p[:-1, None, :] + t * (p[1:] - p[:-1])[:, None, :]
    return np.concatenate([dense.reshape(-1, p.shape[1]), p[-1:]], axis=0)


def grid_upsample(grid: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of an (R, C, 3) vertex grid to ((R-1)*f+1, (C-1)*f+1, 3)."""
    g = np.asarray(grid, dtype=np.float64)
    r, c = g.shape[:2]
    u = np.linspace(0, r - 1, (r - 1) * factor + 1)
    v = np.linspace(0, c - 1, (c - 1) * factor + 1)
    i0 = np.minimum(np.floor(u).astype(int), r - 2)
    j0 = np.minimum(np.floor(v).astype(int), c - 2)
    fu = (u - i0)[:, None, None]
    fv = (v - j0)[None, :, None]
    g00 = g[i0][:, j0]
    g10 = g[i0 + 1][:, j0]
    g01 = g[i0][:, j0 + 1]
    g11 = g[i0 + 1][:, j0 + 1]
    return (1 - fu) * (1 - fv) * g00 + fu * (1 - fv) * g10 + (1 - fu) * fv * g01 + fu * fv * g11

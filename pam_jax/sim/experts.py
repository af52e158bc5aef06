"""Scripted experts: noisy, multimodal demonstrators standing in for the human annotators.

``expert_actions(task, rng, max_alternatives=10) -> (M, 2, 3)`` gives 1 <= M <= max_alternatives
alternative actions for the task's current state, all of them plausible choices of a
demonstrator; the first one is the one to execute. Every returned action passes
``task.check_action`` (the expert uses privileged state: vertex identities, sphere centres).
Noise: each point gets Gaussian noise (a few millimetres); which alternative comes first is
drawn at random, weighted by how much it is needed.

* rope: the target circle (circumference = rope length) is fitted to the rope (centre at the
  rope's centroid; the start angle and the direction are chosen to best match the current
  vertex order). Vertices are picked with probability ~ the 4th power of their distance from their
  circle position (distinct vertices, at least 3 apart) and placed there.
* granular: the "T" is placed at the pile's centroid in the quarter-turn that already holds
  the most spheres. Spheres outside the T are chosen with probability ~ their distance from it
  (alternatives at least 4 cm apart); each sweep starts just behind the sphere and pushes it
  along the straight line to the nearest point of the T (the wiper stops when the sphere is
  about one radius inside).
* cloth: flings from the cloth's :meth:`~pam_jax.sim.cloth.ClothTask.fling_pairs`, points far
  apart on the flat cloth: the first choices shuffled, then the fallbacks shuffled (square: the
  four pairs of adjacent corners, then pairs on one edge inset by one or two vertices; T-shirt:
  hem corners, shoulders, sleeve ends, then inset hem points and the lower sleeve corners).
"""
from __future__ import annotations

import numpy as np

__all__ = ["expert_actions"]


def expert_actions(task, rng: np.random.Generator, max_alternatives: int = 10) -> np.ndarray:
    if isinstance(max_alternatives, bool) or not isinstance(max_alternatives, (int, np.integer)) \
            or max_alternatives < 1:
        raise ValueError(f"max_alternatives: expected a positive int, got {max_alternatives!r}")
    if rng is None:
        rng = np.random.default_rng(0)
    fn = {"rope": _rope, "granular": _granular, "cloth": _cloth}.get(task.name)
    if fn is None:
        raise ValueError(f"no scripted expert for task {task.name!r}")
    cands = fn(task, rng, int(max_alternatives))
    out = []
    for a in cands:
        chk = task.check_action(a)
        if chk.ok:
            out.append(chk.action)
        if len(out) == max_alternatives:
            break
    if not out:  # should not happen; fall back to a harmless valid action
        out.append(_fallback(task))
    return np.stack(out).astype(np.float64)


def _weighted_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order without replacement, earlier = more likely for larger weights."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.max() + 1e-9 if w.max() > 0 else np.ones_like(w)
    keys = np.log(rng.random(len(w)) + 1e-300) / w   # Efraimidis-Spirakis, in log space
    return np.argsort(-keys, kind="stable")


# ---------------------------------------------------------------------------- rope
def rope_targets(task) -> np.ndarray:
    """(n, 2) circle positions assigned to the rope vertices (best start angle/direction)."""
    v = task.vertices()[:, :2]
    n = len(v)
    c = v.mean(axis=0)
    rad = task.length / (2 * np.pi)
    base = 2 * np.pi * np.arange(n) / n
    best, best_cost = None, np.inf
    for sign in (1.0, -1.0):
        for th in np.linspace(0, 2 * np.pi, 72, endpoint=False):
            ang = th + sign * base
            t = c + rad * np.stack([np.cos(ang), np.sin(ang)], axis=1)
            cost = np.sum((t - v) ** 2)
            if cost < best_cost:
                best, best_cost = t, cost
    return best


def _rope(task, rng, m):
    v = task.vertices()
    t = rope_targets(task)
    err = np.linalg.norm(v[:, :2] - t, axis=1)
    chosen = []
    for i in _weighted_order(err ** 4, rng):
        if err[i] < 0.01 and chosen:
            continue
        if all(abs(int(i) - j) >= 3 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == m:
            break
    out = []
    for i in chosen:
        pick = v[i] + np.r_[rng.normal(0, 0.003, 2), 0.0]
        place = np.r_[t[i] + rng.normal(0, 0.005, 2), task.radius]
        out.append(np.stack([pick, place]))
    return out


# ---------------------------------------------------------------------------- granular
def _granular(task, rng, m):
    c = task.centres()
    r = task.sphere_radius
    mask_fn, offset = task.target_frame_for(c)
    inside = mask_fn(c)
    outside = np.flatnonzero(~inside)
    if len(outside) == 0:
        outside = np.arange(len(c))
    dist = task.distance_to_target(c[outside], offset)
    chosen = []
    for k in _weighted_order(dist + 1e-3, rng):
        p = c[outside[k]]
        if all(np.linalg.norm(p - c[j]) >= 0.04 for j in chosen):
            chosen.append(outside[k])
        if len(chosen) == m:
            break
    out = []
    half = task.wiper_half_thickness
    for j in chosen:
        p = c[j]
        q = task.nearest_target_point(p, offset, inset=2 * r)
        d = q - p
        length = np.linalg.norm(d)
        if length < 1e-6:
            d = p - c.mean(axis=0)
            length = max(np.linalg.norm(d), 1e-6)
        d = d / length
        start = p - d * (half + r + 0.01)
        end = q - d * (half + r)
        if np.linalg.norm(end - start) < 0.03:
            end = start + d * 0.03
        start = start + rng.normal(0, 0.004, 2)
        end = end + rng.normal(0, 0.004, 2)
        out.append(np.array([[start[0], start[1], 0.0], [end[0], end[1], 0.0]]))
    return out


# ---------------------------------------------------------------------------- cloth
def _cloth(task, rng, m):
    first, fallback = task.fling_pairs()
    order = list(rng.permutation(len(first)))
    pairs = [first[i] for i in order] + [fallback[i] for i in rng.permutation(len(fallback))]
    v = task.vertices()
    out = []
    for a, b in pairs:
        pa = v[a] + np.r_[rng.normal(0, 0.004, 2), 0.0]
        pb = v[b] + np.r_[rng.normal(0, 0.004, 2), 0.0]
        out.append(np.stack([pa, pb]))
    return out


def _fallback(task):
    chk = task.check_action(task.default_action())
    return chk.action

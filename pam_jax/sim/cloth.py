"""Cloth unfolding: flatten a folded T-shirt (or a square cloth) with dual-arm flings.

Object: a MuJoCo ``flexcomp`` cloth (dim=2), inextensible edges (equality constraints), no
bending stiffness, no self-collision (folded layers may pass through each other), with vertex
damping standing in for air drag, on a table with friction. Two shapes (``ClothTask(shape=...)``):

* ``"tshirt"`` (default, the paper's third task): a short-sleeved T-shirt outline cut from a
  regular lattice (spacing :attr:`ClothTask.spacing`, 0.032 m): a body of 10 x 12 vertices
  (0.29 m wide, 0.35 m long), a sleeve of 3 x 4 vertices on each side of its top rows (0.10 m
  long, 0.10 m wide; 0.48 m across the sleeves) and a neck notch (two vertices of the top row
  removed), 142 vertices, given to ``flexcomp type="direct"`` as points and triangles;
* ``"square"``: the former square cloth, a ``flexcomp`` grid of 12 x 12 vertices, 0.36 m on a
  side (:class:`SquareClothTask` is this shape as a class, for ``pam_jax.tasks.register``).

Both have about 140 vertices and cost the same to simulate. The start state is the flat cloth
folded 1-3 times along random lines, then randomly rotated and shifted, and settled.

Action ``(2, 3)``: the two pick points (published rows 0 and 1 of ``action_poses``; the one with
the smaller x is used by the left arm). Each grasps the nearest cloth vertex in 3D (refused when
no vertex lies within :attr:`ClothTask.grasp_tolerance` in xy, or when both picks grasp the
same spot). The fling: grasp (the vertex and its mesh neighbours), lift, move to 0.5 m height
above the workspace centre stretched apart along x to 95% of the grasped points' distance on the
flat cloth, hold while the cloth hangs, swing forward and down until the hem touches the table,
lay the cloth down by moving backwards while lowering, release.

Metric: ``coverage``, :func:`pam_jax.metrics.normalized_coverage` of the cloth (the published
slot-grid form; every lattice cell bilinearly upsampled 3x, particle radius 0.8 x the upsampled
spacing) divided by the same measure (same form) of the flat cloth of the same shape, laid out
as at rest, so the flat cloth scores 1.0 (a flat cloth in another pose scores within a few per
cent of it: the grid's cells follow the bounding box). ``score()`` =
coverage; success = coverage >= 0.75.
"""
from __future__ import annotations

import numpy as np

from pam_jax import metrics
from pam_jax.sim import render
from pam_jax.sim.base import FlexGripper, Task

__all__ = ["ClothTask", "SquareClothTask", "SHAPES", "tshirt_mask"]

SHAPES = ("tshirt", "square")


def tshirt_mask(body_cols: int = 10, rows: int = 12, sleeve_cols: int = 3, sleeve_rows: int = 4,
                neck: int = 2) -> np.ndarray:
    """(cols, rows) bool lattice of a T-shirt, x along the first axis, the hem at row 0: the
    body in the middle columns, sleeves beside its top ``sleeve_rows`` rows, and ``neck``
    vertices removed from the middle of the top row."""
    cols = body_cols + 2 * sleeve_cols
    m = np.zeros((cols, rows), bool)
    m[sleeve_cols:sleeve_cols + body_cols, :] = True
    m[:sleeve_cols, rows - sleeve_rows:] = True
    m[cols - sleeve_cols:, rows - sleeve_rows:] = True
    mid = cols // 2
    m[mid - neck // 2:mid - neck // 2 + neck, rows - 1] = False
    return m


def _lattice_faces(index: np.ndarray) -> np.ndarray:
    """Two triangles per lattice cell whose four corners exist (the grid flexcomp's pattern);
    ``index`` (cols, rows) holds vertex ids, -1 where there is none."""
    faces = []
    for a in range(index.shape[0] - 1):
        for b in range(index.shape[1] - 1):
            v00, v10, v11, v01 = index[a, b], index[a + 1, b], index[a + 1, b + 1], index[a, b + 1]
            if min(v00, v10, v11, v01) >= 0:
                faces += [(v00, v10, v11), (v00, v11, v01)]
    return np.asarray(faces, np.int64)


class ClothTask(Task):
    name = "cloth"
    action_type = "fling"
    step_limit = 10
    pose_rows = (0, 1)
    pick_rows = (0, 1)
    success_threshold = 0.75
    tie_tol = 0.01
    workspace_lo = np.array([-0.45, -0.45, 0.0])
    workspace_hi = np.array([0.45, 0.45, 0.3])
    default_obs_points = 3500

    grid_size = 12           # square: vertices per side
    side = 0.36              # square: side length (m)
    spacing = 0.032          # T-shirt: lattice spacing (m)
    timestep = 0.003
    grasp_tolerance = 0.03
    min_pick_distance = 0.02
    fling_height = 0.5
    max_stretch = 0.6
    upsample = 3

    def __init__(self, *, shape: str = "tshirt", **kwargs):
        if shape not in SHAPES:
            raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")
        self.shape = shape
        super().__init__(**kwargs)

    def _xml(self) -> str:
        if self.shape == "square":
            n, sp = self.grid_size, self.side / (self.grid_size - 1)
            flex = (f'<flexcomp name="cloth" type="grid" count="{n} {n} 1" spacing="{sp} {sp} {sp}" '
                    f'pos="0 0 0.004"')
        else:
            mask = tshirt_mask()
            index = np.full(mask.shape, -1)
            index[mask] = np.arange(mask.sum())             # x-major, like the grid flexcomp
            a, b = np.nonzero(mask)
            sp = self.spacing
            pts = np.stack([(a - (mask.shape[0] - 1) / 2) * sp, (b - (mask.shape[1] - 1) / 2) * sp,
                            np.full(len(a), 0.004)], axis=1)
            point = " ".join(f"{v:.6f}" for v in pts.ravel())
            element = " ".join(str(int(v)) for v in _lattice_faces(index).ravel())
            flex = f'<flexcomp name="cloth" type="direct" point="{point}" element="{element}"'
        return f"""
<mujoco model="cloth">
  <option timestep="{self.timestep}" integrator="implicitfast"/>
  <worldbody>
    <geom name="table" type="plane" size="1 1 0.01" friction="0.8"/>
    <body name="left_gripper" mocap="true" pos="-0.3 0 0.6">
      <geom type="sphere" size="0.01" contype="0" conaffinity="0" rgba="0.9 0.2 0.2 1"/>
    </body>
    <body name="right_gripper" mocap="true" pos="0.3 0 0.6">
      <geom type="sphere" size="0.01" contype="0" conaffinity="0" rgba="0.2 0.9 0.2 1"/>
    </body>
    {flex}
              dim="2" radius="0.003" mass="0.15" rgba="0.8 0.3 0.3 1">
      <edge equality="true" damping="0.05" solref="0.006 1"/>
      <contact selfcollide="none" condim="3" friction="0.8"/>
    </flexcomp>
  </worldbody>
</mujoco>"""

    def _setup(self) -> None:
        self.gripper = FlexGripper(self.model, self.data)
        self.model.dof_damping[:] = 0.01
        self.flat = self.gripper.base.copy()            # rest (flat) vertex positions
        e = self.model.flex_elemdataadr[0]
        self.faces = self.model.flex_elem[e:e + 3 * self.model.flex_elemnum[0]].reshape(-1, 3).copy()
        sp = self.side / (self.grid_size - 1) if self.shape == "square" else self.spacing
        xy = self.flat[:, :2]
        self.lattice = np.rint((xy - xy.min(axis=0)) / sp).astype(np.int64)   # (x, y) lattice coords
        self.extent = float((xy.max(axis=0) - xy.min(axis=0)).max())
        self._upsample_weights = self._bilinear_weights()
        self.particle_radius = 0.8 * sp / self.upsample
        self.reference_area = metrics.normalized_coverage(self._dense(self.flat), self.particle_radius, 1.0)

    def _bilinear_weights(self) -> np.ndarray:
        """(fine points, vertices): every lattice cell with four vertices, bilinearly upsampled
        ``upsample`` times; each fine lattice point once."""
        f = self.upsample
        at = {tuple(c): i for i, c in enumerate(self.lattice)}
        rows, seen = [], set()
        for (a, b), v00 in at.items():
            corners = [at.get((a + 1, b)), at.get((a, b + 1)), at.get((a + 1, b + 1))]
            if any(c is None for c in corners):
                continue
            v10, v01, v11 = corners
            for i in range(f + 1):
                for j in range(f + 1):
                    key = (a * f + i, b * f + j)
                    if key in seen:
                        continue
                    seen.add(key)
                    u, w = i / f, j / f
                    row = np.zeros(len(self.lattice))
                    row[[v00, v10, v01, v11]] += [(1 - u) * (1 - w), u * (1 - w), (1 - u) * w, u * w]
                    rows.append(row)
        return np.stack(rows)

    # ------------------------------------------------------------------ state
    def vertices(self) -> np.ndarray:
        """(V, 3) cloth vertex positions (V = 142 for the T-shirt, 144 for the square; vertex
        ``i`` sits at lattice point ``self.lattice[i]`` of the flat cloth)."""
        return self.gripper.positions()

    def vertex_at(self, a: int, b: int) -> int:
        """The vertex at lattice point (a, b) (x and y indices of the flat cloth)."""
        hit = np.flatnonzero((self.lattice[:, 0] == a) & (self.lattice[:, 1] == b))
        if not len(hit):
            raise ValueError(f"no cloth vertex at lattice point ({a}, {b})")
        return int(hit[0])

    def fling_pairs(self) -> tuple[list, list]:
        """Vertex pairs a demonstrator flings by, (first choices, fallbacks): for the square the
        four pairs of adjacent corners, then pairs on one edge inset by one or two vertices; for
        the T-shirt the hem corners, the shoulders and the sleeve ends, then inset hem points and
        the lower sleeve corners."""
        at = self.vertex_at
        if self.shape == "square":
            n = self.grid_size
            corners = [(at(0, 0), at(0, n - 1)), (at(0, n - 1), at(n - 1, n - 1)),
                       (at(n - 1, n - 1), at(n - 1, 0)), (at(n - 1, 0), at(0, 0))]
            edges = []
            for k in (1, 2):
                edges += [(at(0, k), at(0, n - 1 - k)), (at(k, n - 1), at(n - 1 - k, n - 1)),
                          (at(n - 1, k), at(n - 1, n - 1 - k)), (at(k, 0), at(n - 1 - k, 0))]
            return corners, edges
        cols, rows = self.lattice.max(axis=0) + 1
        body = np.unique(self.lattice[self.lattice[:, 1] == 0, 0])          # hem columns
        lo, hi = int(body.min()), int(body.max())
        top, sleeve_low = rows - 1, int(self.lattice[self.lattice[:, 0] == 0, 1].min())
        first = [(at(lo, 0), at(hi, 0)), (at(lo, top), at(hi, top)), (at(0, top), at(cols - 1, top))]
        fallback = [(at(lo + 1, 0), at(hi - 1, 0)), (at(lo + 2, 0), at(hi - 2, 0)),
                    (at(0, sleeve_low), at(cols - 1, sleeve_low))]
        return first, fallback

    def _randomize(self, rng: np.random.Generator) -> None:
        p = self.flat.copy()
        layer = 0.006
        for _ in range(int(rng.integers(1, 4))):
            ang = rng.uniform(0, 2 * np.pi)
            nrm = np.array([np.cos(ang), np.sin(ang)])
            centre = p[:, :2].mean(axis=0)
            off = rng.uniform(-0.3, 0.3) * np.abs(p[:, :2] - centre).max()
            dist = (p[:, :2] - centre) @ nrm - off
            side = dist > 0
            if side.sum() > len(p) / 2:                  # fold the smaller part over
                side, dist = ~side, -dist
            p[side, :2] -= 2 * dist[side, None] * nrm
            p[side, 2] = p[:, 2].max() + layer + (p[:, 2].max() - p[side, 2])
        th = rng.uniform(-np.pi, np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        xy = (p[:, :2] - p[:, :2].mean(axis=0)) @ rot.T + rng.uniform(-0.08, 0.08, 2)
        p = np.concatenate([xy, p[:, 2:]], axis=1)
        self.gripper.set_positions(p)
        self._physics_steps(int(0.3 / self.timestep))

    # ------------------------------------------------------------------ action
    def _check(self, action):
        v = self.vertices()
        for k, which in enumerate(("left", "right")):
            dist = np.linalg.norm(v[:, :2] - action[k, :2], axis=1).min()
            if dist > self.grasp_tolerance:
                return False, action, (f"refused: pick point {k} is {dist:.3f} m from the cloth "
                                       f"(limit {self.grasp_tolerance} m)")
        i0, i1 = self._grasp_ids(action, v)
        gap = np.linalg.norm(action[0] - action[1])
        if i0 == i1 or gap < self.min_pick_distance:
            return False, action, (f"refused: the two picks are {gap:.3f} m apart and would "
                                   f"grasp the same spot")
        return True, action, ""

    @staticmethod
    def _grasp_ids(action, v):
        return tuple(int(np.argmin(np.linalg.norm(v - p, axis=1))) for p in action)

    def _execute(self, action: np.ndarray) -> int:
        dt = self.timestep
        v = self.vertices()
        if action[0, 0] > action[1, 0]:
            action = action[::-1]
        i0, i1 = self._grasp_ids(action, v)
        g = self.gripper
        start = np.stack([v[i0], v[i1]])
        g.grasp([g.neighbours(i0), g.neighbours(i1)], list(start))
        rest = float(np.linalg.norm(self.flat[i0] - self.flat[i1]))
        half = 0.5 * min(0.95 * rest, self.max_stretch)
        h = self.fling_height

        def pose(y, z):
            return np.array([[-half, y, z], [half, y, z]])

        n = g.move(start, start + [0.0, 0.0, 0.1], 0.1)
        n += g.move(start + [0.0, 0.0, 0.1], pose(0.0, h), 0.4)
        n += g.move(pose(0.0, h), pose(0.0, h), 0.4)                    # hold: let it hang
        hang = min(h - self.vertices()[:, 2].min(), h - 0.02)
        y0 = 0.5 * min(hang, self.extent)
        z_touch = hang + 0.015
        n += g.move(pose(0.0, h), pose(y0, z_touch), 0.25)              # swing forward and down
        n += g.move(pose(y0, z_touch), pose(y0 - 1.15 * z_touch, 0.015), 0.6)   # lay down
        g.release(self._armature0)
        self.data.mocap_pos[:2] = [[-0.3, 0.0, 0.6], [0.3, 0.0, 0.6]]
        settle = int(0.25 / dt)
        self._physics_steps(settle)
        return n + settle

    def default_action(self) -> np.ndarray:
        """A valid action: fling by the first of :meth:`fling_pairs` (two adjacent corners of
        the square; the T-shirt's hem corners)."""
        v = self.vertices()
        i, j = self.fling_pairs()[0][0]
        return np.stack([v[i], v[j]])

    # ------------------------------------------------------------------ sensing / metrics
    def _sample_surface(self, n, rng):
        return render.sample_triangles(self.vertices(), self.faces, n, rng)

    def _dense(self, p: np.ndarray) -> np.ndarray:
        return self._upsample_weights @ p

    def _score(self) -> float:
        return metrics.normalized_coverage(self._dense(self.vertices()), self.particle_radius,
                                           self.reference_area)

    def metric(self) -> dict:
        return {"coverage": self.score()}


class SquareClothTask(ClothTask):
    """The square cloth as a class: ``tasks.register(dataclasses.replace(tasks.get_task("cloth"),
    sim_class="pam_jax.sim.cloth:SquareClothTask"), replace=True)`` makes every tool use it."""

    def __init__(self, **kwargs):
        super().__init__(shape="square", **kwargs)

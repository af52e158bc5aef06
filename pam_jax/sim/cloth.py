"""Cloth unfolding: flatten a folded square cloth with dual-arm flings.

Object: a square cloth, not a T-shirt outline: a MuJoCo ``flexcomp`` grid (dim=2) of 12 x 12
vertices, 0.36 m on a side, inextensible edges (equality constraints), no bending stiffness, no
self-collision (folded layers may pass through each other), with vertex damping standing in
for air drag, on a table with friction. The start state is the flat cloth folded 1-3 times along
random lines, then randomly rotated and shifted, and settled.

Action ``(2, 3)``: the two pick points (published rows 0 and 1 of ``action_poses``; the one with
the smaller x is used by the left arm). Each grasps the nearest cloth vertex in 3D (refused when
no vertex lies within :attr:`ClothTask.grasp_tolerance` in xy, or when both picks grasp the
same spot). The fling: grasp (the vertex and its mesh neighbours), lift, move to 0.5 m height
above the workspace centre stretched apart along x to 95% of the grasped points' distance on the
flat cloth, hold while the cloth hangs, swing forward and down until the hem touches the table,
lay the cloth down by moving backwards while lowering, release.

Metric: ``coverage``, :func:`pam_jax.metrics.normalized_coverage` of the cloth (its vertex grid
bilinearly upsampled 3x, particle radius 0.8 x the upsampled spacing) divided by the same
measure of the flat cloth, so the flat cloth scores 1.0. ``score()`` = coverage; success =
coverage >= 0.75.
"""
from __future__ import annotations

import numpy as np

from pam_jax import metrics
from pam_jax.sim import render
from pam_jax.sim.base import FlexGripper, Task

__all__ = ["ClothTask"]


class ClothTask(Task):
    name = "cloth"
    action_type = "fling"
    step_limit = 10
    pose_rows = (0, 1)
    success_threshold = 0.75
    tie_tol = 0.01
    workspace_lo = np.array([-0.45, -0.45, 0.0])
    workspace_hi = np.array([0.45, 0.45, 0.3])
    default_obs_points = 3500

    grid_size = 12
    side = 0.36
    timestep = 0.003
    grasp_tolerance = 0.03
    min_pick_distance = 0.02
    fling_height = 0.5
    max_stretch = 0.6
    upsample = 3

    def _xml(self) -> str:
        n, sp = self.grid_size, self.side / (self.grid_size - 1)
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
    <flexcomp name="cloth" type="grid" count="{n} {n} 1" spacing="{sp} {sp} {sp}" pos="0 0 0.004"
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
        fine = (self.grid_size - 1) * self.upsample + 1
        self.particle_radius = 0.8 * self.side / (fine - 1)
        self.reference_area = metrics.normalized_coverage(self._dense(self.flat), self.particle_radius, 1.0)

    # ------------------------------------------------------------------ state
    def vertices(self) -> np.ndarray:
        """(144, 3) cloth vertex positions; vertex i*12+j is row i, column j of the flat grid."""
        return self.gripper.positions()

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
        y0 = 0.5 * min(hang, self.side)
        z_touch = hang + 0.015
        n += g.move(pose(0.0, h), pose(y0, z_touch), 0.25)              # swing forward and down
        n += g.move(pose(y0, z_touch), pose(y0 - 1.15 * z_touch, 0.015), 0.6)   # lay down
        g.release(self._armature0)
        self.data.mocap_pos[:2] = [[-0.3, 0.0, 0.6], [0.3, 0.0, 0.6]]
        settle = int(0.25 / dt)
        self._physics_steps(settle)
        return n + settle

    def default_action(self) -> np.ndarray:
        """A valid action: fling by two adjacent corners of the flat grid."""
        v = self.vertices()
        return np.stack([v[0], v[self.grid_size - 1]])

    # ------------------------------------------------------------------ sensing / metrics
    def _sample_surface(self, n, rng):
        return render.sample_triangles(self.vertices(), self.faces, n, rng)

    def _dense(self, p: np.ndarray) -> np.ndarray:
        g = p.reshape(self.grid_size, self.grid_size, 3)
        return render.grid_upsample(g, self.upsample).reshape(-1, 3)

    def score(self) -> float:
        return metrics.normalized_coverage(self._dense(self.vertices()), self.particle_radius,
                                           self.reference_area)

    def metric(self) -> dict:
        return {"coverage": self.score()}

"""Rope shaping: bring a rope into a circle with single-arm pick-and-place.

Object: a MuJoCo ``flexcomp`` rope (dim=1), 40 vertices 2 cm apart (0.78 m), radius 8 mm,
inextensible edges (equality constraints), no bending stiffness (a chain), no self-collision,
lying on a table with friction.

Action ``(2, 3)``: row 0 the pick point, row 1 the place point (published rows 0 and 2 of
``action_poses``). The primitive grasps the rope vertex nearest to the pick point (refused when
no vertex lies within :attr:`RopeTask.grasp_tolerance` in xy), lifts it 6 cm, carries it above
the place point, lowers it to the table and releases it. The z of both points is ignored.

Target: a circle whose circumference equals the rope length. Metrics (``metric()``): ``iou``
(2D IoU) between the rope's footprint (its densified centreline, 8 points per segment, and the
two offsets of it by +-radius sideways) and the target ring of the same width; ``chamfer`` and
``emd`` (metres) between the rope's centreline and the circle (same number of points). The metrics are translation invariant
(zero-meaned) and rotation searched (IoU, Chamfer and EMD alike), so the circle may lie anywhere.
``score()`` = IoU; success = IoU >= 0.55.
"""
from __future__ import annotations

import numpy as np

from pam_jax import metrics
from pam_jax.sim import render
from pam_jax.sim.base import FlexGripper, Task

__all__ = ["RopeTask"]


class RopeTask(Task):
    name = "rope"
    action_type = "single_pick_and_place"
    step_limit = 20
    pose_rows = (0, 2)
    pick_rows = (0,)
    success_threshold = 0.55
    tie_tol = 0.01
    workspace_lo = np.array([-0.4, -0.4, 0.0])
    workspace_hi = np.array([0.4, 0.4, 0.3])
    default_obs_points = 3000

    num_vertices = 40
    spacing = 0.02
    radius = 0.008
    lift_height = 0.06
    grasp_tolerance = 0.03          # m, xy distance from the pick point to the rope
    timestep = 0.002
    carry_speed = 0.4               # m/s average while carrying
    metric_density = 8              # centreline points per segment for the metrics

    def _xml(self) -> str:
        n, s, r = self.num_vertices, self.spacing, self.radius
        return f"""
<mujoco model="rope">
  <option timestep="{self.timestep}" integrator="implicitfast"/>
  <worldbody>
    <geom name="table" type="plane" size="1 1 0.01" friction="0.6"/>
    <body name="gripper" mocap="true" pos="0 0 0.3">
      <geom type="sphere" size="0.01" contype="0" conaffinity="0" rgba="0.9 0.2 0.2 1"/>
    </body>
    <flexcomp name="rope" type="grid" count="{n} 1 1" spacing="{s} {s} {s}" pos="0 0 {r}"
              dim="1" radius="{r}" mass="0.05" rgba="0.2 0.4 0.8 1">
      <edge equality="true" damping="0.1"/>
      <contact selfcollide="none" condim="3" friction="0.6"/>
    </flexcomp>
  </worldbody>
</mujoco>"""

    @property
    def length(self) -> float:
        return (self.num_vertices - 1) * self.spacing

    def _setup(self) -> None:
        self.gripper = FlexGripper(self.model, self.data)
        n = (self.num_vertices - 1) * self.metric_density + 1
        t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        rad = self.length / (2 * np.pi)
        ring = np.stack([np.cos(t), np.sin(t)], axis=1)
        self.target_centreline = rad * ring
        self.target = np.concatenate([(rad + o) * ring for o in (-self.radius, 0.0, self.radius)])

    # ------------------------------------------------------------------ state
    def vertices(self) -> np.ndarray:
        """(40, 3) rope vertex positions."""
        return self.gripper.positions()

    def _randomize(self, rng: np.random.Generator) -> None:
        n = self.num_vertices
        # A smooth random curve: the heading does a random walk with a random drift (loops).
        turn = rng.normal(0.0, 0.45, n - 1) + rng.uniform(-0.15, 0.15)
        heading = rng.uniform(-np.pi, np.pi) + np.cumsum(turn)
        steps = self.spacing * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        xy = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
        xy -= 0.5 * (xy.min(axis=0) + xy.max(axis=0))
        xy += rng.uniform(-0.05, 0.05, 2)
        xy = np.clip(xy, self.workspace_lo[:2] + 0.03, self.workspace_hi[:2] - 0.03)
        p = np.concatenate([xy, np.full((n, 1), self.radius)], axis=1)
        self.gripper.set_positions(p)
        self._physics_steps(int(0.1 / self.timestep))

    # ------------------------------------------------------------------ action
    def _check(self, action):
        v = self.vertices()
        dist = np.linalg.norm(v[:, :2] - action[0, :2], axis=1)
        if dist.min() > self.grasp_tolerance:
            return False, action, (f"refused: the pick point is {dist.min():.3f} m from the rope "
                                   f"(limit {self.grasp_tolerance} m)")
        return True, action, ""

    def _execute(self, action: np.ndarray) -> int:
        v = self.vertices()
        i = int(np.argmin(np.linalg.norm(v - action[0], axis=1)))
        start = v[i].copy()
        up = start + [0.0, 0.0, self.lift_height]
        place = np.array([action[1, 0], action[1, 1], self.radius])
        above = place + [0.0, 0.0, self.lift_height]
        g = self.gripper
        g.grasp([np.array([i])], [start])
        n = g.move(start[None], up[None], 0.15)
        carry = max(0.2, np.linalg.norm(above - up) / self.carry_speed)
        n += g.move(up[None], above[None], carry)
        n += g.move(above[None], place[None], 0.15)
        g.release(self._armature0)
        self.data.mocap_pos[0] = [0.0, 0.0, 0.3]
        settle = int(0.25 / self.timestep)
        self._physics_steps(settle)
        return n + settle

    # ------------------------------------------------------------------ sensing / metrics
    def _sample_surface(self, n, rng):
        return render.sample_tube(self.vertices(), self.radius, n, rng)

    def centreline(self) -> np.ndarray:
        return render.densify_polyline(self.vertices(), self.metric_density)

    def footprint(self) -> np.ndarray:
        """(3 * P, 2) xy points covering the rope's width: the densified centreline and its
        offsets by +-radius sideways."""
        c = self.centreline()[:, :2]
        tangent = np.gradient(c, axis=0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return np.concatenate([c + o * normal for o in (-self.radius, 0.0, self.radius)])

    def _score(self) -> float:
        return metrics.iou_2d(self.footprint(), self.target)

    def metric(self) -> dict:
        c = self.centreline()[:, :2]
        return {"iou": self.score(),
                "chamfer": metrics.chamfer(c, self.target_centreline),
                "emd": metrics.emd(c, self.target_centreline)}

    def default_action(self) -> np.ndarray:
        """A valid do-little action: pick the middle vertex and put it back where it is."""
        p = self.vertices()[self.num_vertices // 2]
        return np.stack([p, p])

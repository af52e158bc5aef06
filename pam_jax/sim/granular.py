"""Granular pile shaping: sweep about 200 small "nuts" into a "T" with a flat wiper.

Object: 200 spheres of radius 9 mm that slide on the table (each has x and y slide joints with
Coulomb friction ``frictionloss`` standing in for table friction; z is fixed at the radius, so
the pile is a single layer; sphere-sphere contacts are frictionless), inside a tray whose low
walls at +-0.42 m keep spheres from being shot out of the workspace. The start state is 2-4
random elliptical clumps.

Action ``(2, 3)``: row 0 the sweep start, row 1 the sweep end (published rows 0 and 2 of
``action_poses``); z is ignored. The wiper is a 0.1 m wide, 12 mm thick blade held
perpendicular to the sweep direction: it is lowered onto the table at the start, pushed in a
straight line to the end (about 0.4 m/s on average), and lifted. Sweeps shorter than 2 cm are
refused; longer than 0.5 m are shortened to 0.5 m (clipped, with a reason).

Target: a "T" (bar 0.36 x 0.09 m, stem 0.09 x 0.26 m, about the area of the pile laid out in
a single layer). Metric: ``iou``, the 2D IoU (docs/method.md, "Evaluation") between the spheres' footprint (each
centre plus 6 points at half the radius around it) and the filled T; translation is removed by
zero-meaning and orientation by the rotation search. ``score()`` = IoU; success = IoU >= 0.65.
"""
from __future__ import annotations

import numpy as np

from pam_jax import metrics
from pam_jax.sim import render
from pam_jax.sim.base import Task, cosine_path

__all__ = ["GranularTask", "t_shape_rects"]

BAR = (0.36, 0.09)
STEM = (0.09, 0.26)


def t_shape_rects() -> list[tuple[float, float, float, float]]:
    """The T as axis-aligned rectangles (xmin, ymin, xmax, ymax), its area centroid at 0."""
    bw, bh = BAR
    sw, sh = STEM
    bar = (-bw / 2, sh, bw / 2, sh + bh)
    stem = (-sw / 2, 0.0, sw / 2, sh)
    a_bar, a_stem = bw * bh, sw * sh
    cy = (a_bar * (sh + bh / 2) + a_stem * sh / 2) / (a_bar + a_stem)
    return [(x0, y0 - cy, x1, y1 - cy) for x0, y0, x1, y1 in (bar, stem)]


def _rot(k: int) -> np.ndarray:
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k % 4]
    return np.array([[c, -s], [s, c]], dtype=np.float64)


class GranularTask(Task):
    name = "granular"
    action_type = "sweep"
    step_limit = 15
    pose_rows = (0, 2)
    success_threshold = 0.65
    tie_tol = 0.005
    workspace_lo = np.array([-0.4, -0.4, 0.0])
    workspace_hi = np.array([0.4, 0.4, 0.3])
    default_obs_points = 3000

    num_spheres = 200
    sphere_radius = 0.009
    wiper_half_width = 0.05
    wiper_half_thickness = 0.006
    timestep = 0.002
    sweep_speed = 0.4
    min_sweep = 0.02
    max_sweep = 0.5
    tray_half_size = 0.42           # low walls keep spheres from leaving the workspace

    def _xml(self) -> str:
        r = self.sphere_radius
        spheres = "\n".join(
            f'<body name="s{i}" pos="0 0 {r}">'
            f'<joint type="slide" axis="1 0 0" frictionloss="0.006" damping="0.01"/>'
            f'<joint type="slide" axis="0 1 0" frictionloss="0.006" damping="0.01"/>'
            f'<geom type="sphere" size="{r}" mass="0.005" condim="1" rgba="0.7 0.6 0.3 1"/></body>'
            for i in range(self.num_spheres))
        hw, ht = self.wiper_half_width, self.wiper_half_thickness
        w = self.tray_half_size
        return f"""
<mujoco model="granular">
  <option timestep="{self.timestep}" integrator="implicitfast"><flag gravity="disable"/></option>
  <worldbody>
    <geom name="table" type="plane" size="1 1 0.01" contype="0" conaffinity="0"/>
    <geom name="wall_px" type="box" pos="{w + 0.01} 0 0.02" size="0.01 {w + 0.02} 0.02" condim="1"/>
    <geom name="wall_nx" type="box" pos="{-w - 0.01} 0 0.02" size="0.01 {w + 0.02} 0.02" condim="1"/>
    <geom name="wall_py" type="box" pos="0 {w + 0.01} 0.02" size="{w + 0.02} 0.01 0.02" condim="1"/>
    <geom name="wall_ny" type="box" pos="0 {-w - 0.01} 0.02" size="{w + 0.02} 0.01 0.02" condim="1"/>
    <body name="wiper_display" mocap="true" pos="0 0 0.3">
      <geom type="box" size="{ht} {hw} 0.02" contype="0" conaffinity="0" rgba="0.2 0.2 0.2 0.3"/>
    </body>
    <body name="wiper" pos="0 0 0">
      <joint name="wiper_x" type="slide" axis="1 0 0" armature="10"/>
      <joint name="wiper_y" type="slide" axis="0 1 0" armature="10"/>
      <joint name="wiper_z" type="slide" axis="0 0 1" armature="10"/>
      <joint name="wiper_yaw" type="hinge" axis="0 0 1" armature="10"/>
      <geom type="box" size="{ht} {hw} 0.02" condim="1" rgba="0.2 0.2 0.2 1"/>
    </body>
    {spheres}
  </worldbody>
</mujoco>"""

    def _setup(self) -> None:
        self.target_rects = t_shape_rects()
        # Dense fill of the T for the IoU.
        pts = []
        for x0, y0, x1, y1 in self.target_rects:
            xs = np.arange(x0, x1 + 1e-9, 0.004)
            ys = np.arange(y0, y1 + 1e-9, 0.004)
            gx, gy = np.meshgrid(xs, ys, indexing="ij")
            pts.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        self.target = np.concatenate(pts)
        ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        self._ring = np.concatenate([np.zeros((1, 2)),
                                     0.5 * self.sphere_radius * np.stack([np.cos(ang), np.sin(ang)], 1)])

    # ------------------------------------------------------------------ state
    def centres(self) -> np.ndarray:
        """(200, 2) sphere centres (xy)."""
        return self.data.qpos[4:].reshape(-1, 2).copy()

    def _park_wiper(self) -> None:
        self.data.qpos[:4] = [0.0, 0.0, 0.3, 0.0]
        self.data.qvel[:4] = 0.0
        self.data.mocap_pos[0] = [0.0, 0.0, 0.3]

    def _randomize(self, rng: np.random.Generator) -> None:
        n, r = self.num_spheres, self.sphere_radius
        blobs = int(rng.integers(2, 5))
        centres = rng.uniform(-0.15, 0.15, (blobs, 2))
        sig = rng.uniform(0.03, 0.06, blobs)
        aspect = rng.uniform(0.5, 1.0, blobs)
        theta = rng.uniform(0, np.pi, blobs)
        placed = np.empty((0, 2))
        tries = 0
        grow = 1.0
        while len(placed) < n:
            k = rng.integers(0, blobs, 64)
            z = rng.normal(size=(64, 2)) * np.stack([sig[k], sig[k] * aspect[k]], 1) * grow
            c, s = np.cos(theta[k]), np.sin(theta[k])
            p = centres[k] + np.stack([c * z[:, 0] - s * z[:, 1], s * z[:, 0] + c * z[:, 1]], 1)
            for q in p:
                if np.all(np.abs(q) < 0.35) and (len(placed) == 0 or
                                                 np.min(np.sum((placed - q) ** 2, 1)) > (2.05 * r) ** 2):
                    placed = np.vstack([placed, q])
                    if len(placed) == n:
                        break
            tries += 1
            if tries % 20 == 0:
                grow *= 1.15          # crowded: spread the blobs a little
        self.data.qpos[4:] = placed.ravel()
        self._park_wiper()

    # ------------------------------------------------------------------ action
    def _check(self, action):
        a = action.copy()
        d = a[1, :2] - a[0, :2]
        length = float(np.linalg.norm(d))
        if length < self.min_sweep:
            return False, a, f"refused: sweep of {length:.3f} m is shorter than {self.min_sweep} m"
        if length > self.max_sweep:
            a[1, :2] = a[0, :2] + d * (self.max_sweep / length)
            return True, a, f"clipped: sweep of {length:.3f} m shortened to {self.max_sweep} m"
        return True, a, ""

    def _execute(self, action: np.ndarray) -> int:
        d = self.data
        dt = self.timestep
        start, end = action[0, :2], action[1, :2]
        v = end - start
        yaw = float(np.arctan2(v[1], v[0]))
        r = self.sphere_radius
        d.mocap_quat[0] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        count = 0
        # Lower the blade onto the table at the start point.
        low = cosine_path(np.r_[start, 0.06], np.r_[start, r], int(0.05 / dt))
        for k in range(len(low) - 1):
            d.qpos[:4] = [*low[k], yaw]
            d.qvel[:4] = [0.0, 0.0, (low[k + 1][2] - low[k][2]) / dt, 0.0]
            d.mocap_pos[0] = low[k]
            self._physics_steps(1)
            count += 1
        n = max(1, int(round(max(0.2, np.linalg.norm(v) / self.sweep_speed) / dt)))
        path = cosine_path(start, end, n)
        for k in range(n):
            d.qpos[:4] = [path[k][0], path[k][1], r, yaw]
            d.qvel[:4] = [*(path[k + 1] - path[k]) / dt, 0.0, 0.0]
            d.mocap_pos[0] = [path[k][0], path[k][1], r]
            self._physics_steps(1)
            count += 1
        self._park_wiper()
        settle = int(0.15 / dt)
        self._physics_steps(settle)
        return count + settle

    def default_action(self) -> np.ndarray:
        """A valid do-little action: a short sweep outside the pile."""
        return np.array([[0.38, 0.38, 0.0], [0.38, 0.34, 0.0]])

    # ------------------------------------------------------------------ sensing / metrics
    def _sample_surface(self, n, rng):
        c = np.concatenate([self.centres(), np.full((self.num_spheres, 1), self.sphere_radius)], 1)
        return render.sample_spheres(c, self.sphere_radius, n, rng)

    def footprint(self) -> np.ndarray:
        return (self.centres()[:, None, :] + self._ring[None]).reshape(-1, 2)

    def _score(self) -> float:
        return metrics.iou_2d(self.footprint(), self.target)

    def metric(self) -> dict:
        return {"iou": self.score()}

    # ------------------------------------------------------------------ target geometry (experts)
    def target_frame_for(self, centres: np.ndarray):
        """Place the T at the centroid of ``centres`` in the quarter-turn holding the most of
        them. Returns (inside(points) -> bool mask, (offset, quarter))."""
        mean = centres.mean(axis=0)
        best = None
        for k in range(4):
            frame = (mean, k)
            cnt = int(self._inside(centres, frame).sum())
            if best is None or cnt > best[0]:
                best = (cnt, frame)
        frame = best[1]
        return (lambda p: self._inside(p, frame)), frame

    def _local(self, p: np.ndarray, frame) -> np.ndarray:
        mean, k = frame
        return (np.atleast_2d(p) - mean) @ _rot(k)     # world -> T frame (inverse rotation)

    def _inside(self, p: np.ndarray, frame) -> np.ndarray:
        q = self._local(p, frame)
        ok = np.zeros(len(q), dtype=bool)
        for x0, y0, x1, y1 in self.target_rects:
            ok |= (q[:, 0] >= x0) & (q[:, 0] <= x1) & (q[:, 1] >= y0) & (q[:, 1] <= y1)
        return ok

    def _nearest_local(self, q: np.ndarray, inset: float) -> tuple[np.ndarray, np.ndarray]:
        best_p, best_d = None, None
        for x0, y0, x1, y1 in self.target_rects:
            lo = np.array([x0 + inset, y0 + inset])
            hi = np.array([x1 - inset, y1 - inset])
            p = np.clip(q, lo, hi)
            dist = np.linalg.norm(p - q, axis=1)
            if best_p is None:
                best_p, best_d = p, dist
            else:
                better = dist < best_d
                best_p = np.where(better[:, None], p, best_p)
                best_d = np.minimum(dist, best_d)
        return best_p, best_d

    def distance_to_target(self, p: np.ndarray, frame) -> np.ndarray:
        return self._nearest_local(self._local(p, frame), 0.0)[1]

    def nearest_target_point(self, p: np.ndarray, frame, inset: float = 0.0) -> np.ndarray:
        mean, k = frame
        local, _ = self._nearest_local(self._local(p, frame), inset)
        return (local @ _rot(k).T + mean)[0]

"""The common interface of the simulated tasks and the machinery they share.

Frame convention (all tasks): world frame in metres, the table is the plane z = 0, +z is up, the
workspace is centred on the origin. :meth:`Task.observe` returns clouds in this frame; the
training pipeline does its own bounding-box centring and scaling
(:func:`pam_jax.pointcloud.preprocess`), exactly as for real sensor clouds.

An action is two points ``(2, 3)`` in this frame (see each task for what the points mean).
:meth:`Task.check_action` says whether an action can be executed, clips points that leave the
workspace, and gives a one-line reason; :meth:`Task.step` executes it physically (or refuses it)
and never raises for a bad *value* (NaN, out of reach); a wrong *shape* is a programming error
and raises a one-line ``ValueError``. Every call to :meth:`Task.step` counts towards
:attr:`Task.step_limit`, refused ones included (a refused action wastes the robot's turn).

Grippers. A grasp pins the grasped flex vertices (the nearest vertex plus, for cloth, its mesh
neighbours) to the gripper: their joint positions and velocities are written before every
physics step, and their joints get a large armature while held, so that the constraint solver
treats them as heavy and pulls the rest of the object along (a light pinned vertex would let the
soft edge constraints stretch without limit). The gripper and wiper poses are also mirrored to
mocap bodies for display. The wiper is a body with driven joints for the same reason (its
velocity must reach the contacts; a teleported mocap body would pass through the spheres).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import mujoco
import numpy as np

__all__ = ["Task", "StepInfo", "ActionCheck", "TaskState", "cosine_path"]

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


@dataclasses.dataclass(frozen=True)
class ActionCheck:
    """Result of :meth:`Task.check_action`: ``ok`` False means the action would be refused;
    ``action`` is the action as it would be executed (clipped); ``reason`` is '' when the
    action is used unchanged, else one line saying what was clipped or why it is refused."""
    ok: bool
    action: np.ndarray
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What one call of :meth:`Task.step` did."""
    executed: bool              # False: refused, the object was not touched
    reason: str                 # '' or why it was clipped / refused (one line)
    action: np.ndarray          # (2, 3) the executed (clipped) action; the input when refused
    score_before: float
    score_after: float          # the secondary metrics are Task.metric(), computed on demand
    success: bool
    steps_taken: int            # calls of step() since reset, this one included
    done: bool                  # success or step limit reached
    sim_steps: int = 0          # physics steps run

    @property
    def gain(self) -> float:
        return self.score_after - self.score_before


@dataclasses.dataclass(frozen=True)
class TaskState:
    """An exact snapshot (see :meth:`Task.save_state`)."""
    task: str
    physics: np.ndarray
    steps_taken: int
    seed: int
    extra: Any = None


def cosine_path(start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """``n + 1`` points from start to end with a smooth (cosine) speed profile, shape (n+1, ...)."""
    s = 0.5 - 0.5 * np.cos(np.pi * np.arange(n + 1) / max(n, 1))
    s = s.reshape((-1,) + (1,) * np.ndim(start))
    return start + s * (end - start)


class Task:
    """Base class of the simulated tasks (rope, granular, cloth). Subclasses set the class
    attributes and implement the ``_`` hooks."""

    name: str = ""
    action_type: str = ""
    step_limit: int = 0
    pose_rows: tuple[int, int] = (0, 2)     # rows of the published 4x6 action_poses
    pick_rows: tuple[int, ...] = ()          # action rows the gripper closes on the object at (grasps)
    success_threshold: float = 1.0          # success() <=> score() >= this
    tie_tol: float = 0.01                   # oracle: score gains closer than this are "equal"
    workspace_lo = np.array([-0.45, -0.45, 0.0])
    workspace_hi = np.array([0.45, 0.45, 0.3])
    default_obs_points: int = 3000

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._init_args = (args, dict(kwargs))     # for replicas(): the same construction
        return obj

    def __init__(self, *, obs_points: int | None = None, obs_noise: float = 0.002):
        if obs_points is not None and (not isinstance(obs_points, (int, np.integer)) or obs_points < 1):
            raise ValueError(f"obs_points: expected a positive int, got {obs_points!r}")
        if not np.isfinite(obs_noise) or obs_noise < 0:
            raise ValueError(f"obs_noise: expected a non-negative number, got {obs_noise!r}")
        self.obs_points = int(obs_points or self.default_obs_points)
        self.obs_noise = float(obs_noise)
        self.model = mujoco.MjModel.from_xml_string(self._xml())
        self.data = mujoco.MjData(self.model)
        self._state_buf = np.zeros(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        self._arm0 = self.model.dof_armature.copy()
        self._seed = 0
        self.steps_taken = 0
        self._scored: tuple[bytes, float] | None = None   # (qpos bytes, score): see score()
        self._setup()
        self._is_reset = False

    # ----------------------------------------------------------------- subclass hooks
    def _xml(self) -> str:
        raise NotImplementedError

    def _setup(self) -> None:
        """Called once after the model is built (index tables etc.)."""

    def _randomize(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _check(self, action: np.ndarray) -> tuple[bool, np.ndarray, str]:
        """Task-specific checks on a finite, workspace-clipped action."""
        return True, action, ""

    def _execute(self, action: np.ndarray) -> int:
        """Run the primitive; returns the number of physics steps."""
        raise NotImplementedError

    def _sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def metric(self) -> dict:
        raise NotImplementedError

    def _score(self) -> float:
        """The primary scalar of the current object state (see :meth:`score`)."""
        raise NotImplementedError

    def _extra_state(self) -> Any:
        return None

    def _set_extra_state(self, extra: Any) -> None:
        pass

    # ----------------------------------------------------------------- public API
    def reset(self, seed: int) -> None:
        """Randomized start state; the same seed gives the same state bit for bit."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self.steps_taken = 0
        mujoco.mj_resetData(self.model, self.data)
        self._randomize(np.random.default_rng([self._seed, _name_code(self.name)]))
        mujoco.mj_forward(self.model, self.data)
        self._is_reset = True

    def score(self) -> float:
        """The primary scalar (higher is better) used for ranking and success. Computed once per
        object state: it depends on the joint positions only, so a repeated call in the same
        state (a step's score before, the success test, the next step's score) reuses it."""
        key = self.data.qpos.tobytes()
        if self._scored is None or self._scored[0] != key:
            self._scored = (key, float(self._score()))
        return self._scored[1]

    def observe(self, rng: np.random.Generator | None = None, num_points: int | None = None) -> np.ndarray:
        """``(num_points, 3)`` float32 cloud sampled from the object's visible surface plus
        Gaussian sensor noise (``obs_noise`` metres), world frame (table at z = 0). Without
        ``rng`` the noise is a deterministic function of (seed, steps taken)."""
        self._require_reset()
        if rng is None:
            rng = np.random.default_rng([self._seed, self.steps_taken, 0x0B5])
        n = self.obs_points if num_points is None else int(num_points)
        pts = self._sample_surface(n, rng)
        if self.obs_noise > 0:
            pts = pts + rng.normal(0.0, self.obs_noise, pts.shape)
        return pts.astype(np.float32)

    def check_action(self, action) -> ActionCheck:
        """Would ``action`` be executed, and how (clipped)? Never raises for bad values."""
        a = _as_action(action)
        if not np.isfinite(a).all():
            return ActionCheck(False, a, "refused: the action has NaN or inf values")
        clipped = np.clip(a, self.workspace_lo, self.workspace_hi)
        notes = []
        if not np.array_equal(clipped, a):
            moved = np.abs(clipped - a).max()
            notes.append(f"clipped to the workspace (moved up to {moved:.3f} m)")
        ok, out, why = self._check(clipped)
        if not ok:
            why = why if why.startswith("refused") else "refused: " + why
            return ActionCheck(False, out, "; ".join([why] + notes))
        return ActionCheck(True, out, "; ".join(notes + ([why] if why else [])))

    def step(self, action) -> StepInfo:
        """Execute one primitive (see the task's docstring). Refused actions leave the object
        untouched but still count as a step."""
        self._require_reset()
        check = self.check_action(action)
        before = self.score()
        self.steps_taken += 1
        n = 0
        if check.ok:
            n = self._execute(check.action)
            # mj_step leaves positions derived for the state before its last integration;
            # recompute them so that reading the object never depends on how we got here.
            mujoco.mj_forward(self.model, self.data)
        after = self.score() if check.ok else before
        success = after >= self.success_threshold
        return StepInfo(
            executed=check.ok, reason=check.reason, action=check.action,
            score_before=float(before), score_after=float(after),
            success=bool(success), steps_taken=self.steps_taken,
            done=bool(success or self.steps_taken >= self.step_limit), sim_steps=int(n))

    def success(self) -> bool:
        return bool(self.score() >= self.success_threshold)

    @property
    def done(self) -> bool:
        return self.success() or self.steps_taken >= self.step_limit

    def save_state(self) -> TaskState:
        """Exact snapshot: restoring it and stepping reproduces the same result bit for bit."""
        self._require_reset()
        mujoco.mj_getState(self.model, self.data, self._state_buf, _STATE_SPEC)
        return TaskState(self.name, self._state_buf.copy(), self.steps_taken, self._seed,
                         self._extra_state())

    def restore_state(self, state: TaskState) -> None:
        if not isinstance(state, TaskState) or state.task != self.name:
            raise ValueError(f"state: expected a TaskState of task {self.name!r}")
        if state.physics.shape != self._state_buf.shape:
            raise ValueError("state: physics state size does not match this model")
        mujoco.mj_setState(self.model, self.data, state.physics, _STATE_SPEC)
        self.model.dof_armature[:] = self._armature0
        mujoco.mj_forward(self.model, self.data)
        self.steps_taken = state.steps_taken
        self._seed = state.seed
        self._set_extra_state(state.extra)
        self._is_reset = True

    def replicas(self, n: int) -> list["Task"]:
        """This task and ``n - 1`` more built the same way (kept for later calls), for trying
        actions from one saved state on several threads (:mod:`pam_jax.sim.parallel`). A replica
        holds nothing of this task's state until :meth:`restore_state` gives it one."""
        extra = self.__dict__.setdefault("_replicas", [])
        args, kwargs = self._init_args
        while len(extra) < n - 1:
            extra.append(type(self)(*args, **kwargs))
        return [self] + extra[:max(n - 1, 0)]

    def action_to_poses(self, action) -> np.ndarray:
        """(2, 3) -> the published (4, 6) ``action_poses``: the two points in rows
        :attr:`pose_rows` with rpy = 0, NaN in the other rows."""
        a = _as_action(action)
        out = np.full((4, 6), np.nan)
        for j, row in enumerate(self.pose_rows):
            out[row, :3] = a[j]
            out[row, 3:] = 0.0
        return out

    def poses_to_action(self, poses) -> np.ndarray:
        """The inverse of :meth:`action_to_poses`: (4, 6) or (4, 3) -> (2, 3)."""
        p = np.asarray(poses, dtype=np.float64)
        if p.shape not in ((4, 6), (4, 3)):
            raise ValueError(f"poses: expected shape (4, 6), got {p.shape}")
        return p[list(self.pose_rows), :3].copy()

    # ----------------------------------------------------------------- helpers
    def _require_reset(self) -> None:
        if not self._is_reset:
            raise RuntimeError(f"{self.name}: call reset(seed) first")

    def _physics_steps(self, n: int) -> None:
        for _ in range(n):
            mujoco.mj_step(self.model, self.data)

    @property
    def _armature0(self) -> np.ndarray:
        return self._arm0


def _as_action(action) -> np.ndarray:
    try:
        a = np.array(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("action: expected an array of numbers with shape (2, 3)") from None
    if a.shape != (2, 3):
        raise ValueError(f"action: expected shape (2, 3), got {a.shape}")
    return a


def _name_code(name: str) -> int:
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")


class FlexGripper:
    """Pins groups of flex vertices to moving gripper points (see the module docstring)."""

    HELD_ARMATURE = 100.0

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, flex_id: int = 0):
        self.m, self.d = model, data
        adr, num = model.flex_vertadr[flex_id], model.flex_vertnum[flex_id]
        bodies = model.flex_vertbodyid[adr:adr + num]
        jnt = model.body_jntadr[bodies]
        if (model.body_jntnum[bodies] != 3).any():
            raise RuntimeError("flex vertices must have 3 slide joints (dof='full')")
        self.vert_adr = adr
        self.qadr = model.jnt_qposadr[jnt]
        self.dadr = model.jnt_dofadr[jnt]
        self.base = model.body_pos[bodies].copy()
        e0, en = model.flex_edgeadr[flex_id], model.flex_edgenum[flex_id]
        self.edges = model.flex_edge[e0:e0 + en].copy()
        self.groups: list[tuple[np.ndarray, np.ndarray]] = []

    def positions(self) -> np.ndarray:
        n = len(self.qadr)
        return self.d.flexvert_xpos[self.vert_adr:self.vert_adr + n].copy()

    def set_positions(self, p: np.ndarray) -> None:
        q = (p - self.base)
        for k in range(3):
            self.d.qpos[self.qadr + k] = q[:, k]
        self.d.qvel[self.dadr[:, None] + np.arange(3)] = 0.0

    def neighbours(self, i: int) -> np.ndarray:
        ring = self.edges[(self.edges == i).any(axis=1)].ravel()
        return np.unique(np.concatenate([[i], ring]))

    def grasp(self, verts_per_gripper: list[np.ndarray], anchors: list[np.ndarray]) -> None:
        """Hold each vertex group rigidly at its current offset from its gripper anchor."""
        p = self.positions()
        self.groups = []
        for verts, anchor in zip(verts_per_gripper, anchors):
            verts = np.asarray(verts, dtype=np.int64)
            self.groups.append((verts, p[verts] - anchor))
            dofs = (self.dadr[verts][:, None] + np.arange(3)).ravel()
            self.m.dof_armature[dofs] = self.HELD_ARMATURE

    def release(self, armature0: np.ndarray) -> None:
        self.groups = []
        self.m.dof_armature[:] = armature0

    def drive(self, points: np.ndarray, velocities: np.ndarray) -> None:
        """Place the held groups at gripper ``points`` (G, 3) moving with ``velocities``."""
        for (verts, off), p, v in zip(self.groups, points, velocities):
            q = p + off - self.base[verts]
            for k in range(3):
                self.d.qpos[self.qadr[verts] + k] = q[:, k]
                self.d.qvel[self.dadr[verts] + k] = v[k]

    def move(self, start: np.ndarray, end: np.ndarray, duration: float, mocap: bool = True) -> int:
        """Move the grippers from ``start`` to ``end`` (G, 3) over ``duration`` seconds."""
        dt = self.m.opt.timestep
        n = max(1, int(round(duration / dt)))
        path = cosine_path(np.asarray(start, float), np.asarray(end, float), n)
        g = len(path[0])
        for k in range(n):
            self.drive(path[k], (path[k + 1] - path[k]) / dt)
            if mocap and self.m.nmocap >= g:
                self.d.mocap_pos[:g] = path[k]
            mujoco.mj_step(self.m, self.d)
        return n

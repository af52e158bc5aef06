"""Per-task facts and defaults for the DeformPAM data (one small table, used everywhere).

Each task names its primitive, which two of the four annotated pose rows form the action
(rows of ``annotation.action_poses``: 0 left pick, 1 right pick, 2 left place, 3 right place),
the observation settings (xy factor, voxel size, points per cloud) and the augmentation.
Numbers follow METHOD.md ("Tasks and primitives", "Observation").
"""
from __future__ import annotations

import dataclasses
import difflib

KINDS = ("supervised", "finetune")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    primitive: str                       # canonical action type of the task
    action_types: tuple[str, ...]        # action-type strings accepted as this primitive
    rows: tuple[int, int]                # rows of action_poses forming the 2-point action
    xy_scale: float                      # per-task xy factor of the preprocessing
    num_points: int                      # points per cloud fed to the network
    # augmentation defaults (pam_jax.pointcloud.augment)
    max_rotation_deg: float
    depth_offset: float
    swap_pick_prob: float

    @property
    def voxel_size(self) -> float:
        """Voxel edge in the scaled frame: 0.002 x the xy factor."""
        return 0.002 * self.xy_scale

    @property
    def augmentation(self) -> dict:
        return {"max_rotation_deg": self.max_rotation_deg, "depth_offset": self.depth_offset,
                "swap_pick_prob": self.swap_pick_prob}


TASKS: dict[str, TaskSpec] = {
    "tshirt_short": TaskSpec(
        name="tshirt_short", primitive="fling", action_types=("fling",), rows=(0, 1),
        xy_scale=1.75, num_points=3500,
        max_rotation_deg=20.0, depth_offset=0.02, swap_pick_prob=0.5),
    "rope": TaskSpec(
        name="rope", primitive="single_pick_and_place",
        action_types=("single_pick_and_place", "pick_and_place"), rows=(0, 2),
        xy_scale=1.75, num_points=3000,
        max_rotation_deg=180.0, depth_offset=0.02, swap_pick_prob=0.0),
    "nut": TaskSpec(
        name="nut", primitive="sweep", action_types=("sweep",), rows=(0, 2),
        xy_scale=3.0, num_points=3000,
        max_rotation_deg=20.0, depth_offset=0.02, swap_pick_prob=0.0),
}

# Integer codes of action types as stored in ``annotation.action_type`` of the published
# metadata (``action.type`` holds the name). Names follow the published ``action.type`` strings.
ACTION_TYPE_CODES = {
    -1: "fail", 0: "fling", 1: "drag", 2: "fold1_1", 3: "fold2", 4: "pick_and_place", 5: "done",
    6: "lift", 7: "drag_hybrid", 8: "fold1_2", 12: "manually_randomize", 13: "grasp_wiper",
    14: "sweep", 15: "straighten_and_place", 16: "single_pick_and_place", 100: "home",
}
ACTION_TYPE_NAMES = {v: k for k, v in ACTION_TYPE_CODES.items()}


def action_type_name(value) -> str | None:
    """An action type as stored (int code, name, or enum-style 'ActionTypeDef.FLING') -> its
    name ('fling'); None when it cannot be read."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ACTION_TYPE_CODES.get(value)
    if isinstance(value, str) and value.strip():
        v = value.strip()
        if v.lstrip("-").isdigit():
            return ACTION_TYPE_CODES.get(int(v))
        v = v.split(".")[-1].lower()
        return {"fold_1_1": "fold1_1", "fold_1_2": "fold1_2", "fold_2": "fold2"}.get(v, v)
    return None


# Which rows an action type uses, for data whose task is not known.
ROWS_BY_ACTION_TYPE = {"fling": (0, 1)}
DEFAULT_ROWS = (0, 2)


def _suggest(name: str, choices) -> str:
    near = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"; did you mean {near[0]!r}?" if near else f" (choose from {', '.join(choices)})"


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``; an unknown name raises a one-line ValueError with a suggestion."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}{_suggest(name, TASKS)}")
    return TASKS[name]


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}{_suggest(kind, KINDS)}")
    return kind

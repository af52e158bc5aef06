"""The task registry: ONE entry per task, used by the data layer, the simulator, the CLI and the
evaluators.

Each :class:`TaskSpec` names the primitive, which two of the four annotated pose rows form the
action (rows of ``annotation.action_poses``: 0 left pick, 1 right pick, 2 left place, 3 right
place), the observation settings (xy factor, voxel size, points per cloud), the augmentation,
the goal metric, and, for a simulated task, its simulator class and its packaged experiment.
Numbers follow the method (docs/method.md, "Tasks" and "Observation").

Names. The published data say ``rope`` / ``nut`` / ``tshirt_short``; the simulator says
``rope`` / ``granular`` / ``cloth``. An entry has both names and :func:`get_task` accepts
either. A new simulated task is one new module (a :class:`pam_jax.sim.base.Task` subclass) plus
one :func:`register` call (or one entry in ``TASKS`` below).
"""
from __future__ import annotations

import dataclasses
import difflib

KINDS = ("supervised", "finetune")
# Pick snapping rules (pam_jax.select.snap_action):
#   none     the action as sampled
#   nearest  each pick row -> the xyz of the cloud point nearest to it in xy (fling)
#   mean200  the pick row (row 0) -> xy = the mean xy of the 200 cloud points nearest in xy to the
#            cloud point nearest to the pick in xy; the predicted z is kept (single pick-and-place)
SNAP_RULES = ("none", "nearest", "mean200")


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
    metric: str = ""                     # the goal metric (what the simulator's score is)
    # how the executed action's grasp points are moved onto the observed cloud (SNAP_RULES):
    # the published configs' nearest-pick override. Applied to the chosen action only, after
    # scoring (the candidates are scored as sampled).
    snap: str = "none"
    sim: str = ""                        # the simulator's name of the task ("" = no simulator)
    sim_class: str = ""                  # "module:Class" of its pam_jax.sim.base.Task subclass
    experiment: str = ""                 # the packaged experiment of the simulated pipeline
    published: bool = True               # a task of the published data (a TFDS builder config)

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
        max_rotation_deg=20.0, depth_offset=0.02, swap_pick_prob=0.5,
        metric="normalized coverage (published slot grid)", snap="nearest", sim="cloth", sim_class="pam_jax.sim.cloth:ClothTask",
        experiment="sim_cloth"),
    "rope": TaskSpec(
        name="rope", primitive="single_pick_and_place",
        action_types=("single_pick_and_place", "pick_and_place"), rows=(0, 2),
        xy_scale=1.75, num_points=3000,
        max_rotation_deg=180.0, depth_offset=0.02, swap_pick_prob=0.0,
        metric="2D IoU to a circle", snap="mean200", sim="rope", sim_class="pam_jax.sim.rope:RopeTask",
        experiment="sim_rope"),
    "nut": TaskSpec(
        name="nut", primitive="sweep", action_types=("sweep",), rows=(0, 2),
        xy_scale=3.0, num_points=3000,
        max_rotation_deg=20.0, depth_offset=0.02, swap_pick_prob=0.0,
        metric="2D IoU to a T", snap="none", sim="granular", sim_class="pam_jax.sim.granular:GranularTask",
        experiment="sim_granular"),
    # the built-in synthetic task: pick both ends of a bar (pam_jax.toy.data); no simulator
    "toy": TaskSpec(
        name="toy", primitive="pick_pair", action_types=("pick_pair",), rows=(0, 1),
        xy_scale=1.0, num_points=1000,
        max_rotation_deg=0.0, depth_offset=0.0, swap_pick_prob=0.0,
        metric="endpoint accuracy", experiment="toy_bimodal", published=False),
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


def register(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add a task to the registry (a fork's new task; tests). Its sim name must not shadow
    another entry's."""
    taken = {t.sim: t.name for t in TASKS.values() if t.sim} | {n: n for n in TASKS}
    for name in {spec.name, spec.sim} - {""}:
        if name in taken and taken[name] != spec.name:
            raise ValueError(f"task name {name!r} is taken by task {taken[name]!r}")
    if spec.name in TASKS and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    if spec.snap not in SNAP_RULES:
        raise ValueError(f"task {spec.name!r}: snap must be one of {SNAP_RULES}, got {spec.snap!r}")
    if spec.sim and ":" not in spec.sim_class:
        raise ValueError(f"task {spec.name!r}: sim_class must be 'module:Class', got {spec.sim_class!r}")
    TASKS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    TASKS.pop(get_task(name).name)


def get_task(name: str) -> TaskSpec:
    """The spec of ``name`` (the data name, or the simulator's name of a simulated task); an
    unknown name raises a one-line ValueError with a suggestion."""
    if name in TASKS:
        return TASKS[name]
    for spec in TASKS.values():
        if spec.sim and spec.sim == name:
            return spec
    raise ValueError(f"unknown task {name!r}{_suggest(name, [*TASKS, *sim_task_names()])}")


def get_data_task(name: str) -> TaskSpec:
    """The spec of a task of the published data, by its data name only ('rope', 'nut',
    'tshirt_short'): what building and reading datasets accept."""
    spec = TASKS.get(name)
    if spec is None or not spec.published:
        raise ValueError(f"unknown task {name!r} of the published data{_suggest(name, data_task_names())}")
    return spec


def sim_task_names() -> tuple[str, ...]:
    """The simulator's names of the simulated tasks ('rope', 'granular', 'cloth', ...)."""
    return tuple(t.sim for t in TASKS.values() if t.sim)


def data_task_names() -> tuple[str, ...]:
    """The tasks of the published data ('tshirt_short', 'rope', 'nut')."""
    return tuple(n for n, t in TASKS.items() if t.published)


def sim_task_name(name: str) -> str:
    """'granular' or 'nut' -> 'granular' (the simulator's name)."""
    spec = get_task(name)
    if not spec.sim:
        raise ValueError(f"task {spec.name!r} has no simulator (simulated tasks: {', '.join(sim_task_names())})")
    return spec.sim


def data_task_name(name: str) -> str:
    """'granular' or 'nut' -> 'nut' (the data side's name, for building datasets)."""
    return get_task(name).name


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}{_suggest(kind, KINDS)}")
    return kind

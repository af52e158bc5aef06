"""One inference entry point: trained run folders -> a policy that maps a world-frame cloud to a
world-frame action.

    from pam_jax import policy
    pi = policy.load("runs/sim_rope/sl", dpo="runs/sim_rope/dpo")    # implicit reward (DeformPAM)
    out = pi.infer(world_cloud, seed=0)     # world_cloud (P, 3), in the sensor's frame, metres
    out["action"], out["candidates"], out["scores"], out["index"]   # (2, 3), (N, 2, 3), (N,), int

:func:`load` does, once per loaded policy:
  - the run checks (each run's stage, task, model and normalisation; pam_jax.eval.checks), before
    any array is read;
  - the binding of a preference run to its reference: the SL checkpoint a DPO or reward run was
    trained against is the one used (pam_jax.train.restore.resolve_reference), or the load is
    refused with one line naming both steps; ``sl_step`` names another step explicitly;
  - the selector (pam_jax.select.make_selector, the pure graph builder) and its parameter-only
    work (``Selector.prepare``), so that each decision costs one ``decide``.

:meth:`Policy.infer` puts the cloud into the task frame the SL run was trained in, exactly as the
training data were prepared (rows with NaN/inf dropped; then pam_jax.pointcloud.preprocess:
outlier removal, bounding-box centring, the task's xy factor and voxels; then subsample to the
run's number of points; the toy task's clouds are used as they are), runs one decision, and maps
the candidates back (pam_jax.pointcloud.frame_world_cloud, the same framing the server applies to
world-frame requests; an optional calibration maps the sensor's frame into the robot's first).
:meth:`Policy.decide_task_frame` is the batched call in
the task frame for evaluators: (B, Np, 3) clouds and one key -> a pam_jax.select.Selection.

Every cloud is checked on the host before the compiled graph (shape, finite, plausible range from
the normalisation; one line each); ``load(..., checked=False)`` skips the task-frame checks for a
caller that checks itself.

:class:`Agent` is the policy of one evaluation method (``sl``, ``deformpam``, ``oracle``, ...):
what the closed-loop evaluation, preference collection and the studies act with.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import numpy as np

import pam_jax
from pam_jax import config as config_lib
from pam_jax import pointcloud as pc
from pam_jax import tasks as tasks_lib
from pam_jax.eval.checks import check_runs, run_meta, run_task
from pam_jax.models.policy import Policy as LoadedRun
from pam_jax.normalize import NormStats
from pam_jax.select import SelectConfig, Selection, Selector, check_clouds, make_selector, select_with_host_scorer, task_snap
from pam_jax.train.restore import load_policy, load_reference, resolve_reference

MODES = ("implicit", "explicit", "first", "random")
SAMPLERS = ("sl", "dpo")   # which model samples the candidates


@dataclasses.dataclass(frozen=True)
class FrameSettings:
    """How a world-frame cloud becomes the network's input, as the run's training data were made."""

    preprocess: bool                  # pam_jax.pointcloud.preprocess (False: the toy task's clouds as they are)
    xy_scale: float = 1.0
    voxel_size: float | None = None
    n_sigma: float | None = 3.0
    subsample_method: str = "random"


def frame_settings(task: str) -> FrameSettings:
    """The task frame of a run trained for `task` (pam_jax.data.sample.sample_config's defaults)."""
    if task == "toy":
        return FrameSettings(False, n_sigma=None)
    spec = tasks_lib.get_task(task)
    return FrameSettings(True, spec.xy_scale, spec.voxel_size)


def versions() -> dict:
    return {"pam_jax": pam_jax.__version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}


class Policy:
    """A loaded policy (:func:`load`). Attributes: `selector` (the pam_jax.select.Selector),
    `ref_params` / `score_params` (what samples / what scores), `prepared` (their
    parameter-only work, made once on first use), `selection` (the SelectConfig), `norm`,
    `num_points`, `task`, `frame` (FrameSettings), `metadata` (what a server sends), `sl` and
    `scorer` (the loaded runs: config, graphdef, parameters, normalisation, step, folder)."""

    def __init__(self, *, selector: Selector, ref_params, score_params, selection: SelectConfig, norm: NormStats,
                 num_points: int, task: str, frame: FrameSettings, metadata: dict, sl: LoadedRun,
                 scorer: LoadedRun | None, checked: bool = True):
        self.selector, self.ref_params, self.score_params = selector, ref_params, score_params
        self.selection, self.norm, self.num_points, self.task = selection, norm, int(num_points), task
        self.frame, self.metadata, self.sl, self.scorer, self.checked = frame, metadata, sl, scorer, checked

    @functools.cached_property
    def prepared(self) -> Any:
        """Selector.prepare(ref_params, score_params): once per loaded policy."""
        return self.selector.prepare(self.ref_params, self.score_params)

    # -- task frame

    def check(self, clouds) -> np.ndarray:
        """Task-frame clouds (B, Np, 3) -> float32, or one ValueError line (shape, finite, range)."""
        if not self.checked:
            return np.asarray(clouds, np.float32)
        return check_clouds(clouds, self.norm)

    def decide_task_frame(self, clouds, key) -> Selection:
        """Clouds (B, Np, 3) in the task frame and one key -> Selection (task frame): one decision."""
        return self.selector.decide(self.prepared, self.check(clouds), key)

    @functools.cached_property
    def _decide_rows(self):
        selector = self.selector

        def rows(prep, points, keys):
            def one(row):
                return jax.tree.map(lambda a: a[0], selector.decide(prep, row[0][None], row[1]))
            return jax.lax.map(one, (points, keys))
        return jax.jit(rows)

    def decide_rows(self, clouds, keys) -> Selection:
        """Clouds (B, Np, 3) in the task frame and one key per cloud (B,) -> Selection: row b is
        what :meth:`decide_task_frame` gives cloud b alone with key b, bit for bit (the one-cloud
        decision mapped over the rows inside one compiled call; a vmapped, batched decision
        differs in the last bits on CPU, which can change a chosen candidate)."""
        return self._decide_rows(self.prepared, self.check(clouds), keys)

    # -- world frame

    def to_task_frame(self, world_cloud, rng: np.random.Generator, calibration=None) -> tuple[np.ndarray, Any]:
        """One world-frame cloud (P, 3) -> (the network's input (num_points, 3), the
        pam_jax.pointcloud.WorldFraming whose `to_world` maps task-frame points back), by
        pam_jax.pointcloud.frame_world_cloud: rows with NaN/inf dropped (refused when fewer than
        num_points remain), the `calibration` (a (4, 4) world-to-task rigid transform; None: the
        identity), then the run's preprocessing and subsampling."""
        a = np.asarray(world_cloud) if not isinstance(world_cloud, np.ndarray) else world_cloud
        if a.ndim == 3 and a.shape[-1] == 3:
            raise ValueError(f"world cloud: got a batch of shape {a.shape}; infer takes one cloud (P, 3): "
                             "call it once per cloud")
        if a.ndim == 2 and a.shape[0] == 0:
            raise ValueError("world cloud: empty (0 points)")
        return pc.frame_world_cloud(a, num_points=self.num_points, rng=rng, calibration=calibration,
                                    **dataclasses.asdict(self.frame))

    def infer(self, world_cloud, seed: int = 0, *, calibration=None) -> dict:
        """One world-frame cloud (P, 3) and a seed -> dict: action (2, 3), candidates (N, 2, 3),
        scores (N,), index (int), all world frame (the action as executed: snapped onto the
        cloud where the task snaps its picks; the candidates as sampled and scored); "task_frame": the network's input "points"
        and the "action" and "candidates" before mapping back; "frame": the WorldFraming used
        (`calibration`: see :meth:`to_task_frame`). The
        seed draws the subsample (numpy) and the selection's key: the same (cloud, seed), the
        same answer."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
        pts, frame = self.to_task_frame(world_cloud, np.random.default_rng(int(seed)), calibration)
        sel = self.decide_task_frame(pts[None], jax.random.key(int(seed)))
        cands, action = np.asarray(sel.candidates)[0], np.asarray(sel.action)[0]
        idx = int(np.asarray(sel.index)[0])
        return {"action": frame.to_world(action), "candidates": frame.to_world(cands),
                "scores": np.asarray(sel.scores)[0], "index": idx,
                "task_frame": {"points": pts, "action": action, "candidates": cands}, "frame": frame}


def load(sl_run=None, *, dpo=None, reward=None, mode: str | None = None, sampler: str = "sl",
         sl_step: int | None = None, num_candidates: int | None = None, reward_samples: int | None = None,
         num_inference_steps: int | None = None, eta: float | None = None, reward_noise: str | None = None,
         snap_pick: bool = True, checked: bool = True) -> Policy:
    """Run folders -> a :class:`Policy`.

    `sl_run`: the supervised run (samples the candidates; with a preference run given it may be
    left out: the reference that run was trained against is used). `dpo`: a DPO run (mode
    "implicit" scores with it); `reward`: an explicit reward run (mode "explicit"). `mode`
    (MODES) defaults to implicit with `dpo`, explicit with `reward`, else first. `sampler`
    "dpo" samples from the DPO model instead (mode first or random: the DPO policy alone).
    The SL step is the one the preference runs were trained against (they must agree); without
    one, the SL run's newest; `sl_step` names a step explicitly. The other arguments override
    pam_jax.select.SelectConfig.from_config (N, M, DDIM steps and eta, the Monte-Carlo noise);
    `snap_pick`: the task's pick snapping (``TaskSpec.snap``) applied to the chosen action (the
    candidates are scored as sampled)."""
    mode = mode or ("implicit" if dpo else "explicit" if reward else "first")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if mode == "implicit" and not dpo:
        raise ValueError("--mode implicit needs --dpo RUN (the DPO run scores the candidates)")
    if mode == "explicit" and not reward:
        raise ValueError("--mode explicit needs --reward RUN (the reward model scores the candidates)")
    if sampler == "dpo" and (not dpo or mode not in ("first", "random")):
        raise ValueError("sampler dpo (the DPO model alone) needs a DPO run and mode first or random")
    ref = resolve_reference(sl_run, sl_step, {"--dpo": dpo or "", "--reward": reward or ""})
    task = run_task(config_lib.from_dict(run_meta(ref.run_dir, "sl")["config"]))
    if task == "unknown":
        raise ValueError(f"--sl {ref.run_dir}: its config names no data.task, so the cloud it takes is unknown")
    check_runs(task, {"sl": ref.run_dir, "dpo": dpo or "", "reward": reward or ""})   # before any array is read
    sl = load_reference(ref)
    score_run = {"implicit": dpo, "explicit": reward}.get(mode)
    scorer = load_policy(score_run) if score_run else None
    ref_params = sl.params
    if sampler == "dpo":
        ref_params = load_policy(dpo).params
    scfg = SelectConfig.from_config(sl.cfg, scorer.cfg if scorer else None, mode=mode, num_candidates=num_candidates,
                                    num_inference_steps=num_inference_steps, eta=eta, reward_samples=reward_samples,
                                    reward_noise=reward_noise, **task_snap(task, snap_pick))
    selector = make_selector(sl.graphdef, sl.cfg.diffusion, sl.norm, scfg,
                             score_graphdef=scorer.graphdef if mode == "explicit" else None, checked=False)
    spec = tasks_lib.get_task(task)
    num_points = int(sl.cfg.data.num_points or spec.num_points)
    frame = frame_settings(task)
    runs = {"sl": {"run_dir": str(sl.run_dir), "step": sl.step, **({"note": ref.note} if ref.note else {})}}
    if scorer:
        runs[mode] = {"run_dir": scorer.run_dir, "step": scorer.step}
    if sampler == "dpo":
        runs["sampler"] = {"run_dir": str(dpo)}
    metadata = {
        "task": task, "mode": mode, "num_points": num_points,
        # a task-frame cloud is made from a world-frame one by pam_jax.pointcloud.preprocess(cloud,
        # xy_scale=..., voxel_size=...) and subsample(num_points) (numpy only); the returned Frame maps
        # the action back (frame.invert); "frame" says whether the run's data were preprocessed at all
        "preprocess": {"xy_scale": spec.xy_scale, "voxel_size": spec.voxel_size},
        "frame": dataclasses.asdict(frame),
        "selection": dataclasses.asdict(scfg),
        "model": dataclasses.asdict(sl.cfg.model), "diffusion": dataclasses.asdict(sl.cfg.diffusion),
        "norm": sl.norm.to_dict(), "runs": runs, "versions": versions(),
    }
    return Policy(selector=selector, ref_params=ref_params, score_params=scorer.params if scorer else None,
                  selection=scfg, norm=sl.norm, num_points=num_points, task=task, frame=frame, metadata=metadata,
                  sl=sl, scorer=scorer, checked=checked)


# --------------------------------------------------------------------------- the evaluation methods

METHODS = ("sl", "sl_random", "sl_explicit", "sl_explicit_sl", "dpo", "deformpam", "oracle")
NEEDS = {"deformpam": ("dpo", "DPO"), "dpo": ("dpo", "DPO"), "sl_explicit": ("reward", "reward"),
         "sl_explicit_sl": ("reward_sl", "reward_sl")}   # method -> (Runs field, what it is)
_MODE = {"sl": "first", "sl_random": "random", "sl_explicit": "explicit", "sl_explicit_sl": "explicit",
         "dpo": "first", "deformpam": "implicit", "oracle": "first"}


@dataclasses.dataclass(frozen=True)
class Runs:
    sl: str
    dpo: str = ""
    reward: str = ""      # the paper's explicit reward model (stage `reward`)
    reward_sl: str = ""   # the SL-initialised explicit reward model (stage `reward_sl`)
    sl_step: int | None = None   # an SL step named explicitly (default: the one the preference runs were trained against)


def bound_sl(runs: Runs) -> tuple[str, int | None]:
    """The SL folder and step every method of `runs` uses: the checkpoint the preference runs
    given were trained against (they must agree), so that the SL baseline and the reward-guided
    methods sample from one model."""
    ref = resolve_reference(runs.sl, runs.sl_step, {"--dpo": runs.dpo, "--reward": runs.reward,
                                                    "--reward-sl": runs.reward_sl})
    return ref.run_dir, ref.step


class Agent:
    """World-frame cloud -> world-frame action by one method (METHODS). `reward_samples` (M) and
    `reward_noise` (select.REWARD_NOISE) of the implicit reward default (None) to the DPO run's
    preference config. `snap_pick`: the task's pick-snapping rule (``TaskSpec.snap``, on by
    default where the published configs have it on) applied to what is executed; the
    candidates are scored as sampled. `sl_step`: an SL checkpoint named explicitly (default:
    `runs.sl_step`, else the one the preference runs were trained against, else the newest)."""

    def __init__(self, method: str, runs: Runs, *, data_task: str, num_candidates: int = 8,
                 reward_samples: int | None = None, num_inference_steps: int | None = None,
                 eta: float | None = None, reward_noise: str | None = None, snap_pick: bool = True,
                 sl_step: int | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
        if method in NEEDS and not getattr(runs, NEEDS[method][0]):
            raise ValueError(f"method {method!r} needs a {NEEDS[method][1]} run")
        self.method, self.data_task = method, data_task
        sl, step = bound_sl(runs if sl_step is None else dataclasses.replace(runs, sl_step=sl_step))
        mode = _MODE[method]
        scoring = {"deformpam": {"dpo": runs.dpo}, "dpo": {"dpo": runs.dpo}, "sl_explicit": {"reward": runs.reward},
                   "sl_explicit_sl": {"reward": runs.reward_sl}}.get(method, {})
        self.policy = load(sl, sl_step=step, mode=mode, sampler="dpo" if method == "dpo" else "sl",
                           num_candidates=1 if method in ("sl", "dpo") else num_candidates, eta=eta,
                           num_inference_steps=num_inference_steps, reward_samples=reward_samples,
                           reward_noise=reward_noise, snap_pick=snap_pick, **scoring)
        self.num_points = self.policy.num_points
        self.ref, self.score = self.policy.ref_params, self.policy.score_params   # what samples, what scores

    def prepare(self, cloud, rng: np.random.Generator):
        """World-frame cloud -> (the policy's input (Np, 3) in the task frame, its WorldFraming)."""
        return self.policy.to_task_frame(cloud, rng)

    def select(self, points, key) -> Selection:
        """Task-frame clouds (B, Np, 3) -> Selection: one checked decision."""
        return self.policy.decide_task_frame(points, key)

    def select_rows(self, points, keys) -> Selection:
        """Task-frame clouds (B, Np, 3), one key each -> Selection: row b equals select(points[b:b+1], keys[b])."""
        return self.policy.decide_rows(points, keys)

    def candidates(self, cloud, rng: np.random.Generator, key) -> tuple[np.ndarray, np.ndarray]:
        """All N candidates for a world-frame cloud, world frame (for collection): (as sampled
        (N, 2, 3), as they would be executed, snapped (N, 2, 3))."""
        pts, frame = self.prepare(cloud, rng)
        sel = self.select(pts[None], key)
        return frame.to_world(np.asarray(sel.candidates)[0]), frame.to_world(np.asarray(sel.executed)[0])

    def act(self, task, rng: np.random.Generator, key):
        """-> (action as executed (2, 3), candidates as sampled (N, 2, 3), chosen index), world
        frame. The oracle tries every candidate as it would be executed (snapped)."""
        pts, frame = self.prepare(task.observe(rng), rng)
        if self.method == "oracle":
            from pam_jax.sim.oracle import candidate_gains

            state = task.save_state()

            def scorer(_, cands):
                gains, _ = candidate_gains(task, state, frame.to_world(cands[0]))
                return np.nan_to_num(gains, nan=-np.inf)[None]

            sel = select_with_host_scorer(self.select, pts[None], key, scorer)
        else:
            sel = self.select(pts[None], key)
        cands = frame.to_world(np.asarray(sel.candidates)[0])
        idx = int(np.asarray(sel.index)[0])
        return frame.to_world(np.asarray(sel.action)[0]), cands, idx

    def act_many(self, tasks, rngs, keys, width: int | None = None, workers: int | None = None) -> list:
        """:meth:`act` for several episodes in one selector call: tasks[i] observed with rngs[i]
        and decided with keys[i] -> [(action, candidates, index)], each what :meth:`act` returns
        for that task, rng and key. `width`: the batch is padded to this many rows (repeats of the
        first cloud, their results dropped), so that a shrinking set of running episodes reuses
        one compiled program. `workers`: the oracle's simulator threads (pam_jax.sim.parallel)."""
        if not tasks:
            return []
        prepared = [self.prepare(t.observe(r), r) for t, r in zip(tasks, rngs)]
        n = len(prepared)
        width = max(width or n, n)
        pts = np.stack([p for p, _ in prepared] + [prepared[0][0]] * (width - n))
        sel = self.select_rows(pts, jax.numpy.stack(list(keys) + [keys[0]] * (width - n)))
        cands = np.asarray(sel.candidates)[:n]
        executed = np.asarray(sel.executed)[:n] if sel.executed is not None else cands
        if self.method == "oracle":     # the simulator's best of the executed candidates, per task
            from pam_jax.sim import parallel
            from pam_jax.sim.oracle import candidate_gains

            # threads over the episodes; a lone episode's candidates get them instead
            def best(i: int) -> int:
                t, frame = tasks[i], prepared[i][1]
                gains, _ = candidate_gains(t, t.save_state(), frame.to_world(executed[i]),
                                           workers=1 if n > 1 else workers)
                return int(np.argmax(np.asarray(np.nan_to_num(gains, nan=-np.inf), np.float32)))

            idx = parallel.map_ordered(best, range(n), workers if n > 1 else 1)
            actions = [executed[i, j] for i, j in enumerate(idx)]
        else:
            idx = [int(j) for j in np.asarray(sel.index)[:n]]
            actions = list(np.asarray(sel.action)[:n])
        return [(frame.to_world(a), frame.to_world(c), j) for (_, frame), a, c, j in zip(prepared, actions, cands, idx)]

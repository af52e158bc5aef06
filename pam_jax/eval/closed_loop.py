"""Closed-loop evaluation on the simulated tasks: methods, episodes, confidence intervals, reports.

Methods (same seeded start states for all):
  sl           SL policy, first candidate (no selection)
  sl_random    SL policy, a random one of N candidates
  sl_explicit  SL candidates + explicit-reward RAS, the paper's baseline head (a reward run:
               fresh network, linear output)
  sl_explicit_sl  the same with the SL-initialised head (a reward_sl run: SL weights + MLP)
  dpo          the DPO model alone (its own first candidate)
  deformpam    SL candidates + implicit-reward RAS (needs a DPO run)
  oracle       SL candidates, the simulator's best (executes each from a saved state): an upper bound

An agent sees the simulator's world-frame cloud, puts it into the task frame the policy was
trained in (the data pipeline's preprocessing: bounding-box centring, xy factor, voxels), subsamples
it, runs one compiled selection, and maps the chosen action back to the world frame.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pam_jax import pointcloud as pc
from pam_jax import select as select_lib
from pam_jax import tasks as tasks_lib
from pam_jax.eval.checks import check_count, check_eval_runs
from pam_jax.eval.summary import paired_difference, summarize  # noqa: F401  (re-exported)
from pam_jax.select import SelectConfig, checked_selector, make_selector, select_with_host_scorer
from pam_jax.sim import make_task
from pam_jax.sim.oracle import candidate_gains
from pam_jax.train.restore import load_policy

METHODS = ("sl", "sl_random", "sl_explicit", "sl_explicit_sl", "dpo", "deformpam", "oracle")
_NEEDS = {"deformpam": ("dpo", "DPO"), "dpo": ("dpo", "DPO"), "sl_explicit": ("reward", "reward"),
          "sl_explicit_sl": ("reward_sl", "reward_sl")}   # method -> (Runs field, what it is)


@dataclasses.dataclass(frozen=True)
class Runs:
    sl: str
    dpo: str = ""
    reward: str = ""      # the paper's explicit reward model (stage `reward`)
    reward_sl: str = ""   # the SL-initialised explicit reward model (stage `reward_sl`)


class Agent:
    """World-frame cloud -> world-frame action by one method. `reward_samples` (M) and
    `reward_noise` (select.REWARD_NOISE) of the implicit reward default (None) to the DPO run's
    preference config. `snap_pick`: the task's pick-snapping rule (``TaskSpec.snap``, on by
    default where the published configs have it on) applied to what is executed; the
    candidates are scored as sampled."""

    def __init__(self, method: str, runs: Runs, *, data_task: str, num_candidates: int = 8,
                 reward_samples: int | None = None, num_inference_steps: int | None = None,
                 eta: float | None = None, reward_noise: str | None = None, snap_pick: bool = True,
                 sl_step: int | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
        if method in _NEEDS and not getattr(runs, _NEEDS[method][0]):
            raise ValueError(f"method {method!r} needs a {_NEEDS[method][1]} run")
        self.method, self.spec = method, tasks_lib.get_task(data_task)
        sl = load_policy(runs.sl, step=sl_step)   # `sl_step`: a kept checkpoint (None = the newest)
        cfg = sl.cfg
        self.num_points = cfg.data.num_points or self.spec.num_points
        mode = {"sl": "first", "sl_random": "random", "sl_explicit": "explicit", "sl_explicit_sl": "explicit",
                "dpo": "first", "deformpam": "implicit", "oracle": "first"}[method]
        scorer = None
        self.ref = sl.params
        if method == "dpo":
            self.ref = load_policy(runs.dpo).params
        elif method == "deformpam":
            scorer = load_policy(runs.dpo)
        elif mode == "explicit":
            scorer = load_policy(getattr(runs, _NEEDS[method][0]))
        n = 1 if method in ("sl", "dpo") else num_candidates
        scfg = SelectConfig.from_config(cfg, scorer.cfg if scorer else None, mode=mode, num_candidates=n, eta=eta,
                                        num_inference_steps=num_inference_steps, reward_samples=reward_samples,
                                        reward_noise=reward_noise, **select_lib.task_snap(data_task, snap_pick))
        selector = make_selector(sl.graphdef, cfg.diffusion, sl.norm, scfg,
                                 score_graphdef=scorer.graphdef if mode == "explicit" else None)
        # the parameter-only work once per agent; each step runs the decision only, its clouds
        # checked (shape, finite, range) before the graph: select(points, key) -> Selection
        self.score = scorer.params if scorer else None
        prepared = selector.prepare(self.ref, self.score)
        self.select = functools.partial(checked_selector(selector.decide, sl.norm), prepared)
        # several start states at once, one call: row b of (B, Np, 3) is decided with key b by
        # the one-cloud decision, mapped over the rows inside the compiled program (lax.map),
        # so each episode of a batch follows its sequential course bit for bit (a vmapped,
        # batched decision differs in the last bits on CPU, which can change a chosen candidate)
        def rows(prep, points, keys):
            def one(row):
                return jax.tree.map(lambda a: a[0], selector.decide(prep, row[0][None], row[1]))
            return jax.lax.map(one, (points, keys))
        rows = jax.jit(rows)
        self.select_rows = functools.partial(checked_selector(rows, sl.norm), prepared)

    def prepare(self, cloud, rng: np.random.Generator):
        """World-frame cloud -> (the policy's input (Np, 3) in the task frame, the Frame)."""
        cloud, _, frame = pc.preprocess(cloud, (), xy_scale=self.spec.xy_scale, voxel_size=self.spec.voxel_size)
        return pc.subsample(cloud, self.num_points, rng), frame

    def candidates(self, cloud, rng: np.random.Generator, key) -> tuple[np.ndarray, np.ndarray]:
        """All N candidates for a world-frame cloud, world frame (for collection): (as sampled
        (N, 2, 3), as they would be executed, snapped (N, 2, 3))."""
        pts, frame = self.prepare(cloud, rng)
        sel = self.select(pts[None], key)
        return frame.invert(np.asarray(sel.candidates)[0]), frame.invert(np.asarray(sel.executed)[0])

    def act(self, task, rng: np.random.Generator, key):
        """-> (action as executed (2, 3), candidates as sampled (N, 2, 3), chosen index), world
        frame. The oracle tries every candidate as it would be executed (snapped)."""
        pts, frame = self.prepare(task.observe(rng), rng)
        if self.method == "oracle":
            state = task.save_state()

            def scorer(_, cands):
                gains, _ = candidate_gains(task, state, frame.invert(cands[0]))
                return np.nan_to_num(gains, nan=-np.inf)[None]

            sel = select_with_host_scorer(self.select, pts[None], key, scorer)
        else:
            sel = self.select(pts[None], key)
        cands = frame.invert(np.asarray(sel.candidates)[0])
        idx = int(np.asarray(sel.index)[0])
        return frame.invert(np.asarray(sel.action)[0]), cands, idx

    def act_many(self, tasks, rngs, keys, width: int | None = None) -> list:
        """:meth:`act` for several episodes in one selector call: tasks[i] observed with rngs[i]
        and decided with keys[i] -> [(action, candidates, index)], each what :meth:`act` returns
        for that task, rng and key. `width`: the batch is padded to this many rows (repeats of the
        first cloud, their results dropped), so that a shrinking set of running episodes reuses
        one compiled program."""
        if not tasks:
            return []
        prepared = [self.prepare(t.observe(r), r) for t, r in zip(tasks, rngs)]
        n = len(prepared)
        width = max(width or n, n)
        pts = np.stack([p for p, _ in prepared] + [prepared[0][0]] * (width - n))
        keys = list(keys) + [keys[0]] * (width - n)
        sel = self.select_rows(pts, jnp.stack(keys))
        cands = np.asarray(sel.candidates)[:n]
        executed = np.asarray(sel.executed)[:n] if sel.executed is not None else cands
        if self.method == "oracle":     # the simulator's best of the executed candidates, per task
            idx, actions = [], []
            for i, (t, (_, frame)) in enumerate(zip(tasks, prepared)):
                gains, _ = candidate_gains(t, t.save_state(), frame.invert(executed[i]))
                j = int(np.argmax(np.asarray(np.nan_to_num(gains, nan=-np.inf), np.float32)))
                idx.append(j)
                actions.append(executed[i, j])
        else:
            idx = [int(j) for j in np.asarray(sel.index)[:n]]
            actions = list(np.asarray(sel.action)[:n])
        return [(frame.invert(a), frame.invert(c), j) for (_, frame), a, c, j in zip(prepared, actions, cands, idx)]


def run_episode(task, agent: Agent, seed: int, *, max_steps: int | None = None) -> dict:
    task.reset(seed)
    rng = np.random.default_rng([seed, 99])
    limit = min(task.step_limit, max_steps or task.step_limit)
    scores, frames = [float(task.score())], []
    success_step = 0 if task.success() else None
    for step in range(limit):
        if task.success():
            break
        action, cands, idx = agent.act(task, rng, jax.random.key(seed * 1000 + step))
        if step < 3:
            frames.append({"cloud": task.observe(np.random.default_rng(0))[::4], "candidates": cands, "chosen": idx})
        info = task.step(action)
        scores.append(float(info.score_after))
        if info.success and success_step is None:
            success_step = step + 1
    return {"seed": seed, "scores": scores, "final": scores[-1], "success": success_step is not None,
            "steps_to_success": success_step, "metrics": task.metric(), "frames": frames}


def run_episodes(tasks, agent: Agent, seeds, *, max_steps: int | None = None) -> list[dict]:
    """:func:`run_episode` for every start seed at once: tasks[i] (one simulator per start state)
    plays seeds[i], and every step of the episodes still running is one selector call
    (:meth:`Agent.act_many`). Each episode equals its sequential :func:`run_episode`: its own
    observation rng, key per step and step limit."""
    seeds = list(seeds)
    if len(tasks) < len(seeds):
        raise ValueError(f"run_episodes: {len(seeds)} start seeds need as many tasks, got {len(tasks)}")
    tasks = list(tasks)[:len(seeds)]
    eps = []
    for task, seed in zip(tasks, seeds):
        task.reset(seed)
        eps.append({"rng": np.random.default_rng([seed, 99]), "limit": min(task.step_limit, max_steps or task.step_limit),
                    "scores": [float(task.score())], "frames": [], "success_step": 0 if task.success() else None,
                    "done": False})
    step = 0
    while True:
        for task, e in zip(tasks, eps):
            e["done"] = e["done"] or step >= e["limit"] or task.success()
        live = [i for i, e in enumerate(eps) if not e["done"]]
        if not live:
            break
        acts = agent.act_many([tasks[i] for i in live], [eps[i]["rng"] for i in live],
                              [jax.random.key(seeds[i] * 1000 + step) for i in live], width=len(seeds))
        for i, (action, cands, idx) in zip(live, acts):
            task, e = tasks[i], eps[i]
            if step < 3:
                e["frames"].append({"cloud": task.observe(np.random.default_rng(0))[::4], "candidates": cands,
                                    "chosen": idx})
            info = task.step(action)
            e["scores"].append(float(info.score_after))
            if info.success and e["success_step"] is None:
                e["success_step"] = step + 1
        step += 1
    return [{"seed": seed, "scores": e["scores"], "final": e["scores"][-1], "success": e["success_step"] is not None,
             "steps_to_success": e["success_step"], "metrics": task.metric(), "frames": e["frames"]}
            for task, seed, e in zip(tasks, seeds, eps)]


def evaluate(task_name: str, runs: Runs, *, methods=("sl", "deformpam"), seeds=range(10),
             num_candidates: int = 8, reward_samples: int | None = None, max_steps: int | None = None,
             progress: bool = True, reward_noise: str | None = None, snap_pick: bool = True) -> dict:
    from tqdm.auto import tqdm

    seeds = list(seeds)
    check_count("episodes (seeds)", len(seeds))
    check_count("num_candidates", num_candidates)
    for name, v in (("reward_samples", reward_samples), ("max_steps", max_steps)):
        if v is not None:
            check_count(name, v)
    check_eval_runs(task_name, runs, methods, METHODS, _NEEDS)   # before any episode
    sims = [make_task(task_name) for _ in seeds]       # one simulator per start state: stepped together
    out = {"task": task_name, "runs": dataclasses.asdict(runs), "methods": {}}
    for method in tqdm(methods, desc=f"{task_name}: {len(seeds)} episodes per method", disable=not progress):
        agent = Agent(method, runs, data_task=tasks_lib.data_task_name(task_name), num_candidates=num_candidates,
                      reward_samples=reward_samples, reward_noise=reward_noise, snap_pick=snap_pick)
        eps = run_episodes(sims, agent, seeds, max_steps=max_steps)
        out["methods"][method] = {"summary": summarize(eps), "episodes": eps}
    return out

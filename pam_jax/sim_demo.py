"""`pam-jax demo --task rope`: the three DeformPAM stages on a simulated task, end to end.

1. scripted-expert episodes, written in the published layout, built with the TFDS builder;
2. the supervised (SL) policy trained on them;
3. on-policy candidates from the SL policy, ranked by the oracle annotator, built likewise;
4. DPO fine-tuning against the frozen SL policy;
5. closed-loop evaluation of SL against DeformPAM (and any other method asked for).
Every stage resumes: rerunning the command skips what is already written or trained.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np

from pam_jax import config as config_lib
from pam_jax import evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def _configs(task: str, root: pathlib.Path, sl_steps: int, dpo_steps: int, overrides=()):
    from pam_jax.sim.episodes import data_task_name

    dt = data_task_name(task)
    exp = REPO / "experiments" / "sim_rope.py"
    common = [f"data.data_dir={root / 'tfds'}", f"data.task={dt}"]
    sl = config_lib.override(config_lib.load_experiment(exp), common + [
        f"name=sim_{task}", f"data.dataset=deformpam/{dt}_supervised", f"train.run_dir={root / 'sl'}",
        *([f"train.steps={sl_steps}"] if sl_steps else []), *overrides])
    dpo = config_lib.override(config_lib.load_experiment(f"{exp}:dpo"), common + [
        f"name=sim_{task}_dpo", f"data.dataset=deformpam/{dt}_finetune", f"train.run_dir={root / 'dpo'}",
        f"preference.init_from={root / 'sl'}", *([f"train.steps={dpo_steps}"] if dpo_steps else []),
        *overrides])
    return dt, sl, dpo


def collect(task: str, sl_run, out, *, states: int, num_candidates: int = 8, num_points: int | None = None,
            steps_per_episode: int = 4, label_noise: float = 0.0, seed: int = 0, progress: bool = True) -> dict:
    """Roll out a trained SL policy, record its K candidates (DDIM eta=1) at each state, have the
    oracle annotator rank them, and write finetune samples in the published layout."""
    from pam_jax.sim.episodes import data_task_name, write_preference_round

    agent = evaluate.Agent("sl_random", evaluate.Runs(sl=str(sl_run)), data_task=data_task_name(task),
                           num_candidates=num_candidates, eta=1.0)
    rng = np.random.default_rng(seed)
    calls = iter(range(10**9))

    def candidates_fn(cloud):
        return agent.candidates(cloud, rng, jax.random.key(next(calls)))

    return write_preference_round(task, out, states=states, candidates_fn=candidates_fn, seed=seed,
                                  label_noise=label_noise, num_points=num_points,
                                  steps_per_episode=steps_per_episode, if_exists="skip", progress=progress)


def run(task: str = "rope", *, root="runs/demo_rope", episodes: int = 20, states: int = 48,
        eval_episodes: int = 10, methods=("sl", "deformpam"), sl_steps: int = 0, dpo_steps: int = 0,
        episode_steps: int | None = None, overrides=(), progress: bool = True) -> dict:
    """`overrides` (--set style) apply to both stages' configs; `episode_steps` caps every episode."""
    from pam_jax.data import sources
    from pam_jax.sim.episodes import write_expert_episodes
    from pam_jax.train.loop import train

    root = pathlib.Path(root)
    dt, sl_cfg, dpo_cfg = _configs(task, root, sl_steps, dpo_steps, overrides)
    n_points = sl_cfg.data.num_points * 2

    print(f"[1/5] expert demonstrations: {episodes} episodes of the {task} task")
    r = write_expert_episodes(task, root / "src" / "supervised", episodes=episodes, num_points=n_points,
                              max_steps=episode_steps, if_exists="skip", progress=progress)
    print(f"      {r['samples']} states written ({r['skipped_existing']} already there), "
          f"expert success rate {100 * r['success_rate']:.0f}%")
    sources.build(root / "src" / "supervised", task=dt, kind="supervised", data_dir=root / "tfds",
                  overwrite=True, progress=False)

    print(f"[2/5] supervised policy ({sl_cfg.train.steps} steps)")
    train(sl_cfg, progress_bar=progress)

    print(f"[3/5] preferences: {states} states x {dpo_cfg.preference.num_candidates} on-policy candidates, "
          "ranked by the oracle annotator")
    r = collect(task, root / "sl", root / "src" / "finetune", states=states,
                num_candidates=dpo_cfg.preference.num_candidates, num_points=n_points,
                steps_per_episode=episode_steps or 4, progress=progress)
    print(f"      {r['samples']} states written, label counts {r['label_counts']}")
    sources.build(root / "src" / "finetune", task=dt, kind="finetune", data_dir=root / "tfds",
                  overwrite=True, progress=False)

    print(f"[4/5] DPO ({dpo_cfg.train.steps} steps) against the frozen SL policy")
    train(dpo_cfg, progress_bar=progress)

    print(f"[5/5] closed-loop evaluation on {eval_episodes} seeded start states: {', '.join(methods)}")
    result = evaluate.evaluate(task, evaluate.Runs(sl=str(root / "sl"), dpo=str(root / "dpo")),
                               methods=tuple(methods), seeds=range(1000, 1000 + eval_episodes),
                               max_steps=episode_steps, progress=progress)
    paths = evaluate.write_report(result, root / "eval")
    print(evaluate.table_markdown(result))
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    print(f"checkpoints: {root / 'sl' / 'checkpoints'}, {root / 'dpo' / 'checkpoints'}")
    return result

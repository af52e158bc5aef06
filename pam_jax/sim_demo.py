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


def run(task: str = "rope", *, root="runs/demo_rope", episodes: int = 20, states: int = 48,
        eval_episodes: int = 10, methods=("sl", "deformpam"), sl_steps: int = 0, dpo_steps: int = 0,
        episode_steps: int | None = None, overrides=(), progress: bool = True) -> dict:
    """`overrides` (--set style) apply to both stages' configs; `episode_steps` caps every episode."""
    from pam_jax.data import sources
    from pam_jax.sim.episodes import write_expert_episodes, write_preference_round
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
    agent = evaluate.Agent("sl_random", evaluate.Runs(sl=str(root / "sl")), data_task=dt,
                           num_candidates=dpo_cfg.preference.num_candidates, eta=1.0)
    rng = np.random.default_rng(0)
    calls = iter(range(10**9))

    def candidates_fn(cloud):
        return agent.candidates(cloud, rng, jax.random.key(next(calls)))

    r = write_preference_round(task, root / "src" / "finetune", states=states, candidates_fn=candidates_fn,
                               num_points=n_points, steps_per_episode=episode_steps or 4, if_exists="skip",
                               progress=progress)
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

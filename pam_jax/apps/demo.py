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
STAGE_DIRS = {"supervised": "sl", "dpo": "dpo", "reward": "reward"}


def configs(task: str, root: pathlib.Path, *, sl_steps: int = 0, pref_steps: int = 0, overrides=()) -> dict:
    """{stage: Config} of experiments/sim_TASK.py with every path under `root`; `overrides`
    (--set style) apply to every stage."""
    exp = REPO / "experiments" / f"sim_{task}.py"
    out = {}
    for stage in ("supervised", "dpo", "reward"):
        steps = sl_steps if stage == "supervised" else pref_steps
        paths = [f"data.data_dir={root / 'tfds'}", f"train.run_dir={root / STAGE_DIRS[stage]}"]
        if stage != "supervised":
            paths.append(f"preference.init_from={root / 'sl'}")
        out[stage] = config_lib.override(config_lib.load_experiment(f"{exp}:{stage}"), [
            *paths, *([f"train.steps={steps}"] if steps else []), *overrides])
    return out


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


def run(task: str = "rope", *, root="runs/demo_rope", episodes: int = 20, states: int = 96,
        eval_episodes: int = 10, methods=("sl", "deformpam"), sl_steps: int = 0, pref_steps: int = 0,
        episode_steps: int | None = None, label_noise: float = 0.0, overrides=(), progress: bool = True) -> dict:
    """`overrides` (--set style) apply to every stage's config; `episode_steps` caps every episode."""
    from pam_jax import reward_eval
    from pam_jax.data import sources
    from pam_jax.sim.episodes import data_task_name, write_expert_episodes
    from pam_jax.train.loop import train

    root = pathlib.Path(root)
    dt = data_task_name(task)
    cfgs = configs(task, root, sl_steps=sl_steps, pref_steps=pref_steps, overrides=overrides)
    sl_cfg, dpo_cfg = cfgs["supervised"], cfgs["dpo"]
    n_points = sl_cfg.data.num_points * 2
    want_reward = "sl_explicit" in methods

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
          f"ranked by the oracle annotator (label noise {label_noise:g})")
    r = collect(task, root / "sl", root / "src" / "finetune", states=states,
                num_candidates=dpo_cfg.preference.num_candidates, num_points=n_points,
                steps_per_episode=episode_steps or 4, label_noise=label_noise, progress=progress)
    print(f"      {r['samples']} states written, label counts {r['label_counts']}")
    ft = sources.build(root / "src" / "finetune", task=dt, kind="finetune", data_dir=root / "tfds",
                       overwrite=True, progress=False)

    stages = ["dpo"] + (["reward"] if want_reward else [])
    print(f"[4/5] preference stages ({dpo_cfg.train.steps} steps each): "
          + " and ".join({"dpo": "DPO against the frozen SL policy", "reward": "the explicit reward head"}[s]
                         for s in stages))
    held_out = {}
    for stage in stages:
        train(cfgs[stage], progress_bar=progress)
        acc = reward_eval.pair_accuracy(root / "sl", root / STAGE_DIRS[stage], ft["dataset_dir"],
                                        mode="implicit" if stage == "dpo" else "explicit")
        held_out[stage] = acc
        print(f"      held-out pair accuracy ({acc['states']} validation/test states): "
              f"{reward_eval.percent(acc['candidates'])} between sampled candidates ({acc['pairs']['candidates']} pairs), "
              f"{reward_eval.percent(acc['vs_annotator'])} against the annotator's action ({acc['pairs']['vs_annotator']} pairs); "
              "chance 50%")

    print(f"[5/5] closed-loop evaluation on {eval_episodes} seeded start states: {', '.join(methods)}")
    runs = evaluate.Runs(sl=str(root / "sl"), dpo=str(root / "dpo"), reward=str(root / "reward") if want_reward else "")
    result = evaluate.evaluate(task, runs, methods=tuple(methods), seeds=range(1000, 1000 + eval_episodes),
                               num_candidates=dpo_cfg.preference.num_candidates, max_steps=episode_steps,
                               progress=progress)
    result["held_out_pair_accuracy"] = held_out
    result["data"] = {"expert_episodes": episodes, "preference_states": states, "label_noise": label_noise,
                      "sl_steps": sl_cfg.train.steps, "preference_steps": dpo_cfg.train.steps}
    paths = evaluate.write_report(result, root / "eval")
    print(evaluate.table_markdown(result))
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    print("checkpoints: " + ", ".join(str(root / STAGE_DIRS[s] / "checkpoints") for s in ["supervised", *stages]))
    return result

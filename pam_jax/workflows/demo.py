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

from pam_jax import config as config_lib
from pam_jax import tasks as tasks_lib
from pam_jax.data.build import build as build_dataset
from pam_jax.eval import closed_loop as evaluate
from pam_jax.eval import pairs as reward_eval
from pam_jax.eval import report
from pam_jax.sim.episodes import write_expert_episodes
from pam_jax.train.loop import train
from pam_jax.workflows.collect import collect

STAGE_DIRS = {"supervised": "sl", "dpo": "dpo", "reward": "reward", "reward_sl": "reward_sl"}
EXPLICIT = {"reward": "sl_explicit", "reward_sl": "sl_explicit_sl"}   # explicit reward stage -> its method
# the committed studies whose DeformPAM - SL has a 95% interval above 0: results folder -> command
RESOLVED = {
    "docs/results/study_granular": "pam-jax study --task granular --scale full",
    "docs/results/study_cloth_pp": "pam-jax study --task cloth --scale full --train-seeds 8 --per-seed-preferences",
}


def configs(task: str, root: pathlib.Path, *, sl_steps: int = 0, pref_steps: int = 0, overrides=()) -> dict:
    """{stage: Config} of experiments/sim_TASK.py with every path under `root`; `overrides`
    (--set style) apply to every stage; `pref_steps` replaces the preference stages' epoch budget."""
    exp = tasks_lib.get_task(task).experiment
    out = {}
    for stage in STAGE_DIRS:
        steps = sl_steps if stage == "supervised" else pref_steps
        paths = [f"data.data_dir={root / 'tfds'}", f"train.run_dir={root / STAGE_DIRS[stage]}"]
        if stage != "supervised":
            paths.append(f"preference.init_from={root / 'sl'}")
        out[stage] = config_lib.override(config_lib.load_experiment(f"{exp}:{stage}"), [
            *paths, *([f"train.steps={steps}", "train.epochs=0"] if steps else []), *overrides])
    return out


def run(task: str = "rope", *, root="runs/demo_rope", episodes: int = 20, states: int = 48,
        eval_episodes: int = 10, methods=("sl", "deformpam"), sl_steps: int = 0, pref_steps: int = 0,
        episode_steps: int | None = None, label_noise: float = 0.0, overrides=(), progress: bool = True) -> dict:
    """`overrides` (--set style) apply to every stage's config; `episode_steps` caps every episode."""
    root = pathlib.Path(root)
    dt = tasks_lib.data_task_name(task)
    cfgs = configs(task, root, sl_steps=sl_steps, pref_steps=pref_steps, overrides=overrides)
    sl_cfg, dpo_cfg = cfgs["supervised"], cfgs["dpo"]
    n_points = sl_cfg.data.num_points * 2
    explicit = [stage for stage, method in EXPLICIT.items() if method in methods]

    print(f"[1/5] expert demonstrations: {episodes} episodes of the {task} task")
    r = write_expert_episodes(task, root / "src" / "supervised", episodes=episodes, num_points=n_points,
                              max_steps=episode_steps, if_exists="skip", progress=progress)
    print(f"      {r['samples']} states written ({r['skipped_existing']} already there), "
          f"expert success rate {100 * r['success_rate']:.0f}%")
    build_dataset(root / "src" / "supervised", task=dt, kind="supervised", data_dir=root / "tfds",
                  overwrite=True, progress=False)

    print(f"[2/5] supervised policy ({sl_cfg.train.steps} steps)")
    train(sl_cfg, progress_bar=progress)

    print(f"[3/5] preferences: {states} states x {dpo_cfg.preference.num_candidates} on-policy candidates, "
          f"ranked by the oracle annotator (label noise {label_noise:g})")
    r = collect(task, root / "sl", root / "src" / "finetune", states=states,
                num_candidates=dpo_cfg.preference.num_candidates, num_points=n_points,
                max_steps=episode_steps, label_noise=label_noise, progress=progress)
    print(f"      {r['samples']} states written, label counts {r['label_counts']}")
    ft = build_dataset(root / "src" / "finetune", task=dt, kind="finetune", data_dir=root / "tfds",
                       overwrite=True, progress=False)

    stages = ["dpo", *explicit]
    budget = (f"{dpo_cfg.train.epochs:g} epochs" if dpo_cfg.train.epochs > 0 else f"{dpo_cfg.train.steps} steps")
    print(f"[4/5] preference stages ({budget} each): "
          + " and ".join({"dpo": "DPO against the frozen SL policy", "reward": "the paper's explicit reward model",
                          "reward_sl": "the SL-initialised explicit reward model"}[s] for s in stages))
    held_out = {}
    for stage in stages:
        train(cfgs[stage], progress_bar=progress)
        acc = reward_eval.pair_accuracy(root / "sl", root / STAGE_DIRS[stage], ft["dataset_dir"],
                                        mode="implicit" if stage == "dpo" else "explicit")
        held_out[stage] = acc
        print(f"      held-out pair accuracy ({acc['states']} validation/test states): "
              f"{report.percent(acc['candidates'])} between sampled candidates ({acc['pairs']['candidates']} pairs), "
              f"{report.percent(acc['vs_annotator'])} against the annotator's action ({acc['pairs']['vs_annotator']} pairs); "
              "chance 50%")

    print(f"[5/5] closed-loop evaluation on {eval_episodes} seeded start states: {', '.join(methods)}")
    runs = evaluate.Runs(sl=str(root / "sl"), dpo=str(root / "dpo"),
                         **{stage: str(root / STAGE_DIRS[stage]) for stage in explicit})
    result = evaluate.evaluate(task, runs, methods=tuple(methods), seeds=range(1000, 1000 + eval_episodes),
                               num_candidates=dpo_cfg.preference.num_candidates, max_steps=episode_steps,
                               progress=progress)
    result["held_out_pair_accuracy"] = held_out
    result["data"] = {"expert_episodes": episodes, "preference_states": states, "label_noise": label_noise,
                      "sl_steps": sl_cfg.train.steps, "preference_steps": dpo_cfg.train.steps}
    paths = report.write_report(result, root / "eval")
    print(report.table_markdown(result))
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    print("checkpoints: " + ", ".join(str(root / STAGE_DIRS[s] / "checkpoints") for s in ["supervised", *stages]))
    print(f"This demo is sized to finish in minutes: its table shows the pipeline, not the method's effect. "
          f"The comparison with 3 training seeds, every baseline and 30 report start states (resumable, "
          f"hours on 2 CPU cores): pam-jax study --task {task} --scale full")
    print("The studies that resolve DeformPAM's gain over SL (95% interval above 0; figures in BUILD_NOTES.md and "
          "docs/results/README.md): " + "; ".join(f"{cmd} (tables: {folder}/study.md)" for folder, cmd in RESOLVED.items()))
    return result


def toy_demo(root: pathlib.Path, sl_steps: int) -> int:
    from pam_jax.toy import evaluate as toy
    from pam_jax.toy import preference_eval as toy_preference

    sl_dir, dpo_dir = root / "sl", root / "dpo"
    steps = [f"train.steps={sl_steps}"] if sl_steps else []
    sl = config_lib.override(config_lib.load_experiment("toy_bimodal"),
                             [f"train.run_dir={sl_dir}", *steps])
    print(f"[1/4] supervised: the toy bimodal policy ({sl.train.steps} steps) in {sl_dir}")
    train(sl, progress_bar=True)
    print("[2/4] sampling 16 actions on 64 fresh scenes")
    png = str(root / "samples.png")
    print(report.toy_report(toy.evaluate(sl_dir, scenes=64, samples=16, png=png), 64, 16, png))
    dpo = config_lib.override(config_lib.load_experiment("toy_dpo"),
                              [f"train.run_dir={dpo_dir}", f"preference.init_from={sl_dir}"])
    print(f"[3/4] preference: {dpo.data.num_states} states x {dpo.preference.num_candidates} on-policy "
          f"candidates labelled by the oracle (prefers the left end first), then DPO "
          f"({dpo.train.steps} steps) in {dpo_dir}")
    train(dpo, progress_bar=True)
    print("[4/4] reward-guided selection on 64 fresh scenes")
    r = toy_preference.evaluate_selection(sl_dir, dpo_dir, scenes=64, modes=("first", "random", "implicit"))
    print(report.ras_report(r, 64))
    print(f"plots: {png}, {sl_dir / 'loss.png'}, {dpo_dir / 'loss.png'}\n"
          f"checkpoints: {sl_dir / 'checkpoints'}, {dpo_dir / 'checkpoints'}")
    return 0

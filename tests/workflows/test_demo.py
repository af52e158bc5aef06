"""The simulated pipeline end to end at a tiny size: data -> SL -> preferences -> DPO -> eval."""
import json

import pytest

from pam_jax.cli import app as cli
from pam_jax.workflows import demo as sim_demo

TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_inference_steps=3", "data.num_points=128",
        "data.batch_size=4", "train.log_every=1", "train.checkpoint_every=2", "train.num_devices=1",
        "preference.num_candidates=3"]


@pytest.mark.slow
def test_rope_pipeline_runs_end_to_end(tmp_path, capsys):
    result = sim_demo.run("rope", root=tmp_path, episodes=2, states=3, eval_episodes=1, sl_steps=2,
                          pref_steps=2, episode_steps=2, overrides=TINY, progress=False,
                          methods=("sl", "sl_explicit", "deformpam"))
    assert set(result["methods"]) == {"sl", "sl_explicit", "deformpam"}
    out = capsys.readouterr().out
    assert "[5/5]" in out and "DeformPAM" in out and "explicit RAS" in out
    assert set(result["held_out_pair_accuracy"]) == {"dpo", "reward"}
    assert result["data"]["preference_states"] == 3
    assert (tmp_path / "reward" / "checkpoints").is_dir()

    # a "DPO run" identical to its reference: every implicit reward is 0 up to float rounding
    import jax
    import numpy as np

    from pam_jax import preference
    from pam_jax.data.pipeline import eval_batches
    from pam_jax.eval import pairs as reward_eval
    score, _ = reward_eval.make_scorer("implicit", tmp_path / "sl", tmp_path / "sl")
    batch = preference.dpo_batch(next(eval_batches(tmp_path / "tfds" / "deformpam" / "rope_finetune" / "1.0.0",
                                                   split="train", num_points=128)))
    r = score(batch["points"], batch["candidates"], jax.random.key(0))
    assert r.shape == batch["candidates"].shape[:2] and np.abs(r).max() < 1e-3

    # pam-jax eval --pairs: the same held-out measurement from the command line
    ds = tmp_path / "tfds" / "deformpam" / "rope_finetune" / "1.0.0"
    assert cli.main(["eval", "--pairs", str(ds), "--sl", str(tmp_path / "sl"), "--dpo", str(tmp_path / "dpo"),
                     "--reward", str(tmp_path / "reward"), "--json"]) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(acc) == {"implicit", "explicit", "regret"} and acc["implicit"]["states"] == acc["explicit"]["states"]
    # the simulated samples record the oracle's gains: top-1 regret of each scorer on the same states
    assert acc["regret"]["states"] == acc["implicit"]["states"] and acc["regret"]["skipped"] == 0
    assert set(acc["regret"]["scorers"]) == {"first", "random", "implicit", "explicit"}

    # pam-jax collect: the same SL policy's candidates, ranked, written as finetune samples
    out = tmp_path / "collected"
    assert cli.main(["collect", "--task", "rope", "--sl", str(tmp_path / "sl"), "--out", str(out),
                     "--states", "2", "--candidates", "2", "--steps-per-episode", "2"]) == 0
    assert "2 preference states written" in capsys.readouterr().out
    assert len([p for p in out.iterdir() if (p / "annotation.yaml").exists()]) == 2


def test_the_demo_names_exactly_the_committed_studies_that_resolve_the_gain():
    """The demo's closing line points at the studies whose DeformPAM - SL interval lies above 0:
    it must agree with the committed results, whatever they say, and each command with the
    settings its folder recorded."""
    import pathlib
    import shlex

    from pam_jax.workflows import study

    repo = pathlib.Path(__file__).resolve().parents[2]
    resolved = set()
    for path in (repo / "docs" / "results").glob("study_*/study.json"):
        record = json.loads(path.read_text())
        if record["closed_loop"]["report"]["vs_sl"]["deformpam"]["lo"] > 0:
            resolved.add(str(path.parent.relative_to(repo)))
    assert resolved == set(sim_demo.RESOLVED)
    for folder, command in sim_demo.RESOLVED.items():
        settings = json.loads((repo / folder / "study.json").read_text())["settings"]
        args = shlex.split(command)
        assert args[args.index("--task") + 1] == settings["task"]
        assert ("--per-seed-preferences" in args) == settings["per_seed_preferences"]
        seeds = (int(args[args.index("--train-seeds") + 1]) if "--train-seeds" in args
                 else study.SCALES[args[args.index("--scale") + 1]]["train_seeds"])
        assert seeds == settings["train_seeds"]

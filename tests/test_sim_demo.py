"""The simulated pipeline end to end at a tiny size: data -> SL -> preferences -> DPO -> eval."""
import json

from pam_jax import cli, sim_demo

TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_inference_steps=3", "data.num_points=128",
        "data.batch_size=4", "train.log_every=1", "train.checkpoint_every=2", "train.num_devices=1",
        "preference.num_candidates=3"]


def test_rope_pipeline_runs_end_to_end(tmp_path, capsys):
    result = sim_demo.run("rope", root=tmp_path, episodes=2, states=3, eval_episodes=1, sl_steps=2,
                          dpo_steps=2, episode_steps=2, overrides=TINY, progress=False)
    assert set(result["methods"]) == {"sl", "deformpam"}
    out = capsys.readouterr().out
    assert "[5/5]" in out and "DeformPAM" in out
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["task"] == "rope"
    meta_dir = next((tmp_path / "dpo" / "checkpoints" / "2" / "meta").glob("*"))
    assert json.loads(meta_dir.read_text())["parent"]["step"] == 2

    # pam-jax collect: the same SL policy's candidates, ranked, written as finetune samples
    out = tmp_path / "collected"
    assert cli.main(["collect", "--task", "rope", "--sl", str(tmp_path / "sl"), "--out", str(out),
                     "--states", "2", "--candidates", "2", "--steps-per-episode", "2"]) == 0
    assert "2 preference states written" in capsys.readouterr().out
    assert len([p for p in out.iterdir() if (p / "annotation.yaml").exists()]) == 2

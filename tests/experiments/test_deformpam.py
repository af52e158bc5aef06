"""The DeformPAM experiment files train both stages straight from built datasets (fixtures)."""
import json

import pytest

from pam_jax.cli import app as cli
from pam_jax.data import fixtures
from pam_jax.data.build import build as build_dataset

TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_inference_steps=4", "data.num_points=64",
        "data.batch_size=4", "train.steps=3", "train.log_every=1", "train.checkpoint_every=3",
        "train.num_devices=1"]


@pytest.mark.parametrize("task,name", [("rope", "rope")])
def test_supervised_then_dpo_from_built_datasets(tmp_path, task, name):
    tfds_dir = tmp_path / "tfds"
    for kind in ("supervised", "finetune"):
        fx = fixtures.write_fixture(tmp_path / f"src_{kind}", task=task, kind=kind, num_episodes=10)
        build_dataset(fx["root"], task=task, kind=kind, data_dir=tfds_dir, progress=False)
    sl, dpo = tmp_path / "sl", tmp_path / "dpo"
    common = TINY + [f"data.data_dir={tfds_dir}"]
    exp = f"experiments/deformpam_{name}.py"
    assert cli.main(["train", "--experiment", exp, "--no-progress", "--set", *common,
                     f"train.run_dir={sl}"]) == 0
    assert cli.main(["train", "--experiment", exp + ":dpo", "--no-progress", "--set", *common,
                     f"train.run_dir={dpo}", f"preference.init_from={sl}", "train.epochs=0"]) == 0
    rows = [json.loads(l) for l in (dpo / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["valid_pairs"] > 0
    meta = json.loads(next((dpo / "checkpoints" / "3" / "meta").glob("*")).read_text())
    assert meta["parent"]["run_dir"] == str(sl) and meta["parent"]["step"] == 3

"""Config: overrides, nearest-key suggestions, experiment files, dict round trips."""
import pathlib

import pytest

from pam_jax import config as C

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_override_coerces_types():
    cfg = C.override(C.Config(), ["train.steps=7", "optim.lr=3e-4", "diffusion.clip_sample=false",
                                  "data.dataset=deformpam/rope", "name=x"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 3e-4 and cfg.diffusion.clip_sample is False
    assert cfg.data.dataset == "deformpam/rope" and cfg.name == "x"
    assert C.Config().train.steps == 1000  # the original is untouched (frozen)


def test_mistyped_key_suggests_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'optim.lr'"):
        C.override(C.Config(), ["optim.lrr=1"])


@pytest.mark.parametrize("item,msg", [
    ("train.steps=abc", "expected int"),
    ("diffusion.clip_sample=maybe", "expected a boolean"),
    ("train.steps", "key=value"),
])
def test_bad_override_values(item, msg):
    with pytest.raises(ValueError, match=msg):
        C.override(C.Config(), [item])


def test_dict_round_trip():
    cfg = C.override(C.Config(), ["model.width=96", "train.run_dir=/tmp/x"])
    assert C.from_dict(C.to_dict(cfg)) == cfg


def test_from_dict_rejects_unknown_keys():
    d = C.to_dict(C.Config())
    d["model"]["nonsense"] = 1
    with pytest.raises(ValueError, match="unknown config keys"):
        C.from_dict(d)


def test_every_experiment_file_loads():
    files = sorted(f for f in (REPO / "experiments").glob("*.py") if not f.name.startswith("_"))
    assert files and [f.stem for f in files] == C.experiment_names()
    for f in files:
        cfg = C.load_experiment(f)
        assert isinstance(cfg, C.Config)
        assert C.load_experiment(f.stem) == cfg          # the packaged name gives the same config


def test_experiment_names_and_variants():
    assert C.load_experiment("sim_rope:dpo").train.stage == "dpo"
    with pytest.raises(FileNotFoundError, match="did you mean 'toy_bimodal'"):
        C.load_experiment("toy_bimdal")
    with pytest.raises(ValueError, match="has no variants"):
        C.load_experiment("toy_bimodal:dpo")
    with pytest.raises(ValueError, match="unknown stage"):
        C.load_experiment("deformpam_rope:reward")


def test_experiment_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        C.load_experiment(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        C.load_experiment(bad)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ValueError, match="broken.py:1: syntax error"):
        C.load_experiment(broken)
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def get_config():\n    return {}\n")
    with pytest.raises(ValueError, match="must return"):
        C.load_experiment(wrong)

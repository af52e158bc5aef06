"""Reward curves: each explicit head is trained at the budget (learning rate, epochs, batch) and
with the initialisation of the DPO recipe it is compared with, and the recipes differ from the
experiment's stages only where their names say."""
import pytest

from pam_jax import config as config_lib
from pam_jax.train.errors import CheckpointError
from pam_jax.workflows import reward_curve as rc


def _cfg(task, recipe):
    stage, _, sets = rc.RECIPES[recipe]
    return config_lib.override(config_lib.load_experiment(f"sim_{task}:{stage}"), list(sets))


@pytest.mark.parametrize("task", ["rope", "granular", "cloth"])
def test_explicit_heads_match_their_dpo_recipe(task):
    for implicit, explicit, init in (("dpo_paper", "reward_paper", "fresh"), ("dpo_strong", "reward_sl_strong", "sl")):
        d, r = _cfg(task, implicit), _cfg(task, explicit)
        assert (r.optim.lr, r.train.epochs, r.data.batch_size, r.optim.grad_clip) == \
               (d.optim.lr, d.train.epochs, d.data.batch_size, d.optim.grad_clip)
        assert r.preference.reward_init == init and r.train.stage == "reward" and d.train.stage == "dpo"
    paper, strong = _cfg(task, "dpo_paper"), _cfg(task, "dpo_strong")
    assert (paper.optim.lr, paper.preference.train_timestep_frac, paper.preference.loss) == (1e-5, 1.0, "deformpam")
    assert (strong.optim.lr, strong.preference.train_timestep_frac, strong.preference.loss) == (1e-4, 0.1, "diffusion_dpo")
    assert paper.train.epochs == 200 and paper.data.batch_size == 28
    assert _cfg(task, "dpo_strong_noann").preference.annotator_pairs is False
    assert paper.preference.annotator_pairs is True


def test_bad_arguments_are_refused(tmp_path, monkeypatch, capsys):
    with pytest.raises(CheckpointError, match="not a trained run"):
        rc.RewardCurve("granular", tmp_path, tmp_path / "root")
    # through the entry point: one line, code 2, nothing written
    assert rc.main(["--task", "granular", "--sl", str(tmp_path / "none"), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reward_curve: error: --sl ") and "\n" not in err and not (tmp_path / "root").exists()
    # a trained SL run's record (the checkpoint's config) is what the curve reads
    cfg = config_lib.to_dict(config_lib.load_experiment("sim_granular"))
    monkeypatch.setattr(rc, "run_meta", lambda path, field: {"config": cfg})
    with pytest.raises(ValueError, match="unknown"):
        rc.RewardCurve("granular", tmp_path, tmp_path / "root", recipes=("dpo_best",))
    with pytest.raises(ValueError, match="positive"):
        rc.RewardCurve("granular", tmp_path, tmp_path / "root", states=(0, 100))
    assert rc.RewardCurve("granular", tmp_path, tmp_path / "root").num_points == 2000   # the data's, twice the model's

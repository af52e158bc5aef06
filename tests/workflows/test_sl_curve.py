"""SL learning curves: bad arguments are refused in one line before anything is written."""
import pathlib

import pytest

from pam_jax.workflows import sl_curve


@pytest.mark.parametrize("args, says", [
    (["--episodes", "0"], "expected positive counts"),
    (["--steps", "-5"], "expected positive counts"),
    # 1001 expert episodes would use start seeds 0..1000, and 1000 is the first tuning start
    (["--episodes", "1001"], "expert and tune sets share 1 seeds"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, args, says):
    root = tmp_path / "root"
    assert sl_curve.main(["--task", "rope", "--root", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sl_curve: error: ") and says in err and "\n" not in err
    assert not root.exists()


def test_a_bad_set_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    assert sl_curve.main(["--task", "rope", "--root", str(root), "--set", "model.num_tokenz=128"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sl_curve: error: ") and "num_tokenz" in err and "\n" not in err
    assert not root.exists()


def test_set_reaches_the_sl_run_and_a_root_keeps_its_values(tmp_path, monkeypatch):
    trained = []

    class Done:
        class state:
            step = 4

    def fake_train(cfg, **kw):
        trained.append(cfg)
        for s in (2, 4):
            (pathlib.Path(cfg.train.run_dir) / "checkpoints" / str(s)).mkdir(parents=True)
        return Done

    monkeypatch.setattr("pam_jax.train.loop.train", fake_train)
    c = sl_curve.Curve("rope", tmp_path / "root", episodes=[3], steps=[2, 4], tune_episodes=1,
                       sets=["model.num_tokens=16"], log=lambda *_: None)
    run = c.sl(3, tmp_path / "data")
    assert trained[0].model.num_tokens == 16 and trained[0].train.steps == 4
    assert c.get("stages/sl_e3.json")["sets"] == ["model.num_tokens=16"]
    assert c.sl(3, tmp_path / "data") == run and len(trained) == 1          # done: not trained again
    other = sl_curve.Curve("rope", tmp_path / "root", episodes=[3], steps=[2, 4], tune_episodes=1, log=lambda *_: None)
    with pytest.raises(ValueError, match=r"made with --set model.num_tokens=16, this call gives \(none\)"):
        other.sl(3, tmp_path / "data")

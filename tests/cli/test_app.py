"""The `pam-jax` command: help for every subcommand, one-line errors, train -> eval."""
import json

import pytest

from pam_jax.cli import app as cli

TINY_EXPERIMENT = '''
from pam_jax.config import *
def get_config():
    return Config(name="cli_tiny",
        model=ModelConfig(num_tokens=16, knn=8, encoder_layers=1, width=48, layers=1, heads=2, mlp_ratio=2),
        diffusion=DiffusionConfig(num_train_timesteps=20, num_inference_steps=4),
        data=DataConfig(num_points=64, batch_size=8),
        train=TrainConfig(steps=4, noise_replicas=2, log_every=2, checkpoint_every=2, num_devices=1))
'''


def _subcommands():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("sub", _subcommands())
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    assert "usage: pam-jax" in capsys.readouterr().out


def test_bad_override_is_one_line(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(TINY_EXPERIMENT)
    assert cli.main(["train", "--experiment", str(exp), "--set", "train.setps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'train.steps'" in err


def test_missing_files_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--experiment", str(tmp_path / "none.py")]) == 2
    assert cli.main(["eval", "--run", str(tmp_path / "none")]) == 2
    assert cli.main(["eval", "--pairs", str(tmp_path), "--sl", str(tmp_path / "none")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(l.startswith("pam-jax: error:") for l in lines)


def test_train_then_eval(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(TINY_EXPERIMENT)
    run = tmp_path / "run"
    assert cli.main(["train", "--experiment", str(exp), "--no-progress", "--set", f"train.run_dir={run}"]) == 0
    assert "done: step 4" in capsys.readouterr().out
    assert cli.main(["eval", "--run", str(run), "--scenes", "2", "--samples", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(r) == {"within", "mode0", "mode1"} and r["mode0"] + r["mode1"] == pytest.approx(1.0)
    assert (run / "samples.png").is_file()


def test_bad_config_values_stop_before_anything_is_written(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(TINY_EXPERIMENT)
    run = tmp_path / "run"
    cases = {"train.steps=-5": "train.steps must be an integer >= 1, got -5",
             "train.keep_checkpoints=0": "train.keep_checkpoints must be an integer >= 1, got 0",
             "train.log_every=0": "train.log_every must be an integer >= 1, got 0",
             "train.checkpoint_every=0": "train.checkpoint_every must be an integer >= 1, got 0",
             "model.width=-1": "model.width must be an integer >= 6, got -1",
             "data.batch_size=0": "data.batch_size must be an integer >= 1, got 0"}
    for item, msg in cases.items():
        assert cli.main(["train", "--experiment", str(exp), "--set", f"train.run_dir={run}", item]) == 2
        assert capsys.readouterr().err.strip() == f"pam-jax: error: {msg}"
    assert not run.exists()
    assert cli.main(["train", "--experiment", f"{exp}:dpo"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"pam-jax: error: {exp}:3: this experiment has no variants")


def test_study_counts_allow_a_tuning_run_without_report_episodes():
    parse = cli.build_parser().parse_args
    cli.check_counts(parse(["study", "--task", "rope", "--report-episodes", "0", "--report-seed", "3000"]))
    with pytest.raises(ValueError, match="--baseline-seeds must be an integer >= 1, got 0"):
        cli.check_counts(parse(["study", "--task", "rope", "--baseline-seeds", "0"]))
    with pytest.raises(ValueError, match="--report-seed must be an integer >= 0"):
        cli.check_counts(parse(["study", "--task", "rope", "--report-seed", "-1"]))

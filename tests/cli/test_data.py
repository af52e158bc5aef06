"""`pam-jax data ...` (through the pam-jax command, pam_jax.cli.main) and the throughput benchmark."""
from __future__ import annotations

import argparse

import pytest

from pam_jax.bench import data as bench
from pam_jax.cli import app as cli
from pam_jax.cli import data as data_cli


def test_fixture_build_inspect(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "tfds"
    assert cli.main(["data", "fixture", "--out", str(src), "--task", "nut", "--kind", "finetune",
                     "--episodes", "4", "--malformed", "missing_npz", "bad_shape"]) == 0
    assert cli.main(["data", "build", "deformpam", "--src", str(src), "--task", "nut", "--kind",
                     "finetune", "--data-dir", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "skipped 2 malformed sample(s)" in text
    assert "nut_finetune_broken_missing_npz: missing point cloud" in text
    assert "train 4 examples / 2 episodes" in text
    png = tmp_path / "look.png"
    assert cli.main(["data", "inspect", "--data-dir", str(out), "--task", "nut", "--kind",
                     "finetune", "--png", str(png), "--num", "2"]) == 0
    text = capsys.readouterr().out
    assert png.is_file() and png.stat().st_size > 10_000
    for word in ("points", "candidate_points", "pair_indices", "rankings", "sweep 4", "norm"):
        assert word in text
    # a dataset folder works too
    assert cli.main(["data", "inspect", "--data-dir", str(out / "deformpam" / "nut_finetune"),
                     "--num", "0"]) == 0


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert cli.main(["data", "build", "deformpam", "--src", str(tmp_path / "nope"), "--task", "rope",
                     "--kind", "supervised", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pam-jax: error: ") and err.count("\n") == 1 and "no such directory" in err
    cli.main(["data", "fixture", "--out", str(tmp_path / "s"), "--episodes", "3"])
    assert cli.main(["data", "build", "deformpam", "--src", str(tmp_path / "s"), "--task", "rope",
                     "--kind", "supervised", "--data-dir", str(tmp_path / "o"), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pam-jax: error: rope_supervised_broken_missing_npz: missing point cloud" in err
    assert cli.main(["data", "inspect", "--data-dir", str(tmp_path / "o"), "--task", "rope"]) == 2
    assert "no built dataset" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["data"], ["data", "build"], ["data", "inspect"], ["data", "fixture"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_add_subparser_sets_func():
    parser = argparse.ArgumentParser(prog="pam-jax")
    data_cli.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", "deformpam", "--src", "x", "--task", "rope",
                              "--kind", "finetune"])
    assert args.func is data_cli.cmd_build and args.data_dir is None and not args.strict
    assert parser.parse_args(["data"]).func(None) == 2          # bare `data` prints help


def test_bench_runs():
    r = bench.run(batch_size=4, num_points=512, num_batches=2, warmup=1, source_points=800,
                  num_samples=8, num_threads=2)
    assert r["samples_per_s"] > 0 and r["points_shape"] == (4, 512, 3) and r["augment"]

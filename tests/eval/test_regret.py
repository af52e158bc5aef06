"""Offline top-1 selection regret: hand-made gains, and the join of held-out records with the
gains recorded in their sample folders."""
import math

import numpy as np
import pytest
import yaml

from pam_jax.data import fixtures
from pam_jax.data.build import build as build_dataset
from pam_jax.eval import regret


def test_top1_hand_computed():
    g = [0.1, 0.5, -0.2, 0.2]                  # best 0.5, mean 0.15
    r, n, hit = regret.top1(g, [0.0, 1.0, 0.0, 0.0])
    assert (r, n, hit) == (0.0, 1.0, True)   # the oracle's choice
    r, n, hit = regret.top1(g, [3.0, 1.0, 0.0, 0.0])
    assert r == pytest.approx(0.4) and n == pytest.approx((0.1 - 0.15) / (0.5 - 0.15)) and not hit
    r, n, _ = regret.top1(g, [0.0, 0.0, 9.0, 0.0])
    assert r == pytest.approx(0.7) and n == pytest.approx(-0.35 / 0.35)
    # a tie goes to the lower index
    assert regret.top1(g, [1.0, 1.0, 1.0, 1.0])[0] == pytest.approx(0.4)
    # a refused candidate (NaN) gains 0: choosing it over a loss is a gain
    r, n, hit = regret.top1([np.nan, -0.3, -0.1], [1.0, 0.0, 0.0])
    assert (r, hit) == (0.0, True) and n == pytest.approx((0 - (-0.4 / 3)) / (0 - (-0.4 / 3)))
    # all candidates gain the same: no normalised gain, zero regret
    r, n, hit = regret.top1([0.2, 0.2], [0.0, 1.0])
    assert r == 0.0 and math.isnan(n) and hit
    with pytest.raises(ValueError, match=r"\(K,\)"):
        regret.top1([0.1, 0.2], [1.0])


def test_random_is_the_expectation_and_summaries():
    g = [0.1, 0.5, -0.2, 0.2]
    r, n, top = regret.random_top1(g)
    assert r == pytest.approx(0.35) and n == 0.0 and top == 0.25
    # the mean of top1 over every choice is the random expectation
    every = [regret.top1(g, np.eye(4)[k]) for k in range(4)]
    assert np.mean([e[0] for e in every]) == pytest.approx(r) and np.mean([e[1] for e in every]) == pytest.approx(0.0)
    s = regret.summarize([(0.0, 1.0, True), (0.4, 0.2, False), (0.2, float("nan"), True)])
    assert s["states"] == 3 and s["flat"] == 1 and s["top1"] == pytest.approx(2 / 3)
    assert s["regret"] == pytest.approx(0.2) and s["norm_gain"] == pytest.approx(0.6)
    # Student-t half-widths: regret sd 0.2 over 3 states (t_0.975, 2 dof = 4.303)
    assert s["regret_ci"] == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
    assert regret.summarize([])["states"] == 0


def _plant_gains(src, *, skip: str):
    """Gain of candidate k := x of its first point (raw frame); one sample records no gains."""
    planted = {}
    for sid in sorted(p.name for p in src.iterdir() if (p / "metadata.yaml").is_file()):
        path = src / sid / "metadata.yaml"
        meta = yaml.safe_load(path.read_text())
        body = next(iter(meta.values()))
        pts = np.array([row[:3] for row in body["pose_virtual"]["prediction"]["begin"]], np.float64)
        gains = pts[0::2, 0]
        if sid != skip:
            body["sim"] = {"gains": [float(x) for x in gains]}
            planted[sid] = (gains, body["episode_idx"])
        path.write_text(yaml.safe_dump(meta))
    return planted


def test_selection_regret_joins_held_out_records_with_their_gains(tmp_path):
    fx = fixtures.write_fixture(tmp_path / "src", task="rope", kind="finetune", num_episodes=10,
                                malformed=(), images=False)
    skip = sorted(fx["samples"])[0]
    planted = _plant_gains(tmp_path / "src", skip=skip)
    rep = build_dataset(fx["root"], task="rope", kind="finetune", data_dir=tmp_path / "tfds", progress=False)
    held = set(rep["episodes"].get("validation", [])) | set(rep["episodes"].get("test", []))
    rows = [g for sid, (g, ep) in planted.items() if ep in held]
    assert rows, "the fixture's split should hold out some episodes"

    def x_of_first_point(pts, cands, key):     # the task frame keeps the order of x
        return cands[:, :, 0, 0]

    res = regret.selection_regret(rep["dataset_dir"], {"x": x_of_first_point,
                                                       "minus_x": lambda p, c, k: -x_of_first_point(p, c, k)})
    held_skipped = int(int(skip.split("_ep")[1][:3]) in held)
    assert res["states"] == len(rows) and res["skipped"] == held_skipped
    s = res["scorers"]
    assert s["x"]["regret"] == pytest.approx(0.0, abs=1e-9) and s["x"]["top1"] == 1.0
    assert s["x"]["norm_gain"] == pytest.approx(1.0)
    assert s["minus_x"]["regret"] == pytest.approx(np.mean([g.max() - g.min() for g in rows]), rel=1e-6)
    assert s["first"]["regret"] == pytest.approx(np.mean([g.max() - g[0] for g in rows]), rel=1e-6)
    assert s["random"]["regret"] == pytest.approx(np.mean([g.max() - g.mean() for g in rows]), rel=1e-6)
    assert res["regret_vs_random"]["x"]["mean"] == pytest.approx(-s["random"]["regret"], rel=1e-6)
    table = regret.format_regret(res)
    assert "| x |" in table and "| random |" in table
    # rows by scorer name, as a record read back from JSON (keys sorted) would give them
    names = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert names == sorted(s) and names != list(s)
    # a folder without gains, or none at all
    with pytest.raises(FileNotFoundError, match="no such sample folder"):
        regret.selection_regret(rep["dataset_dir"], {}, src_dir=tmp_path / "nowhere")

"""The human preference loop end to end, with scripted browser input standing in for a person:

    pam-jax collect --unlabelled (simulated rollouts) and --clouds (recorded clouds)
    -> pam-jax annotate (headless Chromium: clicks and keys)
    -> pam-jax data build deformpam --kind finetune
    -> pam-jax train --experiment sim_rope:dpo (a few steps)

The rows expected in the built records and in the DPO batches are written out by hand from the
published protocol (docs/method.md, "Preference labels": each ranked candidate beats each
unranked comparable one, then the ranked ones among themselves, padded to 2K rows with code 3;
then K rows for the annotator's own action, all padding when none is given).

Needs /usr/bin/chromium and playwright (skipped with the reason otherwise), like
tests/annotate/test_browser.py.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from annotate.test_browser import CHROMIUM, page_on, ranking, serve, sync_playwright, wait_sample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} not found (apt-get install chromium)"),
]

from helpers.policy_runs import policy_run  # noqa: E402

from pam_jax import preference  # noqa: E402
from pam_jax.cli import app as cli  # noqa: E402
from pam_jax.data import layout, pipeline, sources  # noqa: E402

K = 4
PAD = [0, 1, 0, 1]
# the SL run's model and diffusion (tests/helpers/tiny.py), given to the DPO stage on the command line
TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_train_timesteps=20", "diffusion.num_inference_steps=5",
        "diffusion.eta=0.0"]


def row(a, b):
    return [2 * a, 2 * a + 1, 2 * b, 2 * b + 1]


# what the scripted person does on each of the three samples, and the rows it must give
# sample 0 (mouse): #3 then #1 ranked; #2, #4 unranked
ROWS_0 = [row(2, 1), row(2, 3), row(0, 1), row(0, 3), row(2, 0), PAD, PAD, PAD] + [PAD] * K
CODES_0 = [0] * 5 + [3] * 3 + [3] * K
# sample 1 (keyboard): #4 then #2 ranked, #1 not comparable; #3 unranked
ROWS_1 = [row(3, 2), row(1, 2), row(3, 1), PAD, PAD, PAD, PAD, PAD] + [PAD] * K
CODES_1 = [0] * 3 + [3] * 5 + [3] * K
# sample 2: skipped, stays unlabelled and is not built
WINS = {0: {(2, 1), (2, 3), (0, 1), (0, 3), (2, 0)}, 1: {(3, 2), (1, 2), (3, 1)}}


def test_collect_annotate_build_dpo(tmp_path):
    sl = policy_run(tmp_path / "sl", "supervised", 0, "data.task=rope")
    out = tmp_path / "to_rank"

    # 1. the policy's candidates with no labels: two simulated states and one recorded cloud
    assert cli.main(["collect", "--unlabelled", "--task", "rope", "--sl", sl, "--out", str(out), "--states", "2",
                     "--candidates", str(K), "--steps-per-episode", "1", "--max-steps", "2"]) == 0
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    rng = np.random.default_rng(0)
    cloud = np.c_[rng.uniform(-0.15, 0.15, (300, 2)), rng.uniform(0.0, 0.01, 300)]
    cloud[7] = np.nan                                   # a depth sensor's hole: dropped
    np.save(clouds / "cam0_0001.npy", cloud)
    assert cli.main(["collect", "--clouds", str(clouds), "--task", "rope", "--sl", sl, "--out", str(out),
                     "--candidates", str(K)]) == 0
    dirs = layout.find_samples(out)
    ids = [d.name for d in dirs]
    assert len(ids) == 3 and "rope_rollout_cam0_0001" in ids
    for d in dirs:
        assert not (d / layout.ANNOTATION).exists()
        (ns, body), = yaml.safe_load((d / layout.METADATA).read_text()).items()
        assert "annotation" not in body and body["action"]["type"] == "single_pick_and_place"
        assert np.asarray(body["pose_virtual"]["prediction"]["begin"]).shape == (2 * K, 6)
    rec = out / "rope_rollout_cam0_0001"
    stored = layout.load_points(rec / "observations/0/pcd/processed_begin.npz", "cam0")
    np.testing.assert_allclose(stored, np.delete(cloud, 7, axis=0), atol=2e-4)   # float16 storage

    # 2. a person ranks them in the browser
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        try:
            with serve(out, task="rope", annotator="ada") as (_, url), page_on(browser, url) as (page, errors):
                wait_sample(page, ids[0])
                page.click("#candidates button.cand[data-k='2']")
                page.click("#candidates button.cand[data-k='0']")
                assert ranking(page) == ["#3", "#1"]
                page.keyboard.press("Enter")
                wait_sample(page, ids[1])
                for key in ("4", "2", "x", "1"):
                    page.keyboard.press(key)
                assert ranking(page) == ["#4", "#2"]
                page.keyboard.press("Enter")
                wait_sample(page, ids[2])
                assert page.inner_text("#progress-text") == "2/3"
                assert errors == []
        finally:
            browser.close()
    assert not (dirs[2] / layout.ANNOTATION).exists()

    # 3. build: the two ranked samples, with exactly the rows of the clicks
    assert cli.main(["data", "build", "deformpam", "--src", str(out), "--task", "rope", "--kind", "finetune",
                     "--data-dir", str(tmp_path / "tfds"), "--no-progress"]) == 0
    ds = tmp_path / "tfds" / "deformpam" / "rope_finetune" / "1.0.0"
    report = json.loads((ds / "pam_jax_build.json").read_text())
    assert len(report["skipped"]) == 1 and ids[2] in json.dumps(report["skipped"])   # not ranked
    src = sources.open_source(ds, "train")          # too few episodes for a held-out split
    built = {src[i]["sample_id"].decode(): src[i] for i in range(len(src))}
    assert sorted(built) == ids[:2]
    for n, (rows, codes) in enumerate([(ROWS_0, CODES_0), (ROWS_1, CODES_1)]):
        np.testing.assert_array_equal(built[ids[n]]["pair_indices"], rows)
        np.testing.assert_array_equal(built[ids[n]]["rankings"], codes)

    # the DPO batches: each valid pair (code 0 or 1), winner first, is one of the clicked preferences
    data = pipeline.DeformPAMData(ds, batch_size=2, augment=False, num_threads=1)
    b = data.batch(0)
    dpo = preference.dpo_batch(b)
    for r, idx in enumerate(b["record_index"]):
        n = ids.index(src[int(idx)]["sample_id"].decode())
        codes = np.asarray(dpo["rankings"][r])
        valid = (codes == 0) | (codes == 1)
        won = {tuple(int(c) for c in (p if code == 0 else p[::-1]))
               for p, code in zip(np.asarray(dpo["pairs"][r])[valid], codes[valid])}
        assert won == WINS[n]

    # 4. a few DPO steps on them, the SL policy as the reference
    run = tmp_path / "dpo"
    assert cli.main(["train", "--experiment", "sim_rope:dpo", "--no-progress", "--set", *TINY,
                     f"data.data_dir={tmp_path / 'tfds'}", "data.num_points=64", "data.batch_size=2",
                     "train.epochs=2", "train.log_every=1", "train.checkpoint_every=1", "train.num_devices=1",
                     f"train.run_dir={run}", f"preference.init_from={sl}", f"preference.num_candidates={K}"]) == 0
    logs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in logs if "valid_pairs" in x]
    assert steps and all(np.isfinite(x["loss"]) for x in steps)
    assert len(steps) == 2 and {x["valid_pairs"] for x in steps} == {5 + 3}    # both records, each epoch
    assert (run / "checkpoints").is_dir()

"""`pam-jax study` end to end at a tiny size, and its resume: a second call trains nothing."""
import json
import pathlib

import pytest

from pam_jax.cli import app as cli
from pam_jax.eval.report import strict_json
from pam_jax.workflows import study

TINY = ["model.num_tokens=16", "model.knn=8", "model.encoder_layers=1", "model.width=48", "model.layers=1",
        "model.heads=2", "model.mlp_ratio=2", "diffusion.num_inference_steps=3", "data.num_points=128",
        "data.batch_size=4", "train.log_every=1", "train.checkpoint_every=2", "train.num_devices=1",
        "preference.num_candidates=3", "preference.reward_samples=2"]
SIZES = dict(train_seeds=2, expert_episodes=2, sl_steps=2, states=3, steps_per_episode=2, pref_steps=2,
             tune_episodes=1, report_episodes=2, max_steps=1, methods=("sl", "deformpam"),
             estimator_samples=(2,), overrides=tuple(TINY))


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path, monkeypatch):
    lines = []
    real_train, real_episodes = study.train, study.closed_loop.run_episodes
    kept = tmp_path / "kept"                    # the committed copy of the small result files
    root = tmp_path / "run"
    summary = study.run("rope", root=root, progress=False, log=lines.append, results=kept, **SIZES)
    for name in ("expert", "sl_s0", "sl_s1", "preferences", "dpo_s0", "dpo_s1", "offline", "estimators"):
        assert (root / "stages" / f"{name}.json").exists(), name
        assert summary["stage_wall_s"][name] >= 0.0
    rep = summary["closed_loop"]["report"]
    # SL and DeformPAM over both training seeds, on the same start states
    assert rep["methods"]["sl"]["train_seeds"] == 2 and rep["methods"]["deformpam"]["episodes"] == 4
    assert rep["start_seeds"] == [2000, 2001] and not (root / "reward").exists()   # not asked for
    assert summary["closed_loop"]["tune"]["start_seeds"] == [1000]            # disjoint from the report set
    assert rep["vs_sl"]["deformpam"]["interval"] == "hierarchical bootstrap, seeds paired"
    assert set(summary["offline"]["pair_accuracy"]) == {"implicit_s0", "implicit_s1"}
    est = summary["offline"]["estimators"]      # every Monte-Carlo estimator at each M, per seed
    assert set(est) == {"shared_t M=2", "crn M=2", "independent M=2"}
    assert all(len(e["seeds"]) == 2 for e in est.values()) and "Implicit-reward estimators" in (root / "study.md").read_text()
    assert len(list((root / "eval" / "report" / "deformpam" / "s1").glob("*.json"))) == 2
    md = (root / "study.md").read_text()
    assert "DeformPAM" in md and "Wall time per stage" in md and "sl_s1" in md
    assert "pam-jax study --task rope" in md and summary["command"] in md
    data = json.loads((root / "study.json").read_text())
    assert data["settings"]["train_seeds"] == 2 and (root / "report" / "eval.md").exists()
    assert (root / "report" / "vs_sl.png").exists()

    # resume: every stage is skipped, no training, no episode rerun
    def no_training(*a, **k):
        raise AssertionError("a resumed study trained again")
    monkeypatch.setattr(study, "train", no_training)
    monkeypatch.setattr(study.closed_loop, "run_episodes", no_training)
    lines.clear()
    again = study.run("rope", root=root, progress=False, log=lines.append, **SIZES)
    assert sum("skipped" in ln for ln in lines) == 8                          # every stage above
    assert strict_json(again["closed_loop"]["report"]["methods"]) == strict_json(rep["methods"])   # NaN -> null
    # changed settings of a finished stage: a one-line error through the CLI
    assert cli.main(["study", "--task", "rope", "--run-dir", str(root), "--train-seeds", "2",
                     "--expert-episodes", "3", "--no-progress"]) == 2


    # a DPO variant against the same SL (--reuse --dpo-set): only its DPO stages train, only the
    # methods that use the DPO model run episodes; the DPO-independent stages are reused
    trained, ran = [], []
    monkeypatch.setattr(study, "train", lambda cfg, **k: trained.append(cfg) or real_train(cfg, **k))
    monkeypatch.setattr(study.closed_loop, "run_episodes", lambda tasks, agent, seeds, **k:
                        ran.extend([agent.method] * len(seeds)) or real_episodes(tasks, agent, seeds, **k))
    variant = study.run("rope", root=tmp_path / "variant", progress=False, log=lines.append, reuse=root,
                        dpo_overrides=("optim.lr=0.002",), **SIZES)
    assert [c.train.run_dir for c in trained] == [str(tmp_path / "variant" / f"dpo_s{k}") for k in (0, 1)]
    assert all(c.optim.lr == 0.002 and c.train.stage == "dpo" for c in trained)
    assert set(ran) == {"deformpam"} and len(ran) == 2 * 3                # 2 seeds x (2 report + 1 tune)
    assert strict_json(variant["closed_loop"]["report"]["methods"]["sl"]) == strict_json(rep["methods"]["sl"])
    assert "--dpo-set optim.lr=0.002" in variant["command"]
    with pytest.raises(ValueError, match="holds no study"):
        study.reuse_study(tmp_path / "nothing", tmp_path / "x")
    monkeypatch.setattr(study, "train", no_training)
    monkeypatch.setattr(study.closed_loop, "run_episodes", no_training)

    # another machine: only the kept files; --report-only rebuilds the same tables, computing nothing
    assert (kept / "stages" / "dpo_s1.json").exists() and (kept / "study.md").exists()
    assert len(list((kept / "eval" / "report" / "deformpam" / "s1").glob("*.json"))) == 2
    elsewhere = study.run("rope", root=tmp_path / "elsewhere", progress=False, log=lines.append, results=kept,
                          report_only=True, **SIZES)
    assert strict_json(elsewhere["closed_loop"]["report"]["methods"]) == strict_json(rep["methods"])
    # ... and a full run there trains nothing either: every episode and offline record is there,
    # so the checkpoints and datasets that are not are left uncomputed
    lines.clear()
    full = study.run("rope", root=tmp_path / "elsewhere2", progress=False, log=lines.append, results=kept, **SIZES)
    assert strict_json(full["closed_loop"]["report"]["methods"]) == strict_json(rep["methods"])
    assert any("not recomputed" in ln for ln in lines)
    # a (method, seed) group with an episode missing is left out, and named
    (kept / "eval" / "report" / "deformpam" / "s1" / "2001.json").unlink()
    partial = study.run("rope", root=tmp_path / "partial", progress=False, log=lines.append, results=kept,
                        report_only=True, **SIZES)
    assert partial["incomplete"] == ["report/deformpam/s1 (1/2)"]
    assert partial["closed_loop"]["report"]["methods"]["deformpam"]["train_seeds"] == 1
    assert "**Partial**" in (tmp_path / "partial" / "study.md").read_text()
    # ... and a full run there computes only what that episode reads: SL seed 1 and its DPO, and
    # the shared preference data from SL seed 0's rollouts, not DPO seed 0 (whose episodes and
    # offline records are all kept); the episode comes out as the first machine recorded it
    trained, ran = [], []
    monkeypatch.setattr(study, "train", lambda cfg, **k: trained.append(cfg.train.run_dir) or real_train(cfg, **k))
    monkeypatch.setattr(study.closed_loop, "run_episodes", lambda tasks, agent, seeds, **k:
                        ran.append((agent.method, list(seeds))) or real_episodes(tasks, agent, seeds, **k))
    resumed = tmp_path / "resumed"
    study.run("rope", root=resumed, progress=False, log=lines.append, results=kept, **SIZES)
    assert trained == [str(resumed / r) for r in ("sl_s0", "sl_s1", "dpo_s1")]
    assert ran == [("deformpam", [2001])]

    def course(path):
        ep = json.loads(path.read_text())
        return {k: ep[k] for k in ("final", "scores", "metrics", "success", "steps_to_success")}
    rel = pathlib.Path("eval", "report", "deformpam", "s1", "2001.json")
    assert course(resumed / rel) == course(root / rel)
    # a finished stage whose checkpoint is not on this machine is trained again when an episode
    # still needs it
    import shutil

    shutil.rmtree(root / "dpo_s1" / "checkpoints")
    (root / "eval" / "report" / "deformpam" / "s1" / "2001.json").unlink()   # so a model is needed
    trained = []

    def record(cfg, **k):
        trained.append(cfg.train.run_dir)
        raise RuntimeError("stop here")
    monkeypatch.setattr(study, "train", record)
    with pytest.raises(RuntimeError, match="stop here"):
        study.run("rope", root=root, progress=False, log=lines.append, **SIZES)
    assert trained == [str(root / "dpo_s1")]


def test_a_config_field_added_later_at_its_default_keeps_finished_stages():
    from pam_jax.workflows.study import _without_added_defaults

    default = {"name": "x", "train": {"steps": 1000, "compute_dtype": "float32"}}
    old = {"name": "y", "train": {"steps": 5}}                      # recorded before compute_dtype existed
    same = {"name": "y", "train": {"steps": 5, "compute_dtype": "float32"}}
    assert _without_added_defaults(old, same, default) == old
    changed = {"name": "y", "train": {"steps": 5, "compute_dtype": "bfloat16"}}
    assert _without_added_defaults(old, changed, default) != old    # not at its default: other settings
    extra = {"name": "y", "train": {"steps": 5}, "episodes": 3}     # not a config field: never dropped
    assert _without_added_defaults(old, extra, default) != old


def test_reuse_copies_what_does_not_depend_on_the_dpo_stages_or_only_the_supervised_part(tmp_path):
    base = tmp_path / "base"
    files = ["stages/expert.json", "stages/sl_s0.json", "stages/preferences.json", "stages/dpo_s0.json",
             "stages/offline.json", "stages/reward.json", "sl_s0/checkpoints/4/x", "dpo_s0/checkpoints/4/x",
             "reward/checkpoints/4/x", "src/supervised/a/metadata.yaml", "src/finetune/a/metadata.yaml",
             "tfds/deformpam/rope_supervised/1.0.0/x", "tfds/deformpam/rope_finetune/1.0.0/x",
             "eval/report/sl/s0/2000.json", "eval/report/deformpam/s0/2000.json", "eval/tune/dpo/s1/1000.json",
             "eval/report/oracle/s0/2000.json", "report/eval.md", "study.md", "study.json"]
    for f in files:
        (base / f).parent.mkdir(parents=True, exist_ok=True)
        (base / f).write_text(f)

    def copied(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    kept = ["stages/expert.json", "stages/sl_s0.json", "stages/preferences.json", "stages/reward.json",
            "sl_s0/checkpoints/4/x", "reward/checkpoints/4/x", "src/supervised/a/metadata.yaml",
            "src/finetune/a/metadata.yaml", "tfds/deformpam/rope_supervised/1.0.0/x",
            "tfds/deformpam/rope_finetune/1.0.0/x", "eval/report/sl/s0/2000.json", "eval/report/oracle/s0/2000.json"]
    assert study.reuse_study(base, tmp_path / "a", log=lambda *_: None) == len(kept)
    assert copied(tmp_path / "a") == sorted(kept)
    supervised = ["stages/expert.json", "stages/sl_s0.json", "sl_s0/checkpoints/4/x", "src/supervised/a/metadata.yaml",
                  "tfds/deformpam/rope_supervised/1.0.0/x"]
    study.reuse_study(base, tmp_path / "b", log=lambda *_: None, keep="supervised")
    assert copied(tmp_path / "b") == sorted(supervised)
    # other preference data: the SL and oracle episodes still hold, the explicit heads do not
    study.reuse_study(base, tmp_path / "c", log=lambda *_: None, keep="preferences")
    assert copied(tmp_path / "c") == sorted(supervised + ["eval/report/sl/s0/2000.json",
                                                          "eval/report/oracle/s0/2000.json"])
    with pytest.raises(ValueError, match="keep: expected one of"):
        study.reuse_study(base, tmp_path / "d", keep="all")
    with pytest.raises(ValueError, match="this run folder"):
        study.reuse_study(base, base)


def test_reuse_level_follows_what_the_variant_changes(tmp_path):
    base = tmp_path / "base"
    (base / "stages").mkdir(parents=True)
    (base / "stages" / "preferences.json").write_text(json.dumps({"params": {"states": 100, "snap": "mean200"}}))

    def level(**kw):
        return study.reuse_level(base, study.Settings.from_scale("rope", tmp_path / "v", "full", **kw))
    assert level() == "dpo"                                   # a DPO variant: everything else is reused
    assert level(states=300) == "preferences"                 # other preference data: SL and its episodes only
    assert level(per_seed_preferences=True) == "preferences"
    assert level(pref_overrides=("optim.lr=1e-4",)) == "preferences"   # the explicit heads change too
    assert level(snap_pick=False) == "supervised"             # other episodes

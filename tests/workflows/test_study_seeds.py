"""Study start seeds: --report-seed picks the report set's seeds, a tuning run has no report set,
the expert / preference / tuning / report sets are disjoint, and every training seed's offline
regret is measured on that seed's own preference data."""
import json

import pytest

from pam_jax.workflows import study


def _put(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _study(tmp_path, **kw):
    s = study.Settings.from_scale("rope", tmp_path / "run", "small", **kw)
    return study.Study(s, progress=False, log=lambda *_: None)


def test_disjoint_seed_sets_are_checked():
    study.check_disjoint({"expert": range(0, 40), "tune": range(1000, 1030), "report": range(3000, 3030)})
    with pytest.raises(ValueError, match="expert and report sets share 5 seeds") as e:
        study.check_disjoint({"expert": range(0, 40), "report": range(35, 60)})
    assert "\n" not in str(e.value)


def test_report_seed_and_zero_report_episodes(tmp_path):
    st = _study(tmp_path, report_seed=3000, report_episodes=3, tune_episodes=2)
    assert st.start_sets() == {"report": [3000, 3001, 3002], "tune": [1000, 1001]}
    assert "--report-seed 3000" in st.command()
    st = _study(tmp_path, report_episodes=0, tune_episodes=2)
    assert st.start_sets() == {"tune": [1000, 1001]}            # a tuning run touches no report seed
    assert _study(tmp_path, report_episodes=2).start_sets()["report"] == [2000, 2001]   # the default
    with pytest.raises(ValueError, match="report_seed"):
        _study(tmp_path, report_seed=-1)


def test_overlapping_report_seed_is_refused(tmp_path):
    # report seeds 1001.. overlap the tuning set 1000..1001
    st = _study(tmp_path, report_seed=1001, report_episodes=2, tune_episodes=2)
    with pytest.raises(ValueError, match="share"):
        study.check_disjoint(st.seed_sets())


def test_episodes_run_on_exactly_the_report_seeds(tmp_path, monkeypatch):
    ran = []

    class FakeAgent:
        def __init__(self, method, runs, **kw):
            self.method = method

    def fake_episodes(tasks, agent, seeds, *, max_steps=None):
        assert len(tasks) >= len(seeds)                  # one simulator per start state
        ran.extend((agent.method, seed) for seed in seeds)
        return [{"seed": seed, "scores": [0.1, 0.2], "final": 0.2, "success": False, "steps_to_success": None,
                 "metrics": {"iou": 0.2}, "frames": []} for seed in seeds]

    monkeypatch.setattr(study.closed_loop, "Agent", FakeAgent)
    monkeypatch.setattr(study.closed_loop, "run_episodes", fake_episodes)
    monkeypatch.setattr(study, "make_task", lambda name: None)
    st = _study(tmp_path, report_seed=3000, report_episodes=3, tune_episodes=2, train_seeds=1)
    out = st.evaluate(["sl"], [], st.start_sets())
    assert sorted(s for m, s in ran) == [1000, 1001, 3000, 3001, 3002]
    assert out["report"]["start_seeds"] == [3000, 3001, 3002]
    assert sorted(p.stem for p in (tmp_path / "run" / "eval" / "report" / "sl" / "s0").glob("*.json")) == \
        ["3000", "3001", "3002"]


def test_a_seed_without_explicit_heads_is_not_given_their_runs(tmp_path, monkeypatch):
    # the explicit heads are trained for SL seeds 0..baseline_seeds-1 only: a later seed's
    # agents must not name a head run that was never trained (loading it fails)
    given = {}

    class FakeAgent:
        def __init__(self, method, runs, **kw):
            given[(method, runs.sl.rsplit("_s", 1)[1])] = (runs.reward, runs.reward_sl, runs.dpo)

    monkeypatch.setattr(study.closed_loop, "Agent", FakeAgent)
    monkeypatch.setattr(study.closed_loop, "run_episodes", lambda tasks, agent, seeds, *, max_steps=None: [
        {"seed": s, "scores": [0.1], "final": 0.1, "success": False, "steps_to_success": None,
         "metrics": {}, "frames": []} for s in seeds])
    monkeypatch.setattr(study, "make_task", lambda name: None)
    st = _study(tmp_path, train_seeds=3, baseline_seeds=2, report_episodes=1, tune_episodes=1)
    st.evaluate(["sl", "sl_explicit"], ["reward", "reward_sl"], st.start_sets())
    root = tmp_path / "run"
    assert given[("sl", "0")] == (str(root / "reward"), str(root / "reward_sl"), str(root / "dpo_s0"))
    assert given[("sl", "1")] == (str(root / "reward_s1"), str(root / "reward_sl_s1"), str(root / "dpo_s1"))
    assert given[("sl", "2")] == ("", "", str(root / "dpo_s2"))
    assert ("sl_explicit", "2") not in given and ("sl_explicit", "1") in given


def test_offline_regret_of_each_seed_uses_its_own_candidates(tmp_path, monkeypatch):
    calls = []

    class Cfg:
        class data:
            num_points = 16

    monkeypatch.setattr(study.pair_eval, "make_scorer", lambda mode, sl, run, **kw: (f"score {run}", Cfg))
    monkeypatch.setattr(study.pair_eval, "pair_accuracy", lambda sl, run, ds, **kw: {"ds": ds})

    def fake_regret(ds, scorers, num_points=0):
        calls.append((ds, sorted(scorers)))
        return {"states": 1, "scorers": {**{n: {"data": ds} for n in scorers}, "first": {"data": ds}},
                "paired": {}}

    monkeypatch.setattr(study.regret_eval, "selection_regret", fake_regret)
    st = _study(tmp_path, train_seeds=3)
    data = {k: {"dataset_dir": f"/prefs_s{k}"} for k in range(3)}
    out = st.offline([], lambda k: data[k])
    assert sorted(calls) == [("/prefs_s0", ["implicit_s0"]), ("/prefs_s1", ["implicit_s1"]),
                             ("/prefs_s2", ["implicit_s2"])]
    for k in range(3):
        assert out["regret"]["scorers"][f"implicit_s{k}"] == {"data": f"/prefs_s{k}"}
        assert out["pair_accuracy"][f"implicit_s{k}"] == {"ds": f"/prefs_s{k}"}
    # shared preferences: every seed on the one data set, computed once
    calls.clear()
    out = st.offline([], lambda k: data[0])
    assert calls == [("/prefs_s0", ["implicit_s0", "implicit_s1", "implicit_s2"])]


def test_baseline_seeds_name_the_sl_seeds_the_other_methods_run_for(tmp_path):
    st = _study(tmp_path, train_seeds=3, baseline_seeds=2, report_episodes=2, tune_episodes=1)
    ran = {}
    for name, _, m, k, _ in st.groups(["sl", "sl_random", "oracle", "deformpam", "sl_explicit"], st.start_sets()):
        ran.setdefault(m, set()).add(k)
    assert ran == {"sl": {0, 1, 2}, "deformpam": {0, 1, 2}, "sl_random": {0, 1}, "oracle": {0, 1},
                   "sl_explicit": {0, 1}}
    assert [st.explicit_run("reward", k) for k in (0, 1)] == ["reward", "reward_s1"]   # seed 0 keeps its old name
    assert "--baseline-seeds 2" in st.command()
    st = _study(tmp_path, train_seeds=3, baseline_seeds=2, oracle_every_seed=True)
    assert st.method_seeds("oracle") == [0, 1, 2] and st.method_seeds("sl_random") == [0, 1]
    assert "--oracle-every-seed" in st.command()
    assert "--baseline-seeds" not in _study(tmp_path).command()
    with pytest.raises(ValueError, match="baseline_seeds"):
        _study(tmp_path, train_seeds=2, baseline_seeds=3)


def test_evaluation_runs_seed_by_seed_and_a_resume_needs_only_the_unfinished_seeds_runs(tmp_path):
    st = _study(tmp_path, train_seeds=3, baseline_seeds=2, report_episodes=2, tune_episodes=1,
                per_seed_preferences=True)
    methods, explicit, sets = ["sl", "deformpam", "oracle", "sl_explicit"], ["reward"], st.start_sets()
    order = [(k, name, m) for name, _, m, k, _ in st.groups(methods, sets)]
    assert [k for k, _, _ in order] == [0] * 8 + [1] * 8 + [2] * 4     # seed 2: SL and DeformPAM only
    assert order[:4] == [(0, "report", "sl"), (0, "report", "deformpam"), (0, "report", "oracle"),
                         (0, "report", "sl_explicit")]
    # nothing recorded: every stage's output is needed
    every = {"expert", *(f"{r}_s{k}" for r in ("sl", "dpo", "preferences") for k in range(3)), "reward", "reward_s1"}
    assert st.needed_outputs(methods, explicit, sets) == every
    # the offline records and all of seeds 0 and 2's episodes are here: only seed 1's runs, what
    # they are trained from, and the expert data
    for name in ("offline", "estimators"):
        _put(st.root / "stages" / f"{name}.json", {})
    for _, starts, _, k, folder in st.groups(methods, sets):
        for s in starts if k != 1 else starts[:1]:
            _put(folder / f"{s}.json", {"settings": st.episode_settings()})
    assert st.needed_outputs(methods, explicit, sets) == {"expert", "sl_s1", "dpo_s1", "preferences_s1", "reward_s1"}
    # shared preference data come from SL seed 0's rollouts, so seed 0's SL is needed too
    st = _study(tmp_path, train_seeds=3, baseline_seeds=2, report_episodes=2, tune_episodes=1)
    assert st.needed_outputs(methods, explicit, sets) == {"expert", "sl_s0", "sl_s1", "dpo_s1", "preferences",
                                                          "reward_s1"}
    for _, starts, _, k, folder in st.groups(methods, sets):
        _put(folder / f"{starts[-1]}.json", {"settings": st.episode_settings()})
    assert st.needed_outputs(methods, explicit, sets) == set()


def test_outcomes_compare_on_the_seeds_both_ran():
    from pam_jax.eval.summary import method_entry

    def entry(level, seeds, starts=(1, 2, 3)):
        return method_entry([{"train_seed": k, "seed": s, "final": level + 0.01 * k + 0.001 * s, "success": False,
                              "steps_to_success": None} for k in seeds for s in starts])
    methods = {"sl": entry(0.2, [0, 1, 2]), "deformpam": entry(0.3, [0, 1, 2]), "oracle": entry(0.4, [0, 1]),
               "sl_explicit": entry(0.25, [0, 1]), "sl_random": entry(0.2, [0])}
    out = study.outcomes(methods)
    prim = out["primary"]["deformpam - sl"]
    assert prim["mean"] == pytest.approx(0.1) and prim["seeds"] == (3, 3)
    assert out["secondary"]["deformpam - sl_explicit"]["seeds"] == (2, 2)
    assert out["secondary"]["deformpam - sl_explicit"]["mean"] == pytest.approx(0.05)
    assert out["secondary"]["deformpam - sl_random"]["seeds"] == (1, 1)
    eff = out["secondary"]["selection efficiency"]          # seeds 0 and 1: 0.1 / 0.2
    assert eff["estimate"] == pytest.approx(0.5) and eff["seeds"] == 2


def test_preference_overrides_reach_dpo_and_both_explicit_heads_but_not_sl(tmp_path):
    st = _study(tmp_path, pref_overrides=("optim.lr=1e-4",), dpo_overrides=("preference.beta=50",))
    lr = {stage: st.config(stage, stage, seed=0, data_dir=tmp_path).optim.lr
          for stage in ("supervised", "dpo", "reward", "reward_sl")}
    assert lr == {"supervised": 3e-4, "dpo": 1e-4, "reward": 1e-4, "reward_sl": 1e-4}
    assert st.config("reward_sl", "r", seed=0, data_dir=tmp_path).preference.beta == 100.0
    assert st.config("dpo", "d", seed=0, data_dir=tmp_path).preference.beta == 50.0
    assert "--pref-set optim.lr=1e-4" in st.command()

"""The MuJoCo tasks: determinism, observation, primitives, save/restore, invalid actions."""
import numpy as np
import pytest

from pam_jax.sim import make_task
from pam_jax.sim.base import StepInfo
from pam_jax.tasks import sim_task_names

TASK_NAMES = sim_task_names()


@pytest.fixture(scope="module")
def tasks():
    return {name: make_task(name) for name in TASK_NAMES}


def test_registry_and_published_names(tasks):
    assert {n: t.action_type for n, t in tasks.items()} == {
        "rope": "single_pick_and_place", "granular": "sweep", "cloth": "fling"}
    assert {n: t.step_limit for n, t in tasks.items()} == {"rope": 20, "granular": 15, "cloth": 10}
    with pytest.raises(ValueError, match="did you mean 'rope'"):
        make_task("rop")


def test_action_to_poses_layout(tasks):
    a = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    fling = tasks["cloth"].action_to_poses(a)
    assert fling.shape == (4, 6)
    np.testing.assert_array_equal(fling[0], [0.1, 0.2, 0.3, 0, 0, 0])
    np.testing.assert_array_equal(fling[1], [0.4, 0.5, 0.6, 0, 0, 0])
    assert np.isnan(fling[2:]).all()
    for name in ("rope", "granular"):
        p = tasks[name].action_to_poses(a)
        np.testing.assert_array_equal(p[0, :3], a[0])
        np.testing.assert_array_equal(p[2, :3], a[1])
        assert np.isnan(p[[1, 3]]).all()
        np.testing.assert_array_equal(tasks[name].poses_to_action(p), a)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reset_is_deterministic_and_seeds_differ(tasks, name):
    t = tasks[name]
    t.reset(11)
    q1, o1 = t.data.qpos.copy(), t.observe()
    t.reset(12)
    q2 = t.data.qpos.copy()
    t.reset(11)
    np.testing.assert_array_equal(t.data.qpos, q1)
    np.testing.assert_array_equal(t.observe(), o1)
    assert not np.array_equal(q1, q2)
    assert t.steps_taken == 0


@pytest.mark.parametrize("name", TASK_NAMES)
def test_observe_frame_and_noise(tasks, name):
    t = tasks[name]
    t.reset(0)
    o = t.observe()
    assert o.dtype == np.float32 and o.shape == (t.obs_points, 3)
    assert 3000 <= len(o) <= 3500
    assert np.isfinite(o).all()
    assert o[:, 2].min() > -0.01 and o[:, 2].max() < 0.15          # on the table, z up
    assert np.abs(o[:, :2]).max() < 0.5                              # inside the workspace
    o2 = t.observe(rng=np.random.default_rng(1))
    assert not np.array_equal(o, o2)                                 # sensor noise


def test_rope_pick_and_place_moves_the_picked_part(tasks):
    t = tasks["rope"]
    t.reset(1)
    v = t.vertices()
    i = 5
    place = np.array([0.25, -0.2, 0.0])
    info = t.step(np.stack([v[i], place]))
    assert isinstance(info, StepInfo) and info.executed, info.reason
    after = t.vertices()
    assert np.linalg.norm(after[i, :2] - place[:2]) < 0.03
    far = np.abs(np.arange(len(v)) - i) > 15
    assert np.linalg.norm(after[far] - v[far], axis=1).mean() < np.linalg.norm(after[i] - v[i])
    assert np.abs(after[:, 2]).max() < 0.03                          # back on the table


def test_sweep_moves_spheres_along_the_sweep(tasks):
    t = tasks["granular"]
    t.reset(2)
    c0 = t.centres()
    centre = c0.mean(axis=0)
    start, end = centre + [-0.2, 0.0], centre + [0.05, 0.0]
    info = t.step(np.array([[*start, 0.0], [*end, 0.0]]))
    assert info.executed, info.reason
    c1 = t.centres()
    in_path = (np.abs(c0[:, 1] - centre[1]) < 0.03) & (c0[:, 0] > start[0] + 0.02) & (c0[:, 0] < end[0] - 0.05)
    assert in_path.sum() >= 3
    dx = (c1 - c0)[in_path]
    assert (dx[:, 0] > 0.01).mean() > 0.8                            # pushed forward (+x)
    assert np.median(dx[:, 0]) > 3 * np.abs(np.median(dx[:, 1]))
    untouched = np.abs(c0[:, 1] - centre[1]) > 0.15
    if untouched.any():                                      # far from the blade: (mostly) still
        assert np.median(np.linalg.norm(c1[untouched] - c0[untouched], axis=1)) < 0.005


def test_fling_increases_coverage_from_a_folded_start(tasks):
    t = tasks["cloth"]
    gains = []
    for seed in (0, 3):
        t.reset(seed)
        before = t.score()
        info = t.step(t.default_action())                   # the T-shirt's hem corners
        assert info.executed, info.reason
        gains.append(info.score_after - before)
        assert info.score_after > 0.6
    assert min(gains) > 0.05


@pytest.mark.parametrize("name", TASK_NAMES)
def test_save_restore_reproduces_a_step_exactly(tasks, name):
    t = tasks[name]
    t.reset(4)
    a = t.default_action() if name != "granular" else np.array([[-0.15, 0.0, 0.0], [0.1, 0.05, 0.0]])
    s = t.save_state()
    i1 = t.step(a)
    q1, o1, m1 = t.data.qpos.copy(), t.observe(), t.metric()
    t.restore_state(s)
    assert t.steps_taken == 0
    i2 = t.step(a)
    np.testing.assert_array_equal(t.data.qpos, q1)
    np.testing.assert_array_equal(t.observe(), o1)
    assert i1.score_after == i2.score_after and m1 == t.metric()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_score_is_computed_once_per_state_and_never_stale(tasks, name, monkeypatch):
    t = tasks[name]
    calls = []
    fresh = type(t)._score
    monkeypatch.setattr(t, "_score", lambda: calls.append(1) or fresh(t))
    t.reset(6)
    s0 = t.save_state()
    first = t.score()
    assert t.score() == first and t.success() == (first >= t.success_threshold) and len(calls) == 1
    a = t.default_action() if name != "granular" else np.array([[-0.15, 0.0, 0.0], [0.1, 0.05, 0.0]])
    info = t.step(a)                       # before: the cached value; after: a new state, computed once
    assert info.executed and info.score_before == first and len(calls) == 2
    assert info.score_after == fresh(t) and t.score() == info.score_after and len(calls) == 2
    t.restore_state(s0)                    # back to the start: the value of that state, not the last one
    assert t.score() == first == fresh(t)
    t.reset(7)
    assert t.score() == fresh(t)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_invalid_actions_are_refused_with_a_reason(tasks, name):
    t = tasks[name]
    t.reset(5)
    q = t.data.qpos.copy()
    info = t.step(np.array([[np.nan, 0.0, 0.0], [0.1, 0.1, 0.0]]))
    assert not info.executed and "NaN" in info.reason and "\n" not in info.reason
    np.testing.assert_array_equal(t.data.qpos, q)
    assert t.steps_taken == 1 and info.score_after == info.score_before
    with pytest.raises(ValueError, match="shape"):
        t.step(np.zeros((3, 3)))
    if name in ("rope", "cloth"):                            # pick far from the object
        far = t.check_action(np.array([[0.44, 0.44, 0.0], [0.43, 0.40, 0.0]]))
        assert not far.ok and "from the" in far.reason
    else:                                                    # too short a sweep
        short = t.check_action(np.array([[0.0, 0.0, 0.0], [0.005, 0.0, 0.0]]))
        assert not short.ok and "shorter" in short.reason


@pytest.mark.parametrize("name", TASK_NAMES)
def test_out_of_workspace_points_are_clipped(tasks, name):
    t = tasks[name]
    t.reset(6)
    a = t.default_action().copy()
    if name == "granular":
        a = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        a[1, 0] = 0.3
    a[1, 2] = 5.0                                            # far above the workspace
    chk = t.check_action(a)
    assert chk.ok and "clipped" in chk.reason
    assert chk.action[1, 2] <= t.workspace_hi[2]
    if name == "granular":
        long = t.check_action(np.array([[-0.4, -0.4, 0.0], [0.4, 0.4, 0.0]]))
        assert long.ok and np.linalg.norm(long.action[1] - long.action[0]) == pytest.approx(t.max_sweep)


def test_step_limit_and_done(tasks):
    t = tasks["rope"]
    t.reset(7)
    for _ in range(t.step_limit):
        info = t.step(np.full((2, 3), np.nan))
    assert info.done and t.done and info.steps_taken == t.step_limit


def test_use_before_reset_is_a_clear_error():
    t = make_task("rope")
    with pytest.raises(RuntimeError, match="reset"):
        t.observe()

"""Simulator work on threads: the thread map keeps order and limits, a task's replicas are
built the same way, and trying candidates on several threads gives the sequential result bit for
bit (gains, every StepInfo, the task's own state afterwards)."""
import dataclasses
import threading

import numpy as np
import pytest

from pam_jax.sim import annotate, candidate_gains, expert_actions, make_task, parallel


def test_map_ordered_keeps_item_order_and_the_thread_limit():
    running, peak, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(3)

    def f(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if x < 3:
            gate.wait(timeout=10)          # the first three items must be in flight together
        with lock:
            running[0] -= 1
        return x * x

    assert parallel.map_ordered(f, range(10), workers=3) == [x * x for x in range(10)]
    assert peak[0] == 3
    assert parallel.map_ordered(lambda x: x + 1, [5], workers=4) == [6]
    assert parallel.map_ordered(lambda x: x, [], workers=2) == []
    names = parallel.map_ordered(lambda _: threading.current_thread().name, range(4), workers=1)
    assert set(names) == {threading.current_thread().name}       # workers=1: inline


def test_map_ordered_raises_an_items_error_after_all_finished():
    done = []

    def f(x):
        if x == 1:
            raise ValueError("item 1 is bad")
        done.append(x)
        return x

    with pytest.raises(ValueError, match="item 1 is bad"):
        parallel.map_ordered(f, range(4), workers=2)
    assert sorted(done) == [0, 2]       # thread 0 ran 0 and 2; thread 1 stopped at item 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="workers: expected a positive int"):
        parallel.resolve_workers(bad)
    assert parallel.resolve_workers(None) == parallel.available_cores() >= 1


def test_replicas_are_built_the_same_way_and_kept():
    t = make_task("cloth", shape="square", obs_points=500)
    r = t.replicas(3)
    assert r[0] is t and len(r) == 3 and len({id(x) for x in r}) == 3
    assert all(type(x) is type(t) and x.shape == "square" and x.obs_points == 500 for x in r)
    assert t.replicas(2) == r[:2] and t.replicas(3) == r and t.replicas(1) == [t]


def _state_and_actions(name, seed):
    t = make_task(name)
    t.reset(seed)
    t.step(expert_actions(t, np.random.default_rng(0))[0])
    acts = expert_actions(t, np.random.default_rng(1), 4)
    refused = np.full((1, 2, 3), np.nan)
    return t, t.save_state(), np.concatenate([acts[:4], refused])


@pytest.mark.parametrize("name", ["rope", "granular", "cloth"])
def test_candidate_gains_on_threads_equal_the_sequential_ones(name):
    t, state, acts = _state_and_actions(name, 1001)
    q = t.data.qpos.copy()
    g1, i1 = candidate_gains(t, state, acts, workers=1)
    for w in (2, 3):
        gw, iw = candidate_gains(t, state, acts, workers=w)
        np.testing.assert_array_equal(gw, g1)                 # exact, NaN where refused
        for a, b in zip(iw, i1, strict=True):                  # every StepInfo, field by field
            for f in dataclasses.fields(a):
                np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
        np.testing.assert_array_equal(t.data.qpos, q)          # the task is back in its state
        assert t.steps_taken == state.steps_taken
    assert np.isnan(g1[-1]) and np.isfinite(g1[:-1]).all() and len(set(g1[:-1].tolist())) > 1


def test_annotate_labels_do_not_depend_on_the_threads():
    t, state, acts = _state_and_actions("rope", 1002)
    expert = acts[0] + np.array([0.01, 0.0, 0.0])
    a = annotate(t, state, acts, expert, rng=np.random.default_rng(3), label_noise=0.2, workers=1)
    b = annotate(t, state, acts, expert, rng=np.random.default_rng(3), label_noise=0.2, workers=2)
    for k in ("selected_grasp_point_indices", "grasp_point_rankings", "gains", "valid"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["expert_gain"] == b["expert_gain"] and a["ranked"] == b["ranked"]
    # the expert's gain is its own try from the state, as a candidate's would be
    alone, _ = candidate_gains(t, state, expert[None], workers=1)
    assert a["expert_gain"] == float(alone[0])


def test_the_state_an_action_left_continues_as_executing_it_would():
    # the preference rollout moves on by restoring the state the oracle's try of the executed
    # action left, instead of executing it again: the two must be the same, one step later too
    t, state, acts = _state_and_actions("granular", 1004)
    lab = annotate(t, state, acts[:3], acts[3], rng=np.random.default_rng(0), workers=2)
    assert len(lab["after"]) == 4                       # 3 candidates, then the expert's action
    nxt = expert_actions(t, np.random.default_rng(5))[0]
    for k in (1, 3):
        t.restore_state(state)
        t.step(acts[k])
        q_exec, steps = t.data.qpos.copy(), t.steps_taken
        i_exec = t.step(nxt)
        t.restore_state(lab["after"][k])
        np.testing.assert_array_equal(t.data.qpos, q_exec)
        assert t.steps_taken == steps == state.steps_taken + 1
        i_after = t.step(nxt)
        assert (i_after.score_before, i_after.score_after) == (i_exec.score_before, i_exec.score_after)

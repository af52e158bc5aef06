"""Episodes stepped together through one batched selector call equal the same episodes run one
after another, episode by episode: every score, action, candidate set and chosen index."""
import numpy as np
import pytest
from helpers.policy_runs import policy_run

from pam_jax.eval import closed_loop
from pam_jax.sim import make_task

SEEDS = [3, 0, 7]
pytestmark = pytest.mark.bit_identity


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sl = policy_run(root / "sl", "supervised", 0, "data.task=rope")
    dpo = policy_run(root / "dpo", "dpo", 1, "data.task=rope")
    return closed_loop.Runs(sl=sl, dpo=dpo)


def _same(a, b):
    assert a["seed"] == b["seed"]
    assert a["scores"] == b["scores"] and a["final"] == b["final"]          # exact, not close
    assert (a["success"], a["steps_to_success"]) == (b["success"], b["steps_to_success"])
    assert a["metrics"] == b["metrics"]
    assert len(a["frames"]) == len(b["frames"])
    for fa, fb in zip(a["frames"], b["frames"]):
        assert fa["chosen"] == fb["chosen"]
        np.testing.assert_array_equal(fa["candidates"], fb["candidates"])
        np.testing.assert_array_equal(fa["cloud"], fb["cloud"])


@pytest.mark.parametrize("method", ["deformpam", "oracle"])
def test_batched_episodes_equal_sequential_ones(runs, method):
    agent = closed_loop.Agent(method, runs, data_task="rope", num_candidates=3, reward_samples=2)
    task = make_task("rope")
    sequential = [closed_loop.run_episode(task, agent, s, max_steps=2) for s in SEEDS]
    # the simulators step on 3 threads whatever the machine (the oracle tries candidates on them)
    batched = closed_loop.run_episodes([make_task("rope") for _ in SEEDS], agent, SEEDS, max_steps=2, workers=3)
    assert [e["seed"] for e in batched] == SEEDS
    for a, b in zip(sequential, batched):
        _same(a, b)
    # the episodes moved: some chosen action changed a score (a test of identity between two
    # runs that did nothing could not fail)
    assert any(len(set(e["scores"])) > 1 for e in batched)


def test_a_batch_with_finished_episodes_keeps_its_width(runs):
    """Episodes of different lengths: the finished ones leave the batch, the call keeps its
    padded width (one compiled program), and the rest still equal their sequential course."""
    agent = closed_loop.Agent("sl", runs, data_task="rope")
    calls = []
    real = agent.select_rows
    agent.select_rows = lambda pts, keys: calls.append(len(pts)) or real(pts, keys)
    tasks = [make_task("rope") for _ in SEEDS]
    for t in tasks:                       # seed 0's episode ends after 1 step, the others after 2
        t.step_limit = 1 if t is tasks[1] else 2
    batched = closed_loop.run_episodes(tasks, agent, SEEDS)
    assert calls == [3, 3]
    assert [len(e["scores"]) for e in batched] == [3, 2, 3]
    seq_task = make_task("rope")
    for s, e, limit in zip(SEEDS, batched, (2, 1, 2)):
        _same(closed_loop.run_episode(seq_task, agent, s, max_steps=limit), e)
    with pytest.raises(ValueError, match="need as many tasks"):
        closed_loop.run_episodes(tasks[:1], agent, SEEDS)

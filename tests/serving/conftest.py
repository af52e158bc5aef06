"""Shared by the serving tests: tiny policy runs at random weights, their served graph, and one
in-process server on loopback (world-frame clouds up to 4096 points)."""
import pytest
from helpers.policy_runs import policy_run


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("serving_runs")
    return {"sl": policy_run(d / "sl"), "dpo": policy_run(d / "dpo", "dpo", 1), "dir": d}


@pytest.fixture(scope="session")
def served(runs):
    from pam_jax.serving.graph import load_served

    return load_served(runs["sl"], runs["dpo"])


@pytest.fixture(scope="session")
def world_server(served):
    from pam_jax.serving.server import PolicyServer

    srv = PolicyServer(served, port=0, sizes=(1, 4), window_ms=50.0, max_world_points=4096)
    thread = srv.start_in_thread()
    yield srv
    srv.stop()
    thread.join(30)

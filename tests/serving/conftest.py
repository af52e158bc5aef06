"""Shared by the serving tests: tiny policy runs at random weights, their served graph, and one
in-process server on loopback (world-frame clouds up to 4096 points)."""
import pathlib

import numpy as np
import pytest

from _policy_runs import policy_run

NP = 64   # tiny_config's data.num_points
REPO = pathlib.Path(__file__).resolve().parents[2]


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


def scene(count=2000, seed=0, voxel=0.002) -> np.ndarray:
    """A task-frame scene (float64) inside the runs' normalisation range (centre 0, scale 0.5):
    points at voxel centres ((k + 1/2) * voxel, the toy task's voxel size) whose bounding box is
    centred on the origin, so that float rounding in a translated or rotated copy never moves a
    point across a voxel boundary; a uniform lattice has no per-axis 3-sigma outliers."""
    half = np.array([100, 80, 12])
    k = np.random.default_rng(seed).integers(-half, half, (count, 3))
    k[0], k[1] = -half, half - 1
    return (k + 0.5) * voxel


def rotation(ax: float, az: float) -> np.ndarray:
    """R = Rz(az) @ Rx(ax)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx

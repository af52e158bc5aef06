"""packages/pam-jax-client installs into an empty venv without jax and drives a server."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers.scenes import NP, REPO, scene

DRIVE = """
import json, sys
import numpy as np
from pam_jax_client import PolicyClient, ServerError
with PolicyClient("127.0.0.1", int(sys.argv[1])) as c:
    cloud = np.load(sys.argv[2])
    a = c.select_world(cloud, seed=4)
    b = c.select(a["task_candidates"][0][[0, 1] * 32], seed=4)   # a task-frame cloud of num_points
    try:
        c.select_world(np.full((100, 3), np.nan))
        err = None
    except ServerError as e:
        err = str(e)
    try:
        import pam_jax
        pam = True
    except ImportError:
        pam = False
print(json.dumps({"num_points": c.metadata["num_points"], "action": a["action"].tolist(), "index": a["index"],
                  "task_shape": list(b["action"].shape), "error": err, "pam_jax": pam,
                  "heavy": sorted(m for m in ("jax", "jaxlib", "flax") if m in sys.modules)}))
"""


@pytest.mark.slow
def test_the_client_package_installs_without_jax_and_drives_a_server(world_server, tmp_path):
    local = REPO / ".tools" / "uv" / "bin" / "uv"      # where `make install` puts uv when none is on PATH
    uv = shutil.which("uv") or (str(local) if local.exists() else None)
    if not uv:
        pytest.skip("uv is not installed (on PATH or in .tools/uv): cannot make the empty venv")
    venv = tmp_path / "robot"
    py = venv / "bin" / "python"
    try:
        made = subprocess.run([uv, "venv", "-q", str(venv), "-p", sys.executable], capture_output=True, text=True,
                              timeout=120)
        inst = subprocess.run([uv, "pip", "install", "-q", "-p", str(py), str(REPO / "packages" / "pam-jax-client")],
                              capture_output=True, text=True, timeout=300) if made.returncode == 0 else made
    except subprocess.TimeoutExpired:
        pytest.skip("installing the client package timed out (no network or package cache?)")
    if inst.returncode != 0:
        pytest.skip(f"cannot install the client package (no network or package cache?): "
                    f"{(inst.stderr.strip().splitlines() or [''])[-1]}")
    listed = subprocess.run([uv, "pip", "list", "-p", str(py), "--format", "json"], capture_output=True, text=True,
                            timeout=60, check=True)
    names = sorted(p["name"] for p in json.loads(listed.stdout))
    print("pip list in the robot's venv:", names)
    assert names == ["msgpack", "numpy", "pam-jax-client", "websockets"]
    cloud = scene(seed=50)
    np.save(tmp_path / "cloud.npy", cloud)
    r = subprocess.run([str(py), "-c", DRIVE, str(world_server.port), str(tmp_path / "cloud.npy")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["num_points"] == NP and not got["pam_jax"] and got["heavy"] == []
    assert got["task_shape"] == [2, 3] and "0 of 100 points are finite" in got["error"]
    from pam_jax.serving import PolicyClient

    with PolicyClient("127.0.0.1", world_server.port) as c:   # the project's client (the same package) agrees
        own = c.select_world(cloud, seed=4)
    assert np.array_equal(np.asarray(got["action"], np.float32), own["action"]) and got["index"] == own["index"]


def test_pam_jax_serving_re_exports_the_client_package():
    import pam_jax_client

    from pam_jax.serving import PolicyClient, ServerError, protocol

    assert PolicyClient is pam_jax_client.PolicyClient and ServerError is pam_jax_client.ServerError
    assert protocol.pack is pam_jax_client.protocol.pack

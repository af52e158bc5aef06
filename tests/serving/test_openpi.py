"""openpi's own client (`openpi_client` from PyPI, installed apart from this environment with
`--no-deps --target`) drives `pam-jax serve` unchanged, and pam_jax's client keeps working on the
same port."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers.scenes import NP, scene

from pam_jax.serving import PolicyClient, protocol


@pytest.fixture(scope="module")
def openpi_target(tmp_path_factory):
    """openpi-client's files only (its numpy<2 pin is not ours): a --target folder, not a venv."""
    target = tmp_path_factory.mktemp("openpi_client")
    uv = shutil.which("uv")
    cmd = ([uv, "pip", "install", "--no-deps", "--target", str(target), "openpi-client"] if uv else
           [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), "openpi-client"])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot install openpi-client ({e})")
    if r.returncode != 0 or not (target / "openpi_client" / "websocket_client_policy.py").exists():
        why = (r.stderr.strip().splitlines() or [""])[-1]
        pytest.skip(f"cannot install openpi-client (no network or index?): {why}")
    return target


OPENPI = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

policy = WebsocketClientPolicy("127.0.0.1", int(sys.argv[2]))
meta = policy.get_server_metadata()
cloud = np.load(sys.argv[3])
a = policy.infer({"points": cloud, "seed": 7})
b = policy.infer({"points": cloud, "seed": np.int64(7)})   # a numpy scalar: openpi's __npgeneric__
try:
    policy.infer({"points": np.full_like(cloud, np.nan), "seed": 1})
    error = None
except RuntimeError as e:
    error = str(e)
try:
    policy.infer({"points": cloud, "prompt": "fold the cloth"})   # an observation field it does not know
    unknown = None
except RuntimeError as e:
    unknown = str(e)
c = policy.infer({"points": cloud.astype(np.float32), "seed": 7})
np.savez(sys.argv[4], **{f"{n}_{k}": np.asarray(r[k]) for n, r in (("a", a), ("b", b), ("c", c))
                         for k in ("action", "candidates", "scores", "index", "task_action", "task_candidates")})
print(json.dumps({"meta": {k: meta[k] for k in ("type", "protocol", "num_points", "mode", "max_world_points")},
                  "keys": sorted(a), "timing": sorted(a["server_timing"]), "seed": a["seed"], "error": error,
                  "unknown": unknown,
                  "openpi_client": msgpack_numpy.__file__.startswith(sys.argv[1]),
                  "pam_jax": any(m.startswith("pam_jax") for m in sys.modules)}))
"""


def test_openpi_client_drives_the_server(openpi_target, world_server, tmp_path):
    cloud = scene(seed=20).astype(np.float32)
    np.save(tmp_path / "cloud.npy", cloud)
    r = subprocess.run([sys.executable, "-c", OPENPI, str(openpi_target), str(world_server.port),
                        str(tmp_path / "cloud.npy"), str(tmp_path / "out.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["openpi_client"] and not got["pam_jax"]
    assert got["meta"] == {"type": "metadata", "protocol": protocol.VERSION, "num_points": NP, "mode": "implicit",
                           "max_world_points": 4096}
    assert got["keys"] == ["action", "candidates", "index", "scores", "seed", "server_timing", "task_action",
                           "task_candidates"]
    assert got["timing"] == ["infer_ms"] and got["seed"] == 7
    assert got["error"].startswith("Error in inference server:\n") and "0 of 2000 points are finite" in got["error"]
    assert "unknown observation field(s) prompt" in got["unknown"]
    out = np.load(tmp_path / "out.npz")
    for k in ("action", "candidates", "scores", "index"):   # same seed, same answer, before and after the error
        assert np.array_equal(out[f"a_{k}"], out[f"b_{k}"]) and np.array_equal(out[f"a_{k}"], out[f"c_{k}"]), k
    assert out["a_action"].shape == (2, 3) and out["a_candidates"].shape == (4, 2, 3)
    # the openpi reply is pam_jax's select_world reply
    with PolicyClient("127.0.0.1", world_server.port) as c:
        own = c.select_world(cloud, seed=7)
    for k in ("action", "candidates", "scores", "task_action"):
        assert np.array_equal(out[f"a_{k}"], own[k]), k
    assert int(out["a_index"]) == own["index"]


def test_openpi_encoding_round_trips_through_the_protocol():
    """openpi's bytes-keyed arrays and numpy scalars decode; the reply dialect's arrays too."""
    import msgpack

    arr = np.arange(6, dtype="<f4").reshape(2, 3)
    wire = msgpack.packb({"points": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": [2, 3]},
                          "seed": {b"__npgeneric__": True, b"data": 9, b"dtype": "<i8"}}, use_bin_type=True)
    req = protocol.parse_request(protocol.decode(wire), num_points=2, max_points=10)
    assert req.dialect == "openpi" and req.world and req.seed == 9 and np.array_equal(req.points, arr)
    back = msgpack.unpackb(protocol.pack_openpi({"a": arr}), raw=False)["a"]
    assert back[b"__ndarray__"] is True and back[b"dtype"] == "<f4" and back[b"shape"] == [2, 3]
    assert np.array_equal(np.frombuffer(back[b"data"], "<f4").reshape(2, 3), arr)
    with pytest.raises(protocol.ProtocolError, match="unknown observation field"):
        protocol.parse_request({"points": arr, "prompt": "fold"}, num_points=2, max_points=10)
    bad = {b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "<f4", b"shape": [2, 3]}
    with pytest.raises(protocol.ProtocolError, match="does not match"):
        protocol.decode(msgpack.packb({"points": bad}, use_bin_type=True))

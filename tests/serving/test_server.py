"""The policy server on loopback: metadata and /healthz, determinism, batch independence under
concurrent clients, error replies that leave the server serving, SIGTERM, and an exported graph
that runs without flax and answers exactly as the in-process selector."""
import json
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
import zipfile

import msgpack
import numpy as np
import pytest
from helpers.policy_runs import NORM
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pam_jax import pointcloud as pc
from pam_jax.cli import app as cli
from pam_jax.serving import PolicyClient, ServerError, protocol
from pam_jax.serving.server import HARD_LIMIT_FACTOR, PolicyServer, batch_sizes, request_limit
from pam_jax.tasks import get_task

NP = 64   # tiny_config's data.num_points
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(served):
    srv = PolicyServer(served, port=0, sizes=(1, 8), window_ms=50.0, max_world_points=4096)
    thread = srv.start_in_thread()
    yield srv
    srv.stop()
    thread.join(30)


def clouds(count, seed=0):
    """Clouds inside the runs' normalisation range (centre 0, scale 0.5)."""
    return np.random.default_rng(seed).uniform(-0.4, 0.4, (count, NP, 3)).astype(np.float32)


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in ("action", "candidates", "scores", "index"))


def test_batch_sizes():
    assert batch_sizes(1) == (1,) and batch_sizes(8) == (1, 2, 4, 8) and batch_sizes(6) == (1, 2, 4, 6)
    with pytest.raises(ValueError, match="--max-batch must be an integer >= 1"):
        batch_sizes(0)


def test_importing_the_client_loads_no_jax():
    code = ("import sys, pam_jax.serving; from pam_jax.serving import PolicyClient, ServerError, load_exported; "
            "print(sorted(m for m in ('jax', 'flax', 'jaxlib', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_protocol_arrays_round_trip_and_refusals():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[1, -2]], np.int64), np.zeros(0, np.uint8),
              np.array([True, False]), np.float64(2.5)]
    back = protocol.unpack(protocol.pack({"type": "x", "a": arrays}))["a"]
    for x, y in zip(arrays[:4], back):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    assert back[4] == 2.5
    with pytest.raises(TypeError, match="numbers only"):
        protocol.pack({"type": "x", "a": np.array(["a"], object)})
    bad = {"__ndarray__": True, "dtype": "<f4", "shape": [2, 3], "data": b"\0" * 20}
    with pytest.raises(protocol.ProtocolError, match="does not match"):
        protocol.unpack(msgpack.packb({"type": "x", "a": bad}))
    with pytest.raises(protocol.ProtocolError, match="message too large: 11 bytes"):
        protocol.unpack(b"x" * 11, max_bytes=10)
    assert protocol.check_seed(2**32 - 1) == 2**32 - 1
    for seed in (-1, 2**32, True, 1.5, "3"):
        with pytest.raises(protocol.ProtocolError, match="seed"):
            protocol.check_seed(seed)


def test_healthz_and_metadata(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ok\n"
    with PolicyClient("127.0.0.1", server.port) as c:
        m = c.metadata
    assert m["num_points"] == NP and m["mode"] == "implicit" and m["task"] == "toy" and m["batching"] == "exact"
    assert m["selection"]["num_candidates"] == 4 and m["selection"]["reward_samples"] == 4
    assert m["norm"] == NORM.to_dict() and m["batch_sizes"] == [1, 8]
    assert m["model"]["width"] == 48 and m["diffusion"]["num_inference_steps"] == 5
    assert set(m["versions"]) >= {"pam_jax", "jax", "flax"} and m["runs"]["sl"]["step"] == 6
    toy = get_task("toy")
    assert m["preprocess"] == {"xy_scale": toy.xy_scale, "voxel_size": toy.voxel_size}


def test_the_robot_recipe_world_frame_cloud_to_world_frame_action(server):
    """README's recipe: preprocess a world-frame cloud with numpy only, select, map the action back."""
    world = np.random.default_rng(3).uniform([0.9, -0.2, 0.7], [1.1, 0.2, 0.75], (4000, 3))
    with PolicyClient("127.0.0.1", server.port) as policy:
        m = policy.metadata
        cloud, _, frame = pc.preprocess(world, (), **m["preprocess"])
        out = policy.select(pc.subsample(cloud, m["num_points"], np.random.default_rng(0)), seed=0)
    action = frame.invert(out["action"])
    np.testing.assert_allclose(pc.preprocess(world, (action,), **m["preprocess"])[1][0], out["action"], atol=1e-5)


def test_same_request_twice_is_identical_and_equals_in_process(server, served):
    pts = clouds(1)[0]
    with PolicyClient("127.0.0.1", server.port) as c:
        a, b = c.select(pts, seed=7), c.select(pts, seed=7)
        other = c.select(pts, seed=8)
        drawn = c.select(pts)
    assert same(a, b) and not same(a, other)
    assert same(a, served.select(pts, 7))
    assert a["action"].shape == (2, 3) and a["candidates"].shape == (4, 2, 3) and a["scores"].shape == (4,)
    assert a["index"] == int(np.argmax(a["scores"])) and np.array_equal(a["action"], a["candidates"][a["index"]])
    assert a["seed"] == 7 and a["server_ms"] > 0
    assert 0 <= drawn["seed"] < 2**32   # no seed: the server draws one and says which
    assert same(drawn, served.select(pts, drawn["seed"]))


@pytest.mark.bit_identity
def test_concurrent_clients_get_exactly_what_they_get_alone(server, served):
    pts = clouds(8, seed=1)
    alone = [served.select(pts[i], 100 + i) for i in range(8)]   # one at a time: batch size 1
    got, start = [None] * 8, threading.Barrier(8)
    batches = server.batcher.batches

    def client(i):
        with PolicyClient("127.0.0.1", server.port) as c:
            start.wait()
            got[i] = c.select(pts[i], seed=100 + i)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(8):
        assert same(got[i], alone[i]), f"client {i}"
    print(f"8 concurrent requests answered in {server.batcher.batches - batches} batch(es)")


def _raw(port, payload):
    """Send one raw frame on a fresh connection -> the decoded reply."""
    with connect(f"ws://127.0.0.1:{port}", proxy=None, compression=None) as ws:
        assert protocol.unpack(ws.recv(timeout=30))["type"] == "metadata"
        ws.send(payload)
        return protocol.unpack(ws.recv(timeout=60))


def _select(points, **extra):
    return protocol.pack({"type": "select", "points": points, **extra})


def test_malformed_requests_get_error_replies_and_a_later_request_succeeds(server, served):
    good = clouds(1, seed=2)[0]
    limit = server.limit
    assert limit == request_limit(4096)
    cases = [
        ("hello", "expected a binary msgpack message, got text"),
        (b"\xc1", "malformed msgpack message"),
        (protocol.pack([1, 2]), "expected a map with a 'type'"),
        (protocol.pack({"type": "jump"}), "unknown message type 'jump'"),
        (protocol.pack({"type": "select"}), "points: expected an array, got NoneType"),
        (_select(good[:10]), f"points: expected one cloud of shape ({NP}, 3), got (10, 3)"),
        (_select(good[None]), "send one cloud per request"),
        (_select(good.astype(bool)), "points: expected numbers, got booleans"),
        (_select(np.where(np.arange(NP)[:, None] == 3, np.nan, good)), "points: 3 non-finite values"),
        (_select(good * 1000.0), "normalisation scales from the training data's centre"),
        (_select(good, seed=-1), "seed: expected an integer in [0, 2**32)"),
        (_select(good, seed=True), "seed: expected an integer"),
        (_select(good, seed="3"), "seed: expected an integer"),
        (_select(good, extra=1), "unknown field(s) extra"),
        (msgpack.packb({"type": "select", "points": {"__ndarray__": True, "dtype": "|O", "shape": [NP, 3],
                                                     "data": b""}}), "are not accepted (numbers only)"),
        (_select(good.astype(np.float64), junk=b"x" * limit), "message too large"),
    ]
    for payload, want in cases:
        reply = _raw(server.port, payload)
        assert reply["type"] == "error" and want in reply["message"], (want, reply)
        assert "\n" not in reply["message"]
    with PolicyClient("127.0.0.1", server.port) as c:   # errors on the same connection, then a good request
        with pytest.raises(ServerError, match="non-finite"):
            c.select(np.full((NP, 3), np.nan, np.float32))
        with pytest.raises(ServerError, match=r"expected one cloud of shape \(64, 3\)"):
            c.select(good[:5])
        assert same(c.select(good, seed=3), served.select(good, 3))


def test_a_frame_beyond_the_hard_limit_closes_only_its_connection(server):
    with connect(f"ws://127.0.0.1:{server.port}", proxy=None, compression=None) as ws:
        ws.recv(timeout=30)
        ws.send(b"x" * (HARD_LIMIT_FACTOR * server.limit + 1))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd.code == 1009   # message too big
    with PolicyClient("127.0.0.1", server.port) as c:
        assert c.select(clouds(1)[0], seed=1)["candidates"].shape == (4, 2, 3)


def _error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pam-jax: error: "), lines
    return lines[0][len("pam-jax: error: "):]


def test_cli_refusals(runs, capsys):
    sl, dpo = runs["sl"], runs["dpo"]
    assert "--mode implicit needs --dpo RUN" in _error(capsys, ["serve", "--sl", sl])
    assert "--mode explicit needs --reward RUN" in _error(capsys, ["serve", "--sl", sl, "--dpo", dpo,
                                                                   "--mode", "explicit"])
    assert _error(capsys, ["serve", "--sl", sl, "--mode", "first", "--max-batch", "0"]) == \
        "--max-batch must be an integer >= 1, got 0"
    assert "--sl " + dpo + " is a 'dpo' run" in _error(capsys, ["serve", "--sl", dpo, "--dpo", dpo])
    assert _error(capsys, ["serve", "--sl", sl, "--dpo", dpo, "--port", "65536"]) == \
        "--port must be in [0, 65535], got 65536"
    assert "expected a comma-separated list of cpu" in _error(
        capsys, ["export", "--sl", sl, "--dpo", dpo, "--out", str(runs["dir"] / "x"), "--platforms", "cpu,mps"])


def test_a_busy_port_fails_at_once_with_one_line(runs, server, capsys):
    msg = _error(capsys, ["serve", "--sl", runs["sl"], "--mode", "first", "--port", str(server.port)])
    assert msg.startswith(f"cannot listen on 127.0.0.1:{server.port}: ") and "in use" in msg


def _reader(proc) -> queue.Queue:
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in proc.stdout], daemon=True).start()
    return q


@pytest.mark.slow
def test_serve_command_answers_and_stops_on_sigterm(runs):
    proc = subprocess.Popen([sys.executable, "-m", "pam_jax.cli", "serve", "--sl", runs["sl"], "--mode", "first",
                             "--port", "0", "--max-batch", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        lines = _reader(proc)
        line = ""
        while "serving" not in line:
            line = lines.get(timeout=180)
        assert "on ws://127.0.0.1:" in line
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        with PolicyClient("127.0.0.1", port) as c:
            out = c.select(clouds(1)[0], seed=0)
        assert out["index"] == 0 and c.metadata["mode"] == "first"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert lines.get(timeout=10).strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


NO_FLAX = """
import builtins, json, sys
import numpy as np
real_import = builtins.__import__
def guarded(name, *a, **k):   # flax, the models and the training code must not load
    if name.split(".")[0] in ("flax", "optax", "orbax") or name.startswith(("pam_jax.train", "pam_jax.models",
                                                                          "pam_jax.select")):
        raise ImportError("blocked: " + name)
    return real_import(name, *a, **k)
builtins.__import__ = guarded
from pam_jax.serving import load_exported
policy = load_exported(sys.argv[1])
data = np.load(sys.argv[2])
outs = [policy(p, seed=int(s)) for p, s in zip(data["points"], data["seeds"])]
keys = ("action", "candidates", "scores", "index")
np.savez(sys.argv[3], **{k: np.stack([np.asarray(o[k]) for o in outs]) for k in keys})
print(json.dumps(sorted(m for m in ("flax", "optax", "orbax") if m in sys.modules)))
"""


@pytest.mark.bit_identity
@pytest.mark.slow
def test_export_round_trip_without_flax_equals_in_process_selection(runs, served, tmp_path, capsys):
    out = tmp_path / "policy.pamx"
    assert cli.main(["export", "--sl", runs["sl"], "--dpo", runs["dpo"], "--out", str(out), "--batch", "2",
                     "--platforms", "cpu,cuda"]) == 0
    assert "exported implicit selection for cpu, cuda, batch 2" in capsys.readouterr().out
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["exported.bin", "metadata.json", "params.msgpack"]
        meta = json.loads(z.read("metadata.json"))
    assert meta["batch"] == 2 and meta["platforms"] == ["cpu", "cuda"] and meta["num_points"] == NP
    pts, seeds = clouds(3, seed=5), np.array([0, 9, 2**32 - 1], np.uint32)   # 3 clouds: a padded second call
    np.savez(tmp_path / "in.npz", points=pts, seeds=seeds)
    run = subprocess.run([sys.executable, "-c", NO_FLAX, str(out), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    got = np.load(tmp_path / "out.npz")
    for i in range(3):
        want = served.select(pts[i], int(seeds[i]))
        assert same({k: got[k][i] for k in got.files}, want), f"cloud {i}"


def test_info_reports_the_backend(capsys):
    import flax
    import jax

    assert cli.main(["info", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == jax.default_backend() and len(r["devices"]) == r["device_count"] == jax.device_count()
    assert r["jax"] == jax.__version__ and r["flax"] == flax.__version__ and "compile_cache" in r


def test_bench_serve_counts_every_request(served):
    from pam_jax.bench.serve import bench_serve, format_serve

    r = bench_serve(served, clients=2, requests=6, max_batch=1)   # batch size 1: compiled by the fixtures
    assert r["in_process"]["requests"] == r["server"]["requests"] == 6 and r["in_process_batched"]["requests"] == 6
    assert r["server"]["mean_batch"] == 1.0 and r["batch_sizes"] == [1]
    for row in ("in_process", "server"):
        assert 0 < r[row]["p50_ms"] <= r[row]["p99_ms"] and r[row]["requests_per_s"] > 0
    assert "server, 2 clients" in format_serve(r)

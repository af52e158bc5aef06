"""World frame in, world frame out: the server frames a raw world-frame cloud as the training
data was prepared, applies the calibration, drops non-finite points, and maps the actions back."""
import threading

import numpy as np
import pytest
from helpers.scenes import NP, rotation, scene

from pam_jax import pointcloud as pc
from pam_jax.serving import PolicyClient, ServerError

TOL = 1e-4   # float32 rounding of the framed cloud, carried through the sampler


def test_translated_scene_with_its_calibration_gives_the_translated_action(world_server):
    s, shift = scene(), np.array([1.25, -2.5, 0.75])
    cal = np.eye(4)
    cal[:3, 3] = -shift                                 # world -> task: p = w - shift
    with PolicyClient("127.0.0.1", world_server.port) as c:
        a = c.select_world(s, seed=11)
        b = c.select_world(s + shift, seed=11, calibration=cal)
    assert a["action"].shape == (2, 3) and a["candidates"].shape == (4, 2, 3) and a["task_action"].shape == (2, 3)
    assert a["index"] == b["index"] and a["seed"] == 11
    np.testing.assert_allclose(b["task_candidates"], a["task_candidates"], atol=TOL)
    np.testing.assert_allclose(b["action"], a["action"] + shift, atol=TOL)
    np.testing.assert_allclose(b["candidates"], a["candidates"] + shift, atol=TOL)
    # the toy task's clouds are used as they are (no centring): identity calibration, task frame == world frame
    np.testing.assert_allclose(a["action"], a["task_action"], atol=1e-6)


def test_the_server_takes_its_calibration_from_its_config(served):
    from pam_jax.serving.server import PolicyServer

    s, shift = scene(seed=5), np.array([0.5, 0.25, -1.0])
    cal = np.eye(4)
    cal[:3, 3] = -shift
    srv = PolicyServer(served, port=0, sizes=(1,), calibration=cal, max_world_points=4096)
    thread = srv.start_in_thread()
    try:
        with PolicyClient("127.0.0.1", srv.port) as c:
            assert c.metadata["calibration"] == cal.tolist()
            a = c.select_world(s + shift, seed=2)                      # the server's calibration
            b = c.select_world(s, seed=2, calibration=np.eye(4))       # a request's own wins
    finally:
        srv.stop()
        thread.join(30)
    np.testing.assert_allclose(a["task_candidates"], b["task_candidates"], atol=TOL)
    np.testing.assert_allclose(a["action"], b["action"] + shift, atol=TOL)


def test_rotated_scene_with_its_calibration_maps_back(world_server):
    s = scene(seed=1)
    r, t = rotation(0.3, 2.0), np.array([0.4, -0.1, 0.9])
    cal = np.eye(4)
    cal[:3, :3], cal[:3, 3] = r, t                      # world -> task: p = R w + t
    world = (s - t) @ r                                 # w = R^T (p - t), rows
    with PolicyClient("127.0.0.1", world_server.port) as c:
        a = c.select_world(s, seed=3)
        b = c.select_world(world, seed=3, calibration=cal)
    assert a["index"] == b["index"]
    np.testing.assert_allclose(b["task_action"], a["task_action"], atol=TOL)
    want = (a["action"] - t) @ r                        # the task-frame action mapped back to the world
    np.testing.assert_allclose(b["action"], want, atol=TOL)
    np.testing.assert_allclose(b["candidates"], (a["candidates"] - t) @ r, atol=TOL)
    # the same rotation with no calibration is another cloud: another task-frame input
    with PolicyClient("127.0.0.1", world_server.port) as c:
        assert not np.allclose(c.select_world(world, seed=3)["task_candidates"], a["task_candidates"], atol=1e-3)


def test_nan_points_are_dropped_and_an_all_nan_cloud_is_refused(world_server):
    s = scene(seed=2)
    holed = s.copy()
    rows = np.random.default_rng(0).choice(len(s), len(s) // 5, replace=False)   # 20% of the points
    holed[rows, np.arange(len(rows)) % 3] = np.nan
    holed[rows[:10], 0] = np.inf
    with PolicyClient("127.0.0.1", world_server.port) as c:
        got = c.select_world(holed, seed=5)
        want = c.select_world(np.delete(s, rows, axis=0), seed=5)   # dropping them is not sending them
        for k in ("action", "candidates", "scores", "task_action"):
            assert np.array_equal(got[k], want[k]), k
        with pytest.raises(ServerError, match=f"0 of 2000 points are finite .* {NP}"):
            c.select_world(np.full((2000, 3), np.nan), seed=5)
        few = s[: NP + 5].copy()
        few[:6] = np.nan
        with pytest.raises(ServerError, match=f"{NP - 1} of {NP + 5} points are finite"):
            c.select_world(few, seed=5)
        assert c.select_world(s, seed=5)["action"].shape == (2, 3)   # the connection keeps serving


def test_world_requests_refused_with_one_line(world_server):
    s = scene(seed=3)
    shear = np.eye(4)
    shear[0, 1] = 0.5
    cases = [
        ((np.zeros((4097, 3)),), {}, "4097 points, more than this server's limit of 4096"),
        ((s[:, :2],), {}, "expected one cloud of shape (N, 3), got (2000, 2)"),
        ((s[None],), {}, "send one cloud per request"),
        ((s,), {"calibration": shear}, "is not a rotation"),
        ((s,), {"calibration": np.eye(3)}, "calibration: expected a (4, 4) world-to-task matrix, got (3, 3)"),
    ]
    with PolicyClient("127.0.0.1", world_server.port) as c:
        for args, kw, want in cases:
            with pytest.raises(ServerError) as e:
                c.select_world(*args, seed=0, **kw)
            assert want in str(e.value) and "\n" not in str(e.value), (want, str(e.value))


def test_a_bad_cloud_never_fails_the_requests_batched_with_it(world_server):
    clouds = [scene(seed=10 + i) for i in range(4)]
    with PolicyClient("127.0.0.1", world_server.port) as c:
        alone = [c.select_world(x, seed=i) for i, x in enumerate(clouds)]
    got, start = {}, threading.Barrier(5)

    def client(i):
        with PolicyClient("127.0.0.1", world_server.port) as c:
            start.wait()
            try:
                got[i] = c.select_world(clouds[i] if i < 4 else np.full((500, 3), np.nan), seed=i)
            except ServerError as e:
                got[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert isinstance(got[4], ServerError) and "finite" in str(got[4])
    for i in range(4):
        np.testing.assert_allclose(got[i]["action"], alone[i]["action"], atol=TOL)
        assert got[i]["index"] == alone[i]["index"]


def test_framing_helpers():
    s = scene(seed=4)
    r, t = rotation(-0.7, 0.4), np.array([0.1, 0.2, -0.3])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    cal = pc.Rigid(m)
    np.testing.assert_allclose(cal.invert(cal.apply(s)), s, atol=1e-12)
    np.testing.assert_allclose(cal.apply(np.zeros(3)), t)
    pts, framing = pc.frame_world_cloud(cal.invert(s), num_points=NP, rng=np.random.default_rng(0), calibration=m,
                                        voxel_size=0.002)
    assert pts.shape == (NP, 3) and pts.dtype == np.float32
    # every framed point is a scene point (the bbox is centred on the origin): the framing undid the calibration
    d = np.abs(pts[:, None, :] - s[None]).max(-1).min(-1)
    assert d.max() < 1e-6
    np.testing.assert_allclose(framing.to_world(pts), cal.invert(pts), atol=1e-6)
    # with the preprocessing (centring, xy scale, voxels), a translated cloud needs no calibration
    kw = dict(num_points=NP, preprocess=True, xy_scale=1.75, voxel_size=0.002 * 1.75, n_sigma=3.0)
    p0, f0 = pc.frame_world_cloud(s, rng=np.random.default_rng(1), **kw)
    p1, f1 = pc.frame_world_cloud(s + [3.0, -4.0, 0.5], rng=np.random.default_rng(1), **kw)
    np.testing.assert_allclose(p1, p0, atol=1e-5)
    np.testing.assert_allclose(f1.to_world(p1), f0.to_world(p0) + [3.0, -4.0, 0.5], atol=1e-5)
    sx = np.unique(s[:, 0]) * 1.75   # x scaled by 1.75 about the bbox centre (the origin)
    assert np.abs(p0[:, 0][:, None] - sx[None]).min(1).max() < 1e-6
    with pytest.raises(ValueError, match="last row must be"):
        pc.Rigid(np.ones((4, 4)))
    with pytest.raises(ValueError, match="not a rotation"):
        pc.Rigid(np.diag([1.0, 1.0, -1.0, 1.0]))   # a reflection


def test_voxel_downsample_keeps_one_centroid_per_cell_in_lexicographic_order():
    """The framing's voxel step against its definition: row-wise unique cells, per-cell means."""
    rng = np.random.default_rng(7)
    for n, v in [(2000, 0.01), (20000, 0.0035), (300, 0.5), (500, 1e-7)]:
        p = rng.normal(0, 0.3, (n, 3)).astype(np.float32)
        p[: n // 10] = p[n // 10: 2 * (n // 10)]   # shared cells
        p64 = p.astype(np.float64)
        cells = np.floor(p64 / v).astype(np.int64)
        uniq, inv, cnt = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
        want = np.stack([np.bincount(inv.reshape(-1), weights=p64[:, d]) for d in range(3)], 1) / cnt[:, None]
        got = pc.voxel_downsample(p, v)
        assert got.shape == (len(uniq), 3)
        assert np.array_equal(got, want.astype(np.float32)), (n, v)

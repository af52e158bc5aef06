"""`pam-jax annotate` at the server level (Starlette TestClient): what a submission writes, what
is refused, atomic writes, compare-and-swap, resume, and the round trip through the builder.

Expected rows and pairs are written out by hand from docs/method.md ("Preference labels"): ranked
candidates beat the comparable unranked ones, then the ranked ones among themselves (code 2
when marked equal), then equal unranked pairs; 2K ranking rows padded with [0, 1, 0, 1] / 3;
then K rows comparing the annotator's own action (points 2K, 2K+1) with each candidate.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import os
import pathlib
import threading

import numpy as np
import pytest
import yaml

pytest.importorskip("starlette")
pytest.importorskip("httpx2" if importlib.util.find_spec("httpx2") else "httpx")
pytest.importorskip("plotly")
from starlette.testclient import TestClient  # noqa: E402

from pam_jax import annotate  # noqa: E402
from pam_jax.annotate import server as server_lib  # noqa: E402
from pam_jax.annotate import store as store_lib  # noqa: E402
from pam_jax.data import fixtures, layout  # noqa: E402

K = 8
PAD = [0, 1, 0, 1]
NS = "experiment_real"


def candidates(i: int) -> np.ndarray:
    """(2K, 3): candidate k picks at x = 0.3 + 0.02 k and places 5 cm further in +y."""
    out = []
    for k in range(K):
        pick = [0.3 + 0.02 * k, 0.01 * i, 0.004]
        out += [pick, [pick[0], pick[1] + 0.05, 0.0]]
    return np.asarray(out)


def write_rollouts(root: pathlib.Path, n: int = 4, *, task: str = "rope") -> list[str]:
    """n samples waiting for annotation (candidates, no annotation), one episode each."""
    rng = np.random.default_rng(0)
    primitive = {"rope": "single_pick_and_place", "tshirt_short": "fling"}[task]
    ids = []
    for i in range(n):
        cloud = fixtures._cloud(rng, 300, task)
        sid = f"{task}_rollout_ep{i:03d}"
        layout.write_sample(root, sid, points=cloud, episode_idx=i, action_type=primitive,
                            candidates=candidates(i), annotated=False, namespace=NS)
        ids.append(sid)
    return ids


def snapshot(root: pathlib.Path) -> dict:
    """Every file under root (hidden ones too) -> hash of its bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = pathlib.Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def client_for(store) -> TestClient:
    return TestClient(server_lib.create_app(store, allowed_hosts=["testserver"]))


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "rollouts"
    ids = write_rollouts(root)
    return root, ids


@pytest.fixture
def client(data):
    store = store_lib.Store(data[0], annotator="alice")
    with client_for(store) as c:
        c.store = store
        yield c


def post(c, index: int, **fields):
    s = c.get(f"/api/samples/{index}").json()
    body = {"sample_id": s["sample_id"], "version": s["version"], **fields}
    return c.post(f"/api/samples/{index}/annotation", json=body)


def annotation_file(root, sid) -> dict:
    return yaml.safe_load((root / sid / layout.ANNOTATION).read_text())[NS]["annotation"]


OWN = [[0.41, 0.02, 0.005], [0.52, 0.11, 0.0]]

# ranked [2, 0], 4 = 5, 7 not comparable, own action (candidates 1, 3, 4, 5, 6 unranked)
EXAMPLE = dict(ranked=[2, 0], equal=[[4, 5]], not_comparable=[7], own_action=OWN)
EXAMPLE_ROWS = [
    [4, 5, 2, 3], [4, 5, 6, 7], [4, 5, 8, 9], [4, 5, 10, 11], [4, 5, 12, 13],   # 2 > unranked
    [0, 1, 2, 3], [0, 1, 6, 7], [0, 1, 8, 9], [0, 1, 10, 11], [0, 1, 12, 13],   # 0 > unranked
    [4, 5, 0, 1],                                                               # 2 > 0
    [8, 9, 10, 11],                                                             # 4 = 5
    PAD, PAD, PAD, PAD,
    [16, 17, 0, 1], [16, 17, 2, 3], [16, 17, 4, 5], [16, 17, 6, 7],             # own vs each
    [16, 17, 8, 9], [16, 17, 10, 11], [16, 17, 12, 13], [16, 17, 14, 15],
]
EXAMPLE_CODES = [0] * 11 + [2] + [3] * 4 + [0] * 7 + [3]


# ------------------------------------------------------------------ what is written


def test_submission_writes_the_published_protocol(client, data):
    root, ids = data
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    r = post(client, 0, **EXAMPLE)
    assert r.status_code == 200, r.text
    assert r.json()["pairs"] == 24 and r.json()["dropped_pairs"] == 0
    ann = annotation_file(root, ids[0])
    assert ann["selected_grasp_point_indices"] == EXAMPLE_ROWS
    assert ann["grasp_point_rankings"] == EXAMPLE_CODES
    # the own action in the rows rope uses (0 = left pick, 2 = left place), NaN elsewhere
    poses = np.asarray(ann["action_poses"], float)
    np.testing.assert_allclose(poses[0, :3], OWN[0])
    np.testing.assert_allclose(poses[2, :3], OWN[1])
    assert np.isnan(poses[1]).all() and np.isnan(poses[3]).all()
    assert ann["action_type"] == 16                      # single_pick_and_place, as published
    assert ann["annotator"] == "alice"
    when = datetime.datetime.fromisoformat(ann["annotated_at"].replace("Z", "+00:00"))
    assert before <= when <= datetime.datetime.now(datetime.timezone.utc)
    # metadata.yaml carries the same annotation (what layout.read_sample reads first)
    meta = yaml.safe_load((root / ids[0] / layout.METADATA).read_text())[NS]
    assert meta["annotation"]["selected_grasp_point_indices"] == EXAMPLE_ROWS
    assert len(meta["pose_virtual"]["prediction"]["begin"]) == 2 * K   # candidates untouched
    # and the project's reader accepts it
    s = layout.read_sample(root / ids[0], task="rope", kind="finetune")
    np.testing.assert_array_equal(s.pair_indices, EXAMPLE_ROWS)
    np.testing.assert_array_equal(s.rankings, EXAMPLE_CODES)
    np.testing.assert_allclose(s.action, OWN, atol=1e-6)
    # no temporary file is left behind
    assert not [p for p in (root / ids[0]).iterdir() if p.name.startswith(".")]


def test_equal_ranked_neighbours_and_no_own_action(client, data):
    root, ids = data
    r = post(client, 1, ranked=[6, 3, 1], equal=[[1, 3]])
    assert r.status_code == 200, r.text
    ann = annotation_file(root, ids[1])
    unranked = [0, 2, 4, 5, 7]
    rows = [[2 * a, 2 * a + 1, 2 * b, 2 * b + 1] for a in (6, 3, 1) for b in unranked]
    rows += [[12, 13, 6, 7], [12, 13, 2, 3], [6, 7, 2, 3]]          # 6 > 3, 6 > 1, 3 = 1
    assert len(rows) == 18                                        # two past the 16 rows
    assert ann["selected_grasp_point_indices"] == rows[:16] + [PAD] * 8
    assert ann["grasp_point_rankings"] == [0] * 16 + [3] * 8
    assert ann["pam_jax_annotate"]["dropped_pairs"] == 2 and r.json()["dropped_pairs"] == 2
    # without an own action, action_poses holds the best-ranked candidate
    poses = np.asarray(ann["action_poses"], float)
    np.testing.assert_allclose(poses[[0, 2], :3], candidates(1)[12:14])


def test_fling_own_action_uses_the_two_pick_rows(tmp_path):
    root = tmp_path / "tshirt"
    ids = write_rollouts(root, 1, task="tshirt_short")
    store = store_lib.Store(root, task="tshirt", annotator="bob")
    with client_for(store) as c:
        s = c.get("/api/samples/0").json()
        assert s["two_picks"] is True and s["action_type"] == "fling"
        assert post(c, 0, ranked=[0], own_action=OWN).status_code == 200
    poses = np.asarray(annotation_file(root, ids[0])["action_poses"], float)
    np.testing.assert_allclose(poses[:2, :3], OWN)
    assert np.isnan(poses[2:]).all()


def test_sample_page_data(client, data):
    s = client.get("/api/samples/0").json()
    assert s["sample_id"] == data[1][0] and s["total"] == 4 and not s["annotated"]
    assert s["num_candidates"] == K and s["ranking_rows"] == 2 * K
    np.testing.assert_allclose(np.asarray(s["candidates"]).reshape(-1, 3), candidates(0), atol=1e-6)
    assert len(s["points"]) == 300 and s["two_picks"] is False
    page = client.get("/")
    assert page.status_code == 200 and "annotate.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000


def test_collected_sample_with_the_expert_stored_as_a_candidate(tmp_path):
    """`pam-jax collect` stores the expert's action as a last candidate (2K + 2 points): it is
    shown as candidate K with a note, and the annotator's own action is then points 2K+2, 2K+3
    (one past the stored points, where the pipeline appends actions[:, 0])."""
    root = tmp_path / "collected"
    cands = np.concatenate([candidates(0), [[0.5, 0.0, 0.0], [0.5, 0.05, 0.0]]])
    layout.write_sample(root, "rope_finetune_ep00000_step00", points=fixtures._cloud(np.random.default_rng(0), 200, "rope"),
                        episode_idx=0, action_type="single_pick_and_place", candidates=cands, annotated=False,
                        namespace=NS, extra_metadata={"sim": {"num_candidates": K, "expert_in_candidates": True}})
    store = store_lib.Store(root, task="rope", annotator="alice")
    with client_for(store) as c:
        s = c.get("/api/samples/0").json()
        assert s["num_candidates"] == K + 1 and "expert" in s["notes"][str(K)]
        assert post(c, 0, ranked=[K], own_action=OWN).status_code == 200
    ann = annotation_file(root, "rope_finetune_ep00000_step00")
    assert ann["selected_grasp_point_indices"][0] == [16, 17, 0, 1]
    assert ann["selected_grasp_point_indices"][2 * (K + 1)] == [18, 19, 0, 1]
    s = layout.read_sample(root / "rope_finetune_ep00000_step00", task="rope", kind="finetune")
    assert s.pair_indices.shape == (3 * (K + 1), 4)


# ------------------------------------------------------------------ refused submissions

FORGED = [
    (dict(ranked=[8]), "out of range"),
    (dict(ranked=[-1]), "out of range"),
    (dict(ranked=[True]), "integer"),
    (dict(ranked=[1.0]), "integer"),
    (dict(ranked=["1"]), "integer"),
    (dict(ranked=[1, 1]), "ranked twice"),
    (dict(ranked=[1], not_comparable=[1]), "both ranked and"),
    (dict(ranked=[1], not_comparable=[99]), "out of range"),
    (dict(ranked=[1], equal=[[2, 2]]), "equal to itself"),
    (dict(ranked=[1], equal=[[1, 2]]), "rank both or neither"),
    (dict(ranked=[1, 2, 3], equal=[[1, 3]]), "ranked between them"),
    (dict(ranked=[1], equal=[[2, 3, 4]]), "pairs"),
    (dict(ranked=[1], equal=[[2, 7]], not_comparable=[7]), "not comparable"),
    (dict(ranked=[], own_action=None), "rank at least one"),
    (dict(own_action=[[0, 0, 0]]), "two points"),
    (dict(own_action=[[0, 0, 0], [0, 0, 1e9]]), "finite numbers"),
    (dict(own_action=[[0, 0, 0], [0, 0, "x"]]), "finite numbers"),
    (dict(ranked=[1], grasp_point_rankings=[7]), "unknown field"),          # codes are not taken
    (dict(ranked=[1], selected_grasp_point_indices=[[0, 1, 2, 99]]), "unknown field"),
    (dict(ranked=[1], path="../../etc/passwd"), "unknown field"),
    (dict(ranked=[1], sample_id="../../rope_rollout_ep001"), "sample_id does not match"),
    (dict(ranked=[1], sample_id="rope_rollout_ep001"), "sample_id does not match"),
    (dict(ranked=[1], version=""), "version"),
]


@pytest.mark.parametrize("fields,why", FORGED, ids=[w + f" {i}" for i, (_, w) in enumerate(FORGED)])
def test_forged_submissions_change_nothing(client, data, tmp_path, fields, why):
    before = snapshot(tmp_path)
    r = post(client, 0, **fields)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert why in msg and "\n" not in msg
    assert snapshot(tmp_path) == before


def test_malformed_requests_change_nothing(client, data, tmp_path):
    before = snapshot(tmp_path)
    s = client.get("/api/samples/0").json()
    good = {"sample_id": s["sample_id"], "version": s["version"], "ranked": [1]}
    checks = [
        (client.post("/api/samples/0/annotation", content=b"{not json", headers={"Content-Type": "application/json"}), 400),
        (client.post("/api/samples/0/annotation", content=b"[1, 2]", headers={"Content-Type": "application/json"}), 400),
        (client.post("/api/samples/0/annotation", content=b'{"ranked": [NaN]}', headers={"Content-Type": "application/json"}), 400),
        (client.post("/api/samples/0/annotation", content=b"[" * 30000 + b"]" * 30000,
                     headers={"Content-Type": "application/json"}), 400),
        (client.post("/api/samples/0/annotation", data={"ranked": "1"}), 415),           # a cross-site form
        (client.post("/api/samples/0/annotation", json={**good, "equal": [[0, 1]] * 40000}), 413),
        (client.post("/api/samples/4/annotation", json=good), 404),                      # index out of range
        (client.post("/api/samples/-1/annotation", json=good), 404),
        (client.post("/api/samples/..%2F..%2Fetc/annotation", json=good), 404),
        (client.post("/api/samples/rope_rollout_ep000/annotation", json=good), 404),     # ids are not addresses
        (client.get("/api/samples/99"), 404),
        (client.get("/static/../store.py"), 404),
        (client.get("/static/annotate.js/../../store.py"), 404),
        (client.post("/api/samples/0/annotation", json=good, headers={"Origin": "http://evil.example"}), 403),
        (client.get("/api/progress", headers={"Host": "evil.example"}), 400),             # DNS rebinding
    ]
    for r, status in checks:
        assert r.status_code == status, (r.request.url, r.text)
    assert snapshot(tmp_path) == before
    # the store given no --annotator needs a name from the page
    store = store_lib.Store(data[0])
    with client_for(store) as c:
        r = post(c, 0, ranked=[1])
        assert r.status_code == 400 and "annotator" in r.json()["error"]
        r = post(c, 0, ranked=[1], annotator="bad\nname")
        assert r.status_code == 400
        assert snapshot(tmp_path) == before
        assert post(c, 0, ranked=[1], annotator="carol").status_code == 200
    assert annotation_file(data[0], data[1][0])["annotator"] == "carol"


def test_unusable_sample_is_reported_not_written(tmp_path):
    root = tmp_path / "mixed"
    write_rollouts(root, 1)
    fixtures.write_fixture(root, task="rope", kind="supervised", num_episodes=1, samples_per_episode=1,
                           malformed=(), images=False)          # no candidates: not a finetune sample
    store = store_lib.Store(root, annotator="alice")
    with client_for(store) as c:
        bad = next(i for i, e in enumerate(store.entries) if "supervised" in e.sample_id)
        s = c.get(f"/api/samples/{bad}").json()
        assert "not a finetune sample" in s["error"]
        before = snapshot(tmp_path)
        r = c.post(f"/api/samples/{bad}/annotation",
                   json={"sample_id": s["sample_id"], "version": store.version(bad), "ranked": [0]})
        assert r.status_code == 422 and "not a finetune sample" in r.json()["error"]
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ atomicity, compare-and-swap


def test_a_failed_write_keeps_the_old_files(client, data):
    root, ids = data
    assert post(client, 0, ranked=[3]).status_code == 200
    old = {n: (root / ids[0] / n).read_bytes() for n in (layout.METADATA, layout.ANNOTATION)}

    def fail(tmp, final):
        assert tmp.is_file() and tmp.parent == final.parent     # written, not yet renamed
        raise OSError(28, "No space left on device")

    client.store.before_replace = fail
    r = post(client, 0, ranked=[5])
    assert r.status_code == 500 and "No space left" in r.json()["error"]
    for n, b in old.items():
        assert (root / ids[0] / n).read_bytes() == b
    assert annotation_file(root, ids[0])["pam_jax_annotate"]["ranked"] == [3]
    assert not [p for p in (root / ids[0]).iterdir() if p.name.startswith(".")]

    # failing on the second file (annotation.yaml) of a fresh sample: still not annotated
    calls = []

    def fail_second(tmp, final):
        calls.append(final.name)
        if final.name == layout.ANNOTATION:
            raise OSError(5, "Input/output error")

    client.store.before_replace = fail_second
    assert post(client, 1, ranked=[5]).status_code == 500
    assert calls == [layout.METADATA, layout.ANNOTATION]
    assert not (root / ids[1] / layout.ANNOTATION).exists()
    assert client.get("/api/progress").json()["done"] == 1
    with pytest.raises(layout.MalformedSample, match="not annotated"):
        layout.read_sample(root / ids[1], kind="finetune")


def test_readers_see_the_old_file_while_a_write_is_paused(client, data):
    root, ids = data
    assert post(client, 0, ranked=[3]).status_code == 200
    old = (root / ids[0] / layout.ANNOTATION).read_bytes()
    paused, release = threading.Event(), threading.Event()

    def pause(tmp, final):
        if final.name == layout.ANNOTATION:
            paused.set()
            assert release.wait(10)

    client.store.before_replace = pause
    s = client.get("/api/samples/0").json()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=client.post(
        "/api/samples/0/annotation", json={"sample_id": s["sample_id"], "version": s["version"], "ranked": [6]})))
    t.start()
    try:
        assert paused.wait(10)
        assert (root / ids[0] / layout.ANNOTATION).read_bytes() == old     # intact and readable
        assert yaml.safe_load(old)[NS]["annotation"]["pam_jax_annotate"]["ranked"] == [3]
        tmp = [p for p in (root / ids[0]).iterdir() if p.name.startswith(f".{layout.ANNOTATION}")]
        assert len(tmp) == 1 and "ranked: [6]" in tmp[0].read_text()     # complete before the rename
        assert client.get("/api/progress").json()["done"] == 1
    finally:
        release.set()
        t.join(10)
    assert result["r"].status_code == 200
    assert annotation_file(root, ids[0])["pam_jax_annotate"]["ranked"] == [6]


def test_compare_and_swap_between_two_annotators(data):
    root, ids = data
    # two servers on one folder (two processes in real use: the flock covers that case)
    a, b = store_lib.Store(root, annotator="alice"), store_lib.Store(root, annotator="bob")
    with client_for(a) as ca, client_for(b) as cb:
        sa, sb = ca.get("/api/samples/2").json(), cb.get("/api/samples/2").json()
        assert sa["version"] == sb["version"]
        r = ca.post("/api/samples/2/annotation", json={"sample_id": sa["sample_id"], "version": sa["version"], "ranked": [1]})
        assert r.status_code == 200
        saved = (root / ids[2] / layout.ANNOTATION).read_bytes()
        r = cb.post("/api/samples/2/annotation", json={"sample_id": sb["sample_id"], "version": sb["version"], "ranked": [4]})
        assert r.status_code == 409
        assert "changed since you opened it" in r.json()["error"] and "alice" in r.json()["error"]
        assert (root / ids[2] / layout.ANNOTATION).read_bytes() == saved
        # bob reloads, sees alice's ranking, and edits it
        sb = cb.get("/api/samples/2").json()
        assert sb["state"]["ranked"] == [1] and sb["annotator"] == "alice"
        r = cb.post("/api/samples/2/annotation", json={"sample_id": sb["sample_id"], "version": sb["version"], "ranked": [4]})
        assert r.status_code == 200
    ann = annotation_file(root, ids[2])
    assert ann["annotator"] == "bob" and ann["pam_jax_annotate"]["ranked"] == [4]


# ------------------------------------------------------------------ resume, revisit


def test_resume_at_the_first_unannotated_sample(client, data):
    root, ids = data
    p = client.get("/api/progress").json()
    assert (p["total"], p["done"], p["first_unannotated"]) == (4, 0, 0)
    assert post(client, 0, ranked=[0]).json()["next_index"] == 1
    assert post(client, 2, ranked=[0]).json()["next_index"] == 3     # the next one after it
    p = client.get("/api/progress").json()
    assert (p["done"], p["first_unannotated"]) == (2, 1)
    assert [s["done"] for s in p["samples"]] == [True, False, True, False]
    # a new server on the folder resumes there too
    with client_for(store_lib.Store(root, annotator="alice")) as c2:
        assert c2.get("/api/progress").json()["first_unannotated"] == 1
        assert post(c2, 1, ranked=[0]).json()["next_index"] == 3
        r = post(c2, 3, ranked=[0]).json()
        assert r["next_index"] is None and r["done"] == 4
        assert c2.get("/api/progress").json()["first_unannotated"] is None


def test_revisit_and_edit(client, data):
    root, ids = data
    assert post(client, 0, **EXAMPLE).status_code == 200
    s = client.get("/api/samples/0").json()
    assert s["annotated"] and s["annotator"] == "alice" and s["annotated_at"]
    assert s["state"] == {"ranked": [2, 0], "equal": [[4, 5]], "not_comparable": [7], "own_action": OWN}
    r = post(client, 0, ranked=[2, 0], equal=[], not_comparable=[], own_action=None)
    assert r.status_code == 200
    ann = annotation_file(root, ids[0])
    assert ann["grasp_point_rankings"][:16] == [0] * 13 + [3] * 3
    assert ann["grasp_point_rankings"][16:] == [3] * 8
    assert client.get("/api/samples/0").json()["state"]["own_action"] is None


def test_a_fixture_annotated_elsewhere_can_be_edited(tmp_path):
    info = fixtures.write_fixture(tmp_path / "fx", task="rope", kind="finetune", num_episodes=2,
                                  samples_per_episode=1, malformed=(), images=False)
    store = store_lib.Store(tmp_path / "fx", task="rope", annotator="dana")
    with client_for(store) as c:
        p = c.get("/api/progress").json()
        assert p["done"] == p["total"] == 2 and p["first_unannotated"] is None
        s = c.get("/api/samples/0").json()
        assert s["annotated_elsewhere"] and s["state"]["ranked"] == []
        assert post(c, 0, ranked=[7, 6]).status_code == 200
    sid = sorted(info["samples"])[0]
    ann = yaml.safe_load((tmp_path / "fx" / sid / layout.ANNOTATION).read_text())[NS]["annotation"]
    assert ann["selected_grasp_point_indices"][0] == [14, 15, 0, 1]
    # the fixture's annotated alternatives are kept through the edit
    assert len(ann["multiple_action_poses"]) == 3


# ------------------------------------------------------------------ command line


def test_cli_arguments_and_errors(tmp_path):
    parser = argparse.ArgumentParser()
    annotate.add_arguments(parser)
    a = parser.parse_args(["--data", str(tmp_path)])
    assert (a.host, a.port, a.task, a.annotator) == ("127.0.0.1", 8765, None, None)
    with pytest.raises(ValueError, match=r"^--data .*no such directory"):
        annotate.run(parser.parse_args(["--data", str(tmp_path / "missing")]))
    with pytest.raises(ValueError, match=r"^--data .*no samples"):
        annotate.run(parser.parse_args(["--data", str(tmp_path)]))
    write_rollouts(tmp_path / "r", 1)
    with pytest.raises(ValueError, match=r"^--annotator"):
        annotate.run(parser.parse_args(["--data", str(tmp_path / "r"), "--annotator", "a\tb"]))
    with pytest.raises(ValueError, match=r"^--port"):
        annotate.run(parser.parse_args(["--data", str(tmp_path / "r"), "--port", "70000"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", str(tmp_path), "--task", "cloth"])
    assert server_lib.allowed_hosts_for("127.0.0.1")[:2] == ["127.0.0.1", "localhost"]


def test_annotate_errors_exit_2_with_one_line(tmp_path, capsys):
    from pam_jax import cli
    from pam_jax.annotate.__main__ import main as annotate_main

    for run in (lambda a: cli.main(["annotate", *a]), annotate_main):
        assert run(["--data", str(tmp_path / "missing")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pam-jax: error: --data ") and "no such directory" in err[0], err


# ------------------------------------------------------------------ round trip through the builder


def _build(src, data_dir):
    from pam_jax.data.build import build
    return build(src, task="rope", kind="finetune", data_dir=data_dir, progress=False)


def test_round_trip_through_the_builder(tmp_path):
    """Annotate rollouts in the browser protocol, build them with the TFDS builder, and read
    the pairs the DPO step trains on: exactly the submitted rankings."""
    from pam_jax import preference
    from pam_jax.data import pipeline, sources

    root = tmp_path / "src"
    ids = write_rollouts(root, 5)
    store = store_lib.Store(root, task="rope", annotator="alice")
    with client_for(store) as c:
        assert post(c, 0, **EXAMPLE).status_code == 200
        assert post(c, 1, ranked=[5]).status_code == 200
        assert post(c, 2, ranked=[1]).status_code == 200            # then edited:
        assert post(c, 2, ranked=[6, 3], equal=[[3, 6]], own_action=OWN).status_code == 200
        assert post(c, 4, ranked=[0], not_comparable=[1, 2, 3, 4, 5, 6, 7]).status_code == 200
    # sample 3 stays unannotated
    own = K    # the annotator's action is appended as candidate K
    expected = {
        ids[0]: {(2, b, 0) for b in (1, 3, 4, 5, 6)} | {(0, b, 0) for b in (1, 3, 4, 5, 6)}
        | {(2, 0, 0), (4, 5, 2)} | {(own, b, 0) for b in range(7)},
        ids[1]: {(5, b, 0) for b in (0, 1, 2, 3, 4, 6, 7)},
        ids[2]: {(a, b, 0) for a in (6, 3) for b in (0, 1, 2, 4, 5, 7)} | {(6, 3, 2)}
        | {(own, b, 0) for b in range(K)},
        ids[4]: set(),                          # nothing left to compare: no trainable pair
    }
    report = _build(root, tmp_path / "tfds")
    assert any(s["sample"] == ids[3] for s in report["skipped"])
    ds = pathlib.Path(report["dataset_dir"])
    got = {}
    for split, n in sources.split_sizes(ds).items():
        if not n:
            continue
        src = sources.open_source(ds, split)
        for batch in pipeline.eval_batches(ds, split=split, batch_size=8):
            dpo = preference.dpo_batch(batch)
            for b, rec in enumerate(batch["record_index"]):
                sid = src[int(rec)]["sample_id"]
                sid = sid.decode() if isinstance(sid, bytes) else str(sid)
                codes = dpo["rankings"][b]
                pairs = dpo["pairs"][b]
                got[sid] = {(int(p[0]), int(p[1]), int(c)) for p, c in zip(pairs, codes) if c != 3}
                # the candidate the pairs call K is the annotator's own action
                if sid in (ids[0], ids[2]):
                    assert dpo["candidates"].shape[1] == K + 1
    assert got == expected

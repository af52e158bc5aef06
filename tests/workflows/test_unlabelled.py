"""Unlabelled candidate folders from recorded clouds: what `pam-jax annotate` reads, and bad files
refused by name before anything is written. A stand-in policy (no network) gives the candidates."""
import numpy as np
import pytest

from pam_jax.data import layout
from pam_jax.workflows import unlabelled

K = 3


def fake_policy(cloud):
    """K candidates: pick point i of the cloud, place 5 cm along +x."""
    picks = cloud[:K]
    return np.stack([picks, picks + [0.05, 0.0, 0.0]], axis=1)


def test_recorded_clouds_become_unlabelled_samples_the_annotator_reads(tmp_path):
    pytest.importorskip("starlette")
    from pam_jax.annotate import store as store_lib

    src = tmp_path / "clouds"
    src.mkdir()
    a = np.array([[0.1, 0.2, 0.0], [np.nan, 0.0, 0.0], [0.3, -0.1, 0.02], [0.0, 0.0, 0.01], [0.2, 0.2, 0.0]])
    np.save(src / "a.npy", np.c_[a, np.ones((5, 3))])                      # colour columns ignored
    np.savez(src / "b.npz", points=a[[0, 2, 3, 4]] + 0.01)
    (src / "notes.txt").write_text("not a cloud")
    r = unlabelled.write_unlabelled_clouds("rope", src, tmp_path / "out", candidates_fn=fake_policy, progress=False)
    assert r["samples"] == 2 and r["data_task"] == "rope"
    assert [x["sample_id"] for x in r["records"]] == ["rope_rollout_a", "rope_rollout_b"]
    finite = a[[0, 2, 3, 4]]                                               # the NaN row dropped
    store = store_lib.Store(tmp_path / "out", task="rope")
    page = store.load(0)
    assert not store.is_done(0) and page["num_candidates"] == K and page["num_points"] == 4
    np.testing.assert_allclose(page["candidates"], np.stack([finite[:K], finite[:K] + [0.05, 0, 0]], 1), atol=1e-6)
    assert not (tmp_path / "out" / "rope_rollout_a" / layout.ANNOTATION).exists()
    # a second run keeps what is there (a ranking already made is never overwritten)
    again = unlabelled.write_unlabelled_clouds("rope", src, tmp_path / "out", candidates_fn=fake_policy,
                                               progress=False)
    assert again["samples"] == 0 and again["skipped_existing"] == 2


@pytest.mark.parametrize("name, content, message", [
    ("bad.npy", np.zeros((4, 2)), "expected an (N, 3) array"),
    ("bad.npy", np.full((4, 3), np.nan), "no finite point"),
    ("bad.npy", np.full((4, 3), 1e6), "beyond 100"),
    ("bad.npy", np.array(["a", "b"]), "expected an (N, 3) array"),
    ("bad.npz", {"x": np.zeros((4, 3)), "y": np.zeros((4, 3))}, "expected an array 'points'"),
    ("bad.npy", b"not numpy", "not a numpy .npy file"),
    ("bad.npz", b"not a zip", "not a numpy .npz file"),
    ("bad.npy", np.array([{"a": 1}], dtype=object), "cannot load it .Object arrays"),
])
def test_a_bad_cloud_file_is_refused_by_name_and_nothing_is_written(tmp_path, name, content, message):
    src = tmp_path / "clouds"
    src.mkdir()
    np.save(src / "a_good.npy", np.random.default_rng(0).uniform(0, 0.1, (20, 3)))
    path = src / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        np.save(path, content)
    with pytest.raises(ValueError, match=f"^{name}: .*{message.replace('(', '.').replace(')', '.')}"):
        unlabelled.write_unlabelled_clouds("rope", src, tmp_path / "out", candidates_fn=fake_policy, progress=False)
    assert not (tmp_path / "out").exists()


def test_no_clouds_folder_or_no_cloud_files(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        unlabelled.write_unlabelled_clouds("rope", tmp_path / "nope", tmp_path / "out", candidates_fn=fake_policy)
    with pytest.raises(ValueError, match="no .npy or .npz files"):
        unlabelled.write_unlabelled_clouds("rope", tmp_path, tmp_path / "out", candidates_fn=fake_policy)


def test_simulated_rollouts_store_the_candidates_as_sampled_with_no_labels(tmp_path):
    """candidates_fn may give (as sampled, as executed): the sample keeps the sampled ones."""
    seen = []

    def policy(cloud):
        sampled = fake_policy(cloud)
        seen.append(sampled)
        return sampled, sampled + [0.0, 0.0, 0.001]

    r = unlabelled.write_unlabelled_rollouts("rope", tmp_path, states=2, candidates_fn=policy, num_points=200,
                                             steps_per_episode=1, max_steps=2, progress=False)
    assert r["samples"] == 2 and r["data_task"] == "rope"
    for rec in r["records"]:
        d = tmp_path / rec["sample_id"]
        assert not (d / layout.ANNOTATION).exists()
        ns, body = layout.read_metadata(d)
        assert "annotation" not in body
        stored = np.asarray(body["pose_virtual"]["prediction"]["begin"])
        assert stored.shape == (2 * K, 6) and np.all(stored[:, 3:] == 0)
        assert any(np.array_equal(stored[:, :3], s.reshape(-1, 3)) for s in seen)

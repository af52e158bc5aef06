"""The cloth task's shapes: the T-shirt outline (default) and the square kept as an option."""
import mujoco
import numpy as np
import pytest

from pam_jax.sim import expert_actions, make_task
from pam_jax.sim.cloth import ClothTask, SquareClothTask, tshirt_mask


@pytest.fixture(scope="module")
def shirt():
    return make_task("cloth")


def _lay_flat(t, p):
    t.gripper.set_positions(p)
    mujoco.mj_forward(t.model, t.data)


def test_tshirt_outline():
    m = tshirt_mask()
    # 16 columns (3 sleeve + 10 body + 3 sleeve) x 12 rows: body 120 + sleeves 2 x 3 x 4 - neck 2
    assert m.shape == (16, 12) and m.sum() == 120 + 24 - 2
    assert m[3:13, 0].all() and not m[:3, 0].any() and not m[13:, 0].any()     # the hem: body only
    assert m[:, 11].sum() == 16 - 2 and not m[7:9, 11].any()                  # shoulders, neck notch
    t = make_task("cloth")
    assert t.shape == "tshirt" and len(t.flat) == 142
    span = t.flat[:, :2].max(0) - t.flat[:, :2].min(0)
    assert span == pytest.approx([15 * t.spacing, 11 * t.spacing])           # wider than long
    # 2 triangles per full lattice cell: body 9 x 11, sleeves 2 x 3 x 3 (joined to the body), minus
    # the 3 cells at the neck
    assert len(t.faces) == 2 * (9 * 11 + 2 * 3 * 3 - 3)


def test_tshirt_resets_steps_and_scores(shirt):
    t = shirt
    _lay_flat(t, t.flat)
    assert t.score() == pytest.approx(1.0)                     # normalized to the flat T-shirt
    t.reset(3)
    crumpled = t.score()
    assert 0.0 < crumpled < 0.9 and not t.success()
    o = t.observe()
    assert o.shape == (3500, 3) and np.isfinite(o).all()
    info = t.step(expert_actions(t, np.random.default_rng(0))[0])
    assert info.executed and info.sim_steps > 0
    assert info.score_after > crumpled + 0.05                  # a fling opens it up
    # a shifted and rotated flat T-shirt still scores about 1. The published slot-grid coverage
    # depends on the pose by a few per cent: its 100 x 100 cells stretch with the xy bounding box,
    # and a particle marks a rectangle of whole cells (0.7 rad here: 1.064)
    th = 0.7
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    moved = t.flat.copy()
    moved[:, :2] = t.flat[:, :2] @ rot.T + [0.05, -0.03]
    _lay_flat(t, moved)
    assert t.score() == pytest.approx(1.0, abs=0.1)


def test_square_is_kept_as_an_option():
    sq = make_task("cloth", shape="square")
    assert isinstance(sq, ClothTask) and len(sq.flat) == 144 and sq.extent == pytest.approx(0.36)
    assert type(SquareClothTask()).__mro__[1] is ClothTask and SquareClothTask().shape == "square"
    _lay_flat(sq, sq.flat)
    assert sq.score() == pytest.approx(1.0)
    sq.reset(0)
    assert sq.score() < 0.9
    first, fallback = sq.fling_pairs()
    assert len(first) == 4 and len(fallback) == 8                # adjacent corners, inset edge pairs
    with pytest.raises(ValueError, match="shape"):
        ClothTask(shape="dress")

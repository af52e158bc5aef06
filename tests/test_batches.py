"""Typed batches: the fields the steps read, with rank and shape checks at the boundary."""
import jax
import numpy as np
import pytest

from pam_jax.batches import PreferenceBatch, SupervisedBatch, batch_type


def _supervised(b=2, n=5, m=3):
    return {"points": np.zeros((b, n, 3), np.float32), "actions": np.zeros((b, m, 2, 3), np.float32),
            "action_valid": np.ones((b, m), bool), "action_mask": np.ones((b, 2), np.float32),
            "episode_id": np.zeros((b,), np.int32)}                # extra keys are dropped


def test_supervised_from_dict_keeps_the_step_fields_and_is_a_pytree():
    batch = SupervisedBatch.from_dict(_supervised())
    assert SupervisedBatch.from_dict(batch) is batch
    leaves = jax.tree.leaves(batch)
    assert len(leaves) == 4 and batch.actions.shape == (2, 3, 2, 3)
    doubled = jax.tree.map(lambda x: np.concatenate([x, x]), batch)
    assert isinstance(doubled, SupervisedBatch) and doubled.points.shape == (4, 5, 3)


@pytest.mark.parametrize("key, bad", [("points", np.zeros((2, 5), np.float32)),          # rank
                                      ("points", np.zeros((2, 5, 2), np.float32)),       # not xyz
                                      ("action_valid", np.ones((3, 3), bool)),           # batch size
                                      ("action_valid", np.ones((2, 4), bool))])          # M differs
def test_supervised_shape_errors(key, bad):
    d = _supervised()
    d[key] = bad
    with pytest.raises(AssertionError):
        SupervisedBatch.from_dict(d)


def test_preference_batch_checks_pairs():
    d = {"points": np.zeros((2, 5, 3)), "candidates": np.zeros((2, 4, 2, 3)),
         "pairs": np.zeros((2, 6, 2), np.int32), "rankings": np.zeros((2, 6), np.int32),
         "action_mask": np.ones((2, 2))}
    assert PreferenceBatch.from_dict(d).pairs.shape == (2, 6, 2)
    d["rankings"] = np.zeros((2, 5), np.int32)
    with pytest.raises(AssertionError):
        PreferenceBatch.from_dict(d)
    assert batch_type("supervised") is SupervisedBatch and batch_type("dpo") is PreferenceBatch

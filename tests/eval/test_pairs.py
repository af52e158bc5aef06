"""Held-out pair accuracy: the counting rule on a hand-made case."""
import numpy as np

from pam_jax.eval.pairs import annotator_mask, count_pairs


def test_count_pairs_hand_computed():
    # candidates 0..2 sampled, 3 = the annotator's action
    scores = np.array([[3.0, 1.0, 1.0, 0.0]])
    pairs = np.array([[[0, 1], [1, 2], [2, 0], [0, 3], [1, 3], [0, 2]]])
    codes = np.array([[0, 0, 1, 1, 0, 2]])
    #  (0,1) code 0: 3 > 1 right; (1,2) code 0: tie, half; (2,0) code 1: 0 preferred, 3 > 1 right;
    #  (0,3) code 1: 3 preferred but 0 < 3 wrong; (1,3) code 0: 1 > 0 right; (0,2) code 2: ignored
    right, total = {"candidates": 0.0, "vs_annotator": 0.0}, {"candidates": 0, "vs_annotator": 0}
    count_pairs(scores, pairs, codes, np.array([[False, False, False, True]]), right, total)
    assert total == {"candidates": 3, "vs_annotator": 2}
    assert right == {"candidates": 2.5, "vs_annotator": 1.0}


def test_annotator_found_by_coordinates_even_when_stored_twice():
    # the simulated data store the annotator's action as candidate 2 and dpo_batch appends it again
    rng = np.random.default_rng(0)
    cands = rng.normal(size=(2, 4, 2, 3))
    cands[0, 2] = cands[0, 3]
    assert annotator_mask(cands).tolist() == [[False, False, True, True], [False, False, False, True]]
    # a pair (0, 2) in state 0 is therefore a comparison with the annotator, not between candidates
    right, total = {"candidates": 0.0, "vs_annotator": 0.0}, {"candidates": 0, "vs_annotator": 0}
    count_pairs(np.array([[1.0, 0.0, 2.0, 2.0]]), np.array([[[0, 2], [0, 1]]]), np.array([[1, 0]]),
                annotator_mask(cands[:1]), right, total)
    assert total == {"candidates": 1, "vs_annotator": 1} and right == {"candidates": 1.0, "vs_annotator": 1.0}

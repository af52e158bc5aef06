"""Held-out pair accuracy: the counting rule on a hand-made case."""
import numpy as np

from pam_jax.reward_eval import count_pairs


def test_count_pairs_hand_computed():
    # candidates 0..2 sampled, 3 = the annotator's action
    scores = np.array([[3.0, 1.0, 1.0, 0.0]])
    pairs = np.array([[[0, 1], [1, 2], [2, 0], [0, 3], [1, 3], [0, 2]]])
    codes = np.array([[0, 0, 1, 1, 0, 2]])
    #  (0,1) code 0: 3 > 1 right; (1,2) code 0: tie, half; (2,0) code 1: 0 preferred, 3 > 1 right;
    #  (0,3) code 1: 3 preferred but 0 < 3 wrong; (1,3) code 0: 1 > 0 right; (0,2) code 2: ignored
    right, total = {"candidates": 0.0, "vs_annotator": 0.0}, {"candidates": 0, "vs_annotator": 0}
    count_pairs(scores, pairs, codes, 3, right, total)
    assert total == {"candidates": 3, "vs_annotator": 2}
    assert right == {"candidates": 2.5, "vs_annotator": 1.0}

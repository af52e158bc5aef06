"""Early stopping on the validation loss: the counting rule, a run that stops (with a checkpoint),
a resume that replays the logged passes, and the config check."""
import json

import pytest
from helpers.tiny import tiny_config

from pam_jax.config import override
from pam_jax.train.loop import EarlyStop, train


def _quiet(*_):
    pass


def test_patience_counts_passes_without_a_new_best(tmp_path):
    w = EarlyStop(2, tmp_path / "none.jsonl", 0)
    # 1.0 best; 0.8 best; 0.9 worse (1); 0.8 not lower (2) -> stop
    assert [w.update(v, s) for s, v in ((10, 1.0), (20, 0.8), (30, 0.9), (40, 0.8))] == [False, False, False, True]
    assert (w.best, w.best_step) == (0.8, 20)
    w = EarlyStop(2, tmp_path / "none.jsonl", 0)
    assert [w.update(v) for v in (1.0, 1.1, 0.5, 0.6, 0.4)] == [False, False, False, False, False]   # reset by 0.5 and 0.4
    assert EarlyStop(0, tmp_path / "none.jsonl", 0).update(5.0) is False                          # off


def test_resume_replays_the_logged_passes(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [{"step": 2, "val_loss": 1.0}, {"step": 3, "loss": 0.5},
                                                      {"step": 4, "val_loss": 1.2}, {"step": 6, "val_loss": 0.1}]))
    w = EarlyStop(2, log, 4)              # resumed at step 4: the pass at 6 is not yet taken
    assert (w.best, w.best_step, w.bad) == (1.0, 2, 1)
    assert w.update(1.5, 6) is True


def test_a_run_stops_early_with_a_checkpoint(tmp_path):
    # lr 0: the parameters never move, so every validation pass gives the same loss; with
    # patience 1 the second pass (step 2) is not a new best and the run stops there
    cfg = override(tiny_config(tmp_path / "run", steps=20, eval_every=1, eval_batches=1, checkpoint_every=10,
                               early_stop_patience=1), ["optim.lr=0", "optim.warmup_steps=0"])
    res = train(cfg, progress_bar=False, log=_quiet)
    assert int(res.state.step) == 2
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_early_stop_needs_validation(tmp_path):
    with pytest.raises(ValueError, match="needs train.eval_every"):
        override(tiny_config(tmp_path / "x"), ["train.early_stop_patience=3"])

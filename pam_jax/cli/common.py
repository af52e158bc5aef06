"""What several command groups share: choices read lazily, the experiment config."""
from __future__ import annotations


class LazyChoices:
    """argparse choices read on first use, so that `pam-jax train` does not import the evaluation
    stack (the simulator, scipy) just to build the parser."""

    def __init__(self, load, *extra):
        self._load, self._extra = load, extra

    def _values(self):
        return [*self._extra, *self._load()]

    def __contains__(self, value):
        return value in self._values()

    def __iter__(self):
        return iter(self._values())


def _methods():
    from pam_jax.eval.closed_loop import METHODS

    return METHODS


def _reward_noise():
    from pam_jax.select import REWARD_NOISE

    return REWARD_NOISE


def methods():
    from pam_jax.eval.closed_loop import METHODS

    return METHODS


def reward_noise():
    from pam_jax.select import REWARD_NOISE

    return REWARD_NOISE


METHODS, REWARD_NOISE = LazyChoices(methods), LazyChoices(reward_noise)


def sim_tasks() -> list[str]:
    from pam_jax.tasks import sim_task_names

    return list(sim_task_names())


def load_config(args):
    from pam_jax import config as config_lib

    cfg = config_lib.load_experiment(args.experiment)
    return config_lib.override(cfg, args.set or [])

"""Config: overrides, nearest-key suggestions, experiment files, dict round trips."""
import pathlib

import pytest

from pam_jax import config as C

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_override_coerces_types():
    cfg = C.override(C.Config(), ["train.steps=7", "optim.lr=3e-4", "diffusion.clip_sample=false",
                                  "data.dataset=deformpam/rope", "name=x"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 3e-4 and cfg.diffusion.clip_sample is False
    assert cfg.data.dataset == "deformpam/rope" and cfg.name == "x"
    assert C.Config().train.steps == 1000  # the original is untouched (frozen)


def test_mistyped_key_suggests_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'optim.lr'"):
        C.override(C.Config(), ["optim.lrr=1"])


@pytest.mark.parametrize("item,msg", [
    ("train.steps=abc", "expected int"),
    ("diffusion.clip_sample=maybe", "expected a boolean"),
    ("train.steps", "key=value"),
])
def test_bad_override_values(item, msg):
    with pytest.raises(ValueError, match=msg):
        C.override(C.Config(), [item])


def test_dict_round_trip():
    cfg = C.override(C.Config(), ["model.width=96", "train.run_dir=/tmp/x"])
    assert C.from_dict(C.to_dict(cfg)) == cfg


def test_from_dict_rejects_unknown_keys():
    d = C.to_dict(C.Config())
    d["model"]["nonsense"] = 1
    with pytest.raises(ValueError, match="unknown config keys"):
        C.from_dict(d)


def test_every_experiment_file_loads():
    files = sorted(f for f in (REPO / "experiments").glob("*.py") if not f.name.startswith("_"))
    assert files and [f.stem for f in files] == C.experiment_names()
    for f in files:
        cfg = C.load_experiment(f)
        assert isinstance(cfg, C.Config)
        assert C.load_experiment(f.stem) == cfg          # the packaged name gives the same config


def test_experiment_names_and_variants():
    assert C.load_experiment("sim_rope:dpo").train.stage == "dpo"
    with pytest.raises(FileNotFoundError, match="did you mean 'toy_bimodal'"):
        C.load_experiment("toy_bimdal")
    with pytest.raises(ValueError, match="has no variants"):
        C.load_experiment("toy_bimodal:dpo")
    with pytest.raises(ValueError, match="unknown stage"):
        C.load_experiment("deformpam_rope:reward")


def test_experiment_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        C.load_experiment(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        C.load_experiment(bad)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ValueError, match="broken.py:1: syntax error"):
        C.load_experiment(broken)
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def get_config():\n    return {}\n")
    with pytest.raises(ValueError, match="must return"):
        C.load_experiment(wrong)


@pytest.mark.parametrize("item,msg", [
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be an integer >= 1, got 0"),
    ("train.steps=-5", "train.steps must be an integer >= 1, got -5"),
    ("train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be an integer >= 1, got 0"),
    ("model.width=-1", "model.width must be an integer >= 6, got -1"),
    ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
    ("optim.lr=nan", "optim.lr must be in [0, 1], got nan"),
    ("optim.ema_decay=1", "optim.ema_decay must be in [0, 1), got 1.0"),
    ("preference.reward_timestep_frac=0", "preference.reward_timestep_frac must be in (0, 1], got 0.0"),
    ("preference.beta=0", "preference.beta must be > 0, got 0.0"),
    ("diffusion.beta_schedule=cosine", "diffusion.beta_schedule must be one of 'linear', 'scaled_linear', "
                                       "'squaredcos_cap_v2', got 'cosine'"),
    ("data.source=csv", "data.source must be one of 'toy_bimodal', 'toy_preference', 'tfds', got 'csv'"),
    ("preference.loss=ipo", "preference.loss must be one of"),
    ("train.stage=rl", "train.stage must be one of 'supervised', 'dpo', 'reward', got 'rl'"),
    ("data.task=sock", "data.task must be one of"),
    ("train.run_dir=", "train.run_dir must not be empty"),
    ("model.width=50", "model.width=50 must be a multiple of model.heads=4"),
    ("diffusion.num_inference_steps=500", "diffusion.num_inference_steps=500 must be <= "
                                          "diffusion.num_train_timesteps=100"),
    ("data.num_points=8", "data.num_points=8 must be >= model.num_tokens=256"),
    ("optim.warmup_steps=1001", "optim.warmup_steps=1001 must be <= train.steps=1000"),
])
def test_out_of_range_values_are_one_line(item, msg):
    with pytest.raises(ValueError) as e:
        C.override(C.Config(), [item])
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_every_field_has_a_range_or_choices():
    assert C.validate(C.Config()) == C.Config()
    keys = {key: C.typing.get_type_hints(cls)[name] for key, _, cls, name in C._fields(C.Config())}
    numeric = {k for k, t in keys.items() if t in (int, float)}
    text = {k for k, t in keys.items() if t is str}
    assert numeric == set(C.RANGES)
    assert text == set(C.choices()) | set(C.FREE_TEXT) and not set(C.choices()) & set(C.FREE_TEXT)
    assert set(keys) == numeric | text | {k for k, t in keys.items() if t is bool}


def test_enum_choices_agree_with_the_modules_that_use_them():
    from pam_jax.data.train_data import SOURCES
    from pam_jax.models.reward import HEADS, INITS
    from pam_jax.select import COMPUTE_DTYPES, REWARD_NOISE
    from pam_jax.train.preference_steps import PAIR_NOISE
    from pam_jax.train.stages import STAGES

    ch = C.choices()
    assert ch["preference.reward_noise"] == REWARD_NOISE and ch["preference.pair_noise"] == PAIR_NOISE
    assert ch["preference.reward_init"] == INITS and ch["preference.reward_head"] == HEADS
    assert ch["data.source"] == SOURCES and ch["train.stage"] == STAGES
    assert ch["train.compute_dtype"] == COMPUTE_DTYPES
    from pam_jax.train.tracking import TRACKERS

    assert ch["train.tracker"] == TRACKERS


def test_a_wrong_type_in_an_experiment_file_names_the_file(tmp_path):
    f = tmp_path / "typed.py"
    f.write_text("from pam_jax.config import *\n\ndef get_config():\n"
                 "    return Config(train=TrainConfig(steps=1e3))\n")
    with pytest.raises(ValueError, match=r"typed.py: get_config\(\): train.steps must be an integer, got 1000.0"):
        C.load_experiment(f)


def test_experiment_errors_name_the_file_and_line(tmp_path):
    f = tmp_path / "staged.py"
    f.write_text("from pam_jax.config import Config\n\n\ndef get_config(stage='supervised'):\n"
                 "    if stage != 'supervised':\n        raise ValueError(f'unknown stage {stage!r}')\n"
                 "    return Config()\n")
    with pytest.raises(ValueError, match=r"staged.py:6: ValueError: unknown stage 'dpo' \(in get_config\('dpo'\)"):
        C.load_experiment(f"{f}:dpo")
    g = tmp_path / "plain.py"
    g.write_text("from pam_jax.config import Config\n\n\ndef get_config():\n    return Config()\n")
    with pytest.raises(ValueError, match=r"plain.py:4: this experiment has no variants"):
        C.load_experiment(f"{g}:dpo")
    h = tmp_path / "crash.py"
    h.write_text("import math\nX = 1 / 0\n")
    with pytest.raises(ValueError, match=r"crash.py:2: ZeroDivisionError: division by zero \(while loading"):
        C.load_experiment(h)
    with pytest.raises(ValueError, match=r"_sim.py:\d+: ValueError: .*unknown stage 'xyz'"):
        C.load_experiment("sim_rope:xyz")


def test_warmup_longer_than_the_run_refused_when_asked_for_and_noted_otherwise():
    with pytest.raises(ValueError, match=r"^optim.warmup_steps=50 must be <= train.steps=20 "):
        C.override(C.Config(), ["train.steps=20", "optim.warmup_steps=50"])
    short = C.override(C.Config(), ["train.steps=20"])          # the default warm-up, 100 steps
    assert C.warmup_note(short) == ("note: optim.warmup_steps=100 is more than train.steps=20: the learning "
                                    "rate warms up over 19 steps instead")
    assert C.warmup_note(C.override(C.Config(), ["train.steps=100"])) is None

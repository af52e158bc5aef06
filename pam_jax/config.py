"""Experiment configuration: frozen dataclasses, experiment files, and `--set key=value` overrides.

An experiment (``experiments/<name>.py``, installed as ``pam_jax.experiments.<name>``) defines
``get_config() -> Config``; it is named by its name (``toy_bimodal``) or, for a fork, by its file
path. A researcher copies one file and edits it; nothing else changes. Overrides use dotted paths (``train.steps=200``) and a
mistyped key suggests the nearest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import json
import pathlib
import typing


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # point encoder (set abstraction + transformer)
    num_tokens: int = 256          # centroids from farthest-point sampling
    knn: int = 16                  # neighbours grouped per centroid
    encoder_layers: int = 2        # transformer layers over the tokens
    # action denoiser (3D-Diffuser-Actor style); reference size: width 240, 2 layers, 4 heads
    width: int = 240
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    action_points: int = 2         # every DeformPAM action is two 3D points
    rotary_max_freq: float = 64.0  # highest rotary frequency (radians per normalised unit)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    set_alpha_to_one: bool = True
    num_inference_steps: int = 100
    eta: float = 0.0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = "toy_bimodal"     # "toy_bimodal" or "tfds" (a built dataset)
    num_points: int = 1000
    batch_size: int = 32            # global batch, split over devices and processes
    max_poses: int = 2              # M: annotated alternative poses per sample
    # tfds source
    data_dir: str = ""
    dataset: str = ""               # e.g. "deformpam/rope_supervised"
    split: str = "train"
    task: str = ""                  # rope | nut | tshirt_short (augmentation defaults)
    seed: int = 0
    # toy_preference source: states labelled by the planted-preference oracle
    num_states: int = 256
    label_noise: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    warmup_steps: int = 100
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    ema_decay: float = 0.0          # 0 disables the EMA copy of the parameters


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """Preference alignment (DPO stage), the explicit reward head, and reward-guided selection."""

    init_from: str = ""             # run folder of the supervised (SL) checkpoint to start from
    init_step: int = -1             # -1 = its newest checkpoint
    loss: str = "deformpam"         # deformpam (-sigmoid) | diffusion_dpo (-log sigmoid) | cpl
    beta: float = 100.0
    min_snr_gamma: float = 0.0      # > 0: beta *= min(gamma / SNR(t), 1)
    sft_weight: float = 0.0         # weight of the SFT term on "equal" pairs
    reward_timestep_frac: float = 0.1   # implicit reward: t ~ U{0 .. frac*T - 1}
    train_timestep_frac: float = 1.0    # DPO training: t ~ U{0 .. frac*T - 1} (DeformPAM: 1, all of them)
    reward_samples: int = 10        # M Monte-Carlo samples per candidate
    num_candidates: int = 8         # N candidates per decision (RAS)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    stage: str = "supervised"       # supervised | dpo | reward
    steps: int = 1000
    noise_replicas: int = 8         # K: each action is replicated with independent noise
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    run_dir: str = "runs/default"
    num_devices: int = 0            # 0 = all local devices


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    preference: PreferenceConfig = PreferenceConfig()


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict, cls=Config):
    """Inverse of `to_dict`; unknown keys are an error (a checkpoint from another version)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        typ = hints[k]
        kwargs[k] = from_dict(v, typ) if dataclasses.is_dataclass(typ) else v
    return cls(**kwargs)


def _all_keys(cfg, prefix="") -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += _all_keys(v, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _coerce(raw: str, current, key: str):
    if isinstance(current, bool):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}: expected a boolean, got {raw!r}")
    for typ in (int, float):
        if isinstance(current, typ):
            try:
                return typ(raw)
            except ValueError:
                raise ValueError(f"--set {key}: expected {typ.__name__}, got {raw!r}") from None
    if isinstance(current, str):
        return raw
    return json.loads(raw)


def override(cfg: Config, assignments: typing.Iterable[str]) -> Config:
    """Apply ``key=value`` overrides with dotted keys; a mistyped key suggests the nearest one."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        valid = _all_keys(cfg)
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown config key {key!r}{hint}")
        cfg = _replace_path(cfg, key.split("."), raw, key)
    return cfg


def _replace_path(obj, parts, raw, key):
    head = parts[0]
    if len(parts) == 1:
        return dataclasses.replace(obj, **{head: _coerce(raw, getattr(obj, head), key)})
    return dataclasses.replace(obj, **{head: _replace_path(getattr(obj, head), parts[1:], raw, key)})


EXPERIMENTS_PACKAGE = "pam_jax.experiments"


def experiment_names() -> list[str]:
    """The packaged experiments (files of ``experiments/``, installed as ``pam_jax.experiments``)."""
    folder = pathlib.Path(importlib.util.find_spec(EXPERIMENTS_PACKAGE).origin).parent   # located, not imported
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def _import_experiment(spec: str):
    """A file path (``experiments/my_rope.py``, a fork) or a packaged name (``toy_bimodal``)."""
    path = pathlib.Path(spec)
    if path.suffix == ".py" or path.is_file() or "/" in spec or "\\" in spec:
        if not path.is_file():
            raise FileNotFoundError(f"experiment file not found: {path}")
        mod_spec = importlib.util.spec_from_file_location(f"pam_experiment_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        where = str(path)
    else:
        names = experiment_names()
        if spec not in names:
            near = difflib.get_close_matches(spec, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (packaged: {', '.join(names)})"
            raise FileNotFoundError(f"no experiment named {spec!r}{hint}")
        module = importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{spec}")
        return module, module.__file__
    try:
        mod_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"{where}:{e.lineno}: syntax error in the experiment file ({e.msg})") from None
    return module, where


def load_experiment(spec: str | pathlib.Path) -> Config:
    """An experiment's config: a packaged name (``toy_bimodal``) or a file path, which defines
    ``get_config()``. ``NAME:variant`` calls ``get_config("variant")`` (e.g. the ``dpo`` stage)."""
    spec, _, variant = str(spec).partition(":")
    module, where = _import_experiment(spec)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{where}: an experiment file must define get_config()")
    params = inspect.signature(module.get_config).parameters
    if variant and not params:
        raise ValueError(f"{where}: this experiment has no variants (got ':{variant}')")
    cfg = module.get_config(variant) if variant else module.get_config()
    if not isinstance(cfg, Config):
        raise ValueError(f"{where}: get_config() must return pam_jax.config.Config, got {type(cfg).__name__}")
    return cfg

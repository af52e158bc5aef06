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
    grad_clip: float = 1.0          # global-norm clipping; 0 = no clipping (DeformPAM's DPO)
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
    reward_samples: int = 10        # M Monte-Carlo samples per candidate (the paper tests with 100)
    reward_noise: str = "shared_t"  # implicit reward: shared_t (paper) | crn | independent (select.REWARD_NOISE)
    num_candidates: int = 8         # N candidates per decision (RAS)
    # DPO noise: per_pair (paper: fresh eps for each action of each pair) | per_candidate (one eps
    # per candidate, reused by every pair it is in); the reference always gets the same t and eps
    pair_noise: str = "per_pair"
    # train on the pairs that name the annotator's own action (True, the paper's) or only on
    # the comparisons among the sampled candidates, which is all that selection uses (False)
    annotator_pairs: bool = True
    # explicit reward model (train.stage=reward): backbone "fresh" (the paper's baseline) or "sl"
    # (the supervised policy's weights); head "linear" (the paper's) or "mlp". The defaults are
    # those of runs made before these options existed; the experiments name the paper's.
    reward_init: str = "sl"
    reward_head: str = "mlp"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    stage: str = "supervised"       # supervised | dpo | reward
    steps: int = 1000
    epochs: float = 0.0             # > 0: steps = ceil(epochs * records / batch_size), set when the data opens
    noise_replicas: int = 8         # K: each action is replicated with independent noise
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    run_dir: str = "runs/default"
    num_devices: int = 0            # 0 = all local devices
    compute_dtype: str = "float32"  # float32 | bfloat16: the networks' arithmetic (parameters stay float32)
    tracker: str = "jsonl"          # jsonl | tensorboard | wandb (metrics.jsonl is always written)
    wandb_project: str = ""         # tracker=wandb: the project; "" = $WANDB_PROJECT, else "pam_jax"
    wandb_entity: str = ""          # tracker=wandb: the entity (user or team); "" = $WANDB_ENTITY, else wandb's default
    eval_every: int = 0             # validation loss every N steps on the validation split; 0 = off
    eval_batches: int = 4           # batches of each validation pass
    # early stopping: stop (with a checkpoint) after this many validation passes in a row without
    # a new lowest val_loss; 0 = off (needs eval_every)
    early_stop_patience: int = 0


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Which kernel forms the graphs are traced with, per machine. Every form computes the same
    function (FPS and kNN: the same indices; the rest up to float rounding), so this section is
    not part of the model: runs that differ only here share checkpoints, and a preference run
    may fine-tune a supervised run made with other forms. "auto" picks per backend."""

    fps: str = "auto"           # auto | rows | argmax | pallas (auto: rows on CPU, pallas on accelerators)
    knn: str = "auto"           # auto | top_k | pallas (auto: top_k on CPU, pallas on accelerators)
    pad: str = "auto"           # auto | on | off: the denoiser's matrices zero-padded (auto: on accelerators)
    small_attention: int = 4    # self-attention among up to this many tokens written out elementwise; 0: matmuls
    # forms never timed on a GPU, kept outside the package (benchmarks/experimental/fused.py); off
    fused: str = "off"          # off | on | chain: the fused Pallas denoiser
    stack_models: bool = False  # implicit selection: both networks encoded and scored in one batched pass
    fused_rows: int = 0         # rows per program of the fused kernels (a power of two >= 16); 0: from N
    fused_warps: int = 4        # Triton warps per program of the fused kernels (a power of two)

    @property
    def experimental(self) -> bool:
        """Whether a form of benchmarks/experimental is asked for."""
        return self.fused != "off" or self.stack_models


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    preference: PreferenceConfig = PreferenceConfig()
    runtime: RuntimeConfig = RuntimeConfig()


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
    cfg = validate(cfg)
    # a warm-up asked for explicitly must fit the run (a shorter run than the experiment's, e.g. a
    # smoke test, shortens the experiment's warm-up instead: see warmup_note)
    if any(item.split("=", 1)[0].strip() == "optim.warmup_steps" for item in assignments) \
            and cfg.train.epochs == 0 and cfg.optim.warmup_steps > cfg.train.steps:
        raise ValueError(f"optim.warmup_steps={cfg.optim.warmup_steps} must be <= train.steps={cfg.train.steps} "
                         "(the learning rate would never leave its warm-up)")
    return cfg


def warmup_note(cfg: Config) -> str | None:
    """One line when the run is shorter than its warm-up (the schedule then warms up over
    train.steps - 1 steps), else None."""
    if cfg.optim.warmup_steps > cfg.train.steps:
        return (f"note: optim.warmup_steps={cfg.optim.warmup_steps} is more than train.steps={cfg.train.steps}: "
                f"the learning rate warms up over {max(cfg.train.steps - 1, 0)} steps instead")
    return None


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
    except Exception as e:  # noqa: BLE001 - any error of the user's file: one line with its place
        raise ValueError(_located(e, where, "while loading the experiment file")) from None
    return module, where


def _located(e: BaseException, where: str, doing: str) -> str:
    """'file:line: Error: message' for an exception raised by an experiment file (the deepest
    frame in the folder of `where`, e.g. a shared builder beside it)."""
    import traceback

    folder = pathlib.Path(where).resolve().parent
    place = where
    for frame in traceback.extract_tb(e.__traceback__):
        if pathlib.Path(frame.filename).resolve().parent == folder:
            place = f"{frame.filename}:{frame.lineno}"
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return f"{place}: {msg} ({doing})"


def load_experiment(spec: str | pathlib.Path) -> Config:
    """An experiment's config: a packaged name (``toy_bimodal``) or a file path, which defines
    ``get_config()``. ``NAME:variant`` calls ``get_config("variant")`` (e.g. the ``dpo`` stage)."""
    spec, _, variant = str(spec).partition(":")
    module, where = _import_experiment(spec)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{where}: an experiment file must define get_config()")
    params = inspect.signature(module.get_config).parameters
    if variant and not params:
        line = module.get_config.__code__.co_firstlineno
        raise ValueError(f"{where}:{line}: this experiment has no variants: get_config() takes no argument "
                         f"(got ':{variant}')")
    call = f"get_config({variant!r})" if variant else "get_config()"
    try:
        cfg = module.get_config(variant) if variant else module.get_config()
    except Exception as e:  # noqa: BLE001 - an unknown variant, a bug in the file: one located line
        raise ValueError(_located(e, where, f"in {call} of {where}")) from None
    if not isinstance(cfg, Config):
        raise ValueError(f"{where}: get_config() must return pam_jax.config.Config, got {type(cfg).__name__}")
    try:
        return validate(cfg)
    except ValueError as e:
        raise ValueError(f"{where}: {call}: {e}") from None


# --------------------------------------------------------------------------- validation
#
# Every numeric field has a range and every enum field its choices; `validate` runs when an
# experiment is loaded, after `--set` overrides, and when training starts, so a bad value is one
# line naming the field before any work. The enum tuples of higher layers are repeated here (a
# core module cannot import them); tests/test_config.py checks that the two copies agree.

DATA_SOURCES = ("toy_bimodal", "toy_preference", "tfds")
TRAIN_STAGES = ("supervised", "dpo", "reward")


class Range(typing.NamedTuple):
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False       # True: lo itself is excluded
    hi_open: bool = False

    def contains(self, v) -> bool:
        if v != v:              # NaN
            return False
        lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        hi_ok = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return lo_ok and hi_ok

    def describe(self, integer: bool) -> str:
        kind = "an integer " if integer else ""
        if self.lo is not None and self.hi is not None:
            return (f"{kind}in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{kind}{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{kind}{'<' if self.hi_open else '<='} {self.hi:g}"


RANGES: dict[str, Range] = {
    "model.num_tokens": Range(1), "model.knn": Range(1), "model.encoder_layers": Range(0),
    "model.width": Range(6), "model.layers": Range(1), "model.heads": Range(1), "model.mlp_ratio": Range(1),
    "model.action_points": Range(1), "model.rotary_max_freq": Range(0, lo_open=True),
    "diffusion.num_train_timesteps": Range(1), "diffusion.num_inference_steps": Range(1),
    "diffusion.eta": Range(0, 1),
    "data.num_points": Range(0), "data.batch_size": Range(1), "data.max_poses": Range(1), "data.seed": Range(0),
    "data.num_states": Range(1), "data.label_noise": Range(0, 1),
    "optim.lr": Range(0, 1), "optim.warmup_steps": Range(0), "optim.b1": Range(0, 1, hi_open=True),
    "optim.b2": Range(0, 1, hi_open=True), "optim.weight_decay": Range(0), "optim.grad_clip": Range(0),
    "optim.ema_decay": Range(0, 1, hi_open=True),
    "preference.init_step": Range(-1), "preference.beta": Range(0, lo_open=True),
    "preference.min_snr_gamma": Range(0), "preference.sft_weight": Range(0),
    "preference.reward_timestep_frac": Range(0, 1, lo_open=True),
    "preference.train_timestep_frac": Range(0, 1, lo_open=True),
    "preference.reward_samples": Range(1), "preference.num_candidates": Range(1),
    "train.steps": Range(1), "train.epochs": Range(0), "train.noise_replicas": Range(1), "train.seed": Range(0),
    "train.log_every": Range(1), "train.checkpoint_every": Range(1), "train.keep_checkpoints": Range(1),
    "train.num_devices": Range(0), "train.eval_every": Range(0), "train.eval_batches": Range(1), "train.early_stop_patience": Range(0),
    "runtime.small_attention": Range(0), "runtime.fused_rows": Range(0), "runtime.fused_warps": Range(1, 32),
}

# free-text fields: paths and names (must not be empty where marked True)
FREE_TEXT = {"name": True, "data.data_dir": False, "data.dataset": False, "data.split": True,
             "preference.init_from": False, "train.run_dir": True,
             "train.wandb_project": False, "train.wandb_entity": False}


def choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every enum field."""
    from pam_jax import diffusion, preference, tasks

    return {
        "diffusion.beta_schedule": diffusion.BETA_SCHEDULES,
        "data.source": DATA_SOURCES,
        "data.task": ("", *tasks.TASKS),
        "preference.loss": preference.LOSSES,
        "preference.reward_noise": ("shared_t", "crn", "independent"),   # select.REWARD_NOISE
        "preference.pair_noise": ("per_pair", "per_candidate"),          # train.preference_steps.PAIR_NOISE
        "preference.reward_init": ("fresh", "sl"),                       # models.reward.INITS
        "preference.reward_head": ("linear", "mlp"),                     # models.reward.HEADS
        "train.stage": TRAIN_STAGES,
        "train.compute_dtype": ("float32", "bfloat16"),                # select.COMPUTE_DTYPES
        "train.tracker": ("jsonl", "tensorboard", "wandb"),            # train.tracking.TRACKERS
        "runtime.fps": ("auto", "rows", "argmax", "pallas"),           # models.geometry.FPS_METHODS
        "runtime.knn": ("auto", "top_k", "pallas"),                    # models.geometry.KNN_METHODS
        "runtime.pad": ("auto", "on", "off"),
        "runtime.fused": ("off", "on", "chain"),
    }


def _fields(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _fields(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, v, type(cfg), f.name


def validate(cfg: Config) -> Config:
    """`cfg` if every field is in its range or choices; else a one-line ValueError naming the
    first bad field and what it allows."""
    hints = {}
    enum = choices()
    for key, v, cls, name in _fields(cfg):
        typ = hints.setdefault(cls, typing.get_type_hints(cls))[name]
        if typ is bool:
            if not isinstance(v, bool):
                raise ValueError(f"{key} must be true or false, got {v!r}")
        elif typ in (int, float):
            integer = typ is int
            if isinstance(v, bool) or not isinstance(v, (int,) if integer else (int, float)):
                raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
            rng = RANGES.get(key)
            if rng is None:
                raise ValueError(f"{key}: no allowed range is declared (add it to config.RANGES)")
            if not rng.contains(v):
                raise ValueError(f"{key} must be {rng.describe(integer)}, got {v!r}")
        elif typ is str:
            if not isinstance(v, str):
                raise ValueError(f"{key} must be a string, got {v!r}")
            if key in enum:
                if v not in enum[key]:
                    raise ValueError(f"{key} must be one of {', '.join(map(repr, enum[key]))}, got {v!r}")
            elif key not in FREE_TEXT:
                raise ValueError(f"{key}: no allowed values are declared (add it to config.choices or FREE_TEXT)")
            elif FREE_TEXT[key] and not v.strip():
                raise ValueError(f"{key} must not be empty")
    rt = cfg.runtime
    for key, v, least in (("runtime.fused_rows", rt.fused_rows, 16), ("runtime.fused_warps", rt.fused_warps, 1)):
        if v and (v < least or v & (v - 1)):
            raise ValueError(f"{key} must be a power of two >= {least}"
                             f"{' (or 0: chosen from N)' if least == 16 else ''}, got {v!r}")
    m, d, data = cfg.model, cfg.diffusion, cfg.data
    if m.width % m.heads or m.width // m.heads < 6:
        raise ValueError(f"model.width={m.width} must be a multiple of model.heads={m.heads} with at least 6 "
                         "channels per head (the 3D rotary encoding)")
    if d.num_inference_steps > d.num_train_timesteps:
        raise ValueError(f"diffusion.num_inference_steps={d.num_inference_steps} must be <= "
                         f"diffusion.num_train_timesteps={d.num_train_timesteps}")
    if cfg.train.early_stop_patience and not cfg.train.eval_every:
        raise ValueError(f"train.early_stop_patience={cfg.train.early_stop_patience} needs train.eval_every > 0 "
                         "(the validation loss it watches)")
    if data.num_points and data.num_points < max(m.num_tokens, m.knn):
        raise ValueError(f"data.num_points={data.num_points} must be >= model.num_tokens={m.num_tokens} and "
                         f"model.knn={m.knn} (the encoder groups that many points)")
    return cfg


def validate_runtime(rt: RuntimeConfig) -> RuntimeConfig:
    """`rt` if every runtime field is allowed (:func:`validate`'s checks), else a one-line ValueError."""
    if not isinstance(rt, RuntimeConfig):
        raise TypeError(f"runtime: expected a RuntimeConfig, got {type(rt).__name__}")
    validate(Config(runtime=rt))
    return rt

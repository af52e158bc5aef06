"""Best-of-N sampling with reward-guided action selection (RAS) as ONE compiled graph.

    select(ref_params, score_params, points, key) -> Selection

in a single `jax.jit`, with no host round trips and no host callbacks:
  1. group each cloud once (FPS centroids + kNN neighbourhoods, shared by every model), encode it
     once per model (the point encoder, and the per-layer cross-attention keys with their rotary
     encoding and values, and the attention matrices in the layout the loops read), and compute
     each model's timestep conditioning (embedding, MLP, every AdaLN shift/scale/gate) for all
     timesteps once, outside the loops;
  2. sample N candidates from the reference (supervised) model: DDIM in one `lax.scan`; the
     cached keys/values serve every candidate and every step (only the queries change);
  3. score all N candidates: implicit reward r = -beta * mean_M [e_theta - e_ref] with
     t ~ U{0 .. frac*T - 1} and M Monte-Carlo samples (scanned in chunks, both models, the
     cached encodings reused), or the explicit reward head, or no selection (first / random).
     As in the paper's code, each Monte-Carlo sample draws ONE t shared by the N candidates of
     an observation (and both models), eps per candidate (`reward_noise`, see REWARD_NOISE);
  4. argmax, and map the chosen action back to the raw frame.
Batched over B observations; on a mesh it shards the observations or the candidates.

Step 1's parameter-only half (the conditioning tables, the attention matrices' layout, the
compute-dtype copies) can be made once per parameters (`Selector.prepare`) and reused by every
decision (`Selector.decide`); the four-argument call does both in one graph.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pam_jax import diffusion, preference
from pam_jax.config import Config, DiffusionConfig, RuntimeConfig
from pam_jax.models import kernels
from pam_jax.models.denoiser import Context
from pam_jax.models.policy import cast_params, noise_errors, normalize, unnormalize
from pam_jax.normalize import NormStats
from pam_jax.pointcloud import CLOUD_RANGE_FACTOR, check_batch_shape, check_clouds, check_points  # noqa: F401

MODES = ("implicit", "explicit", "first", "random", "custom")
# How the implicit reward's Monte-Carlo noise is drawn (the reference model always gets the same
# t and eps as the policy):
#   shared_t     one t per MC sample shared by the N candidates of an observation, eps per
#                candidate (the paper's code: candidates are compared at the same noise level);
#   crn          common random numbers: the same t AND the same eps for every candidate;
#   independent  t and eps drawn per candidate and MC sample (pam_jax's earlier estimator).
REWARD_NOISE = ("shared_t", "crn", "independent")
SNAP_RULES = ("none", "nearest", "mean200")   # pam_jax.tasks.SNAP_RULES
SNAP_NEIGHBOURS = 200   # the rope rule's neighbourhood (the published code's 200 points)
CHUNK_BUDGET = 4096  # candidates (x MC samples) scored per scan iteration
# "bfloat16": the networks run on bfloat16 copies of the parameters (made inside the graph; the
# parameters passed in stay float32); geometry, rotary angles, softmax, DDIM updates, noise
# errors and rewards stay float32
COMPUTE_DTYPES = ("float32", "bfloat16")
# The runtime config's forms never timed on a GPU (runtime.fused, runtime.stack_models) are not
# part of the package: benchmarks/experimental/fused.py builds their selector and appends its
# builder here when imported (the same arguments as make_selector).
EXPERIMENTAL: list[Callable] = []


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    mode: str = "implicit"
    num_candidates: int = 8
    num_inference_steps: int = 100
    eta: float = 0.0
    reward_samples: int = 10            # M
    reward_timestep_frac: float = 0.1   # t ~ U{0 .. frac*T - 1}
    beta: float = 100.0
    reward_noise: str = "shared_t"      # REWARD_NOISE
    unroll: int = 1                     # DDIM steps per iteration of the sampling loop
    compute_dtype: str = "float32"      # COMPUTE_DTYPES: the networks' arithmetic (parameters stay float32)
    # pick snapping (the published nearest-pick override), applied after scoring to what is
    # executed: `snap` is a rule of pam_jax.tasks.SNAP_RULES (the task's `snap`), `snap_rows` the
    # action rows it moves (the task's grasp rows). The candidates are scored as sampled.
    snap: str = "none"
    snap_rows: tuple = ()
    runtime: RuntimeConfig = RuntimeConfig()   # the kernel forms the graphs are traced with
    snap_neighbours: int = SNAP_NEIGHBOURS   # the "mean200" rule's neighbourhood size

    @classmethod
    def from_config(cls, sl_cfg: Config, score_cfg: Config | None = None, **overrides) -> "SelectConfig":
        """The settings a pair of trained runs implies: sampling (steps, eta) from the SL run's
        diffusion config; N, M, the reward timesteps and noise, and beta from the scoring run's preference
        config (the DPO run: the beta it was trained with), else from the SL run's; the kernel
        forms from the same run's runtime section. `overrides` (e.g. ``mode="first"``,
        ``reward_samples=100``) win."""
        p = (score_cfg or sl_cfg).preference
        kw = dict(num_candidates=p.num_candidates, num_inference_steps=sl_cfg.diffusion.num_inference_steps,
                  eta=sl_cfg.diffusion.eta, reward_samples=p.reward_samples,
                  reward_timestep_frac=p.reward_timestep_frac, beta=p.beta, reward_noise=p.reward_noise,
                  runtime=(score_cfg or sl_cfg).runtime)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


class Selection(NamedTuple):
    action: jax.Array       # (B, A, 3) the chosen action as executed (snapped), raw frame
    index: jax.Array        # (B,) its candidate index
    candidates: jax.Array   # (B, N, A, 3) raw frame, as sampled (what was scored)
    scores: jax.Array       # (B, N)
    executed: Any = None    # (B, N, A, 3) every candidate as it would be executed (snapped), raw frame


def snap_to_cloud(actions, points, rows) -> jax.Array:
    """actions (B, N, A, 3), points (B, Np, 3), both in the same frame -> actions with each row in
    `rows` replaced by the cloud point nearest to it in xy (the first such point on ties)."""
    if not rows:
        return actions
    rows = jnp.asarray(tuple(rows))
    picks = actions[:, :, rows]                                             # (B, N, R, 3)
    d2 = jnp.sum((picks[..., None, :2] - points[:, None, None, :, :2]) ** 2, axis=-1)   # (B, N, R, Np)
    nearest = jnp.argmin(d2, axis=-1)
    snapped = jax.vmap(lambda p, i: p[i])(points, nearest)                  # (B, N, R, 3)
    return actions.at[:, :, rows].set(snapped.astype(actions.dtype))


def snap_to_neighbourhood(actions, points, rows, k: int = SNAP_NEIGHBOURS) -> jax.Array:
    """actions (B, N, A, 3), points (B, Np, 3) -> actions with each row in `rows` given, in xy,
    the mean xy of the `k` cloud points nearest in xy to the cloud point nearest (in xy) to it
    (all of them when the cloud has fewer); its z is kept."""
    if not rows:
        return actions
    rows = tuple(int(r) for r in rows)
    k = min(int(k), points.shape[1])
    anchor = snap_to_cloud(actions, points, rows)[:, :, jnp.asarray(rows)]   # (B, N, R, 3)
    rows = jnp.asarray(rows)
    d2 = jnp.sum((anchor[..., None, :2] - points[:, None, None, :, :2]) ** 2, axis=-1)   # (B, N, R, Np)
    _, near = jax.lax.top_k(-d2, k)                                         # (B, N, R, k)
    xy = jax.vmap(lambda p, i: p[i, :2])(points, near).mean(axis=-2)        # (B, N, R, 2)
    return actions.at[:, :, rows, :2].set(xy.astype(actions.dtype))


def snap_action(actions, points, rule: str, rows, k: int = SNAP_NEIGHBOURS) -> jax.Array:
    """The pick-snapping rule `rule` (SNAP_RULES) applied to the rows `rows` of actions
    (B, N, A, 3) on clouds points (B, Np, 3) in the same frame."""
    if rule not in SNAP_RULES:
        raise ValueError(f"unknown snap rule {rule!r}: expected one of {SNAP_RULES}")
    if rule == "nearest":
        return snap_to_cloud(actions, points, rows)
    if rule == "mean200":
        return snap_to_neighbourhood(actions, points, rows, k)
    return actions


def task_snap(task: str, enabled: bool = True) -> dict:
    """The SelectConfig fields of a task's pick snapping: {"snap", "snap_rows"} from the task
    registry (its rule) and its simulator's grasp rows; ``enabled=False`` or a task without a
    rule gives no snapping."""
    from pam_jax import tasks as tasks_lib
    from pam_jax.sim import task_class

    spec = tasks_lib.get_task(task)
    if not enabled or spec.snap == "none":
        return {"snap": "none", "snap_rows": ()}
    rows = tuple(task_class(spec.sim).pick_rows) if spec.sim else (0,)
    return {"snap": spec.snap, "snap_rows": rows}


def _chunk(m: int, per_sample: int) -> int:
    """Largest divisor of m whose chunk keeps m_chunk * per_sample <= CHUNK_BUDGET (at least 1)."""
    best = 1
    for c in range(1, m + 1):
        if m % c == 0 and c * per_sample <= CHUNK_BUDGET:
            best = c
    return best


def implicit_scores(policy, ctx_pol, ref, ctx_ref, schedule, x0, key, *, samples: int,
                    t_max: int, beta: float, noise: str = "shared_t"):
    """-beta * mean over M of [e_theta - e_ref] for candidates x0 (B, N, A, 3) -> (B, N).

    `noise` (REWARD_NOISE) says which draws the N candidates of an observation share within one
    Monte-Carlo sample: the timestep ("shared_t"), the timestep and eps ("crn"), or none."""

    def difference(xs, t, eps):
        return noise_errors(policy, ctx_pol, schedule, xs, t, eps) - noise_errors(ref, ctx_ref, schedule, xs, t, eps)

    return _monte_carlo(difference, x0, key, samples=samples, t_max=t_max, beta=beta, noise=noise)


def _monte_carlo(difference: Callable, x0, key, *, samples: int, t_max: int, beta: float, noise: str):
    """-beta * mean over M samples of difference(x_0 copies, t, eps) (B, N*C) -> (B, N)."""
    if noise not in REWARD_NOISE:
        raise ValueError(f"unknown reward_noise {noise!r}: expected one of {REWARD_NOISE}")
    b, n = x0.shape[:2]
    c = _chunk(samples, b * n)
    act = x0.shape[2:]
    xs = jnp.broadcast_to(x0[:, :, None], (b, n, c, *act)).reshape(b, n * c, *act)
    n_t = n if noise == "independent" else 1      # candidates with their own t
    n_eps = 1 if noise == "crn" else n            # candidates with their own eps

    def body(total, k):
        k_t, k_eps = jax.random.split(k)
        # laid out (B, N, C): candidate i, MC sample j of this chunk at i * C + j
        t = jnp.broadcast_to(jax.random.randint(k_t, (b, n_t, c), 0, t_max), (b, n, c)).reshape(b, n * c)
        eps = jax.random.normal(k_eps, (b, n_eps, c, *act), xs.dtype)
        eps = jnp.broadcast_to(eps, (b, n, c, *act)).reshape(xs.shape)
        return total + jnp.sum(difference(xs, t, eps).reshape(b, n, c), axis=-1), None

    total, _ = jax.lax.scan(body, jnp.zeros((b, n), x0.dtype), jax.random.split(key, samples // c))
    return preference.implicit_reward(total[..., None] / samples, 0.0, beta)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a selector computes from the parameters alone (:meth:`Selector.prepare`): made once
    per parameters, then reused by every decision (:meth:`Selector.decide`)."""

    ref: Any                   # the reference (supervised) model's parameters, in the compute dtype
    ref_ctx: Context           # its parameter-only Context (DiffusionPolicy.prepare): kv empty
    # the scoring parameters (DPO policy, reward model, custom) or None, and the DPO policy's /
    # reward model's parameter-only Context or None
    score: Any
    score_ctx: Context | None
    # which selector it was made for (mode, DDIM steps, Monte-Carlo timesteps, compute dtype):
    # a Prepared of another selector fails with one line instead of reading the wrong rows of a
    # table
    signature: tuple = dataclasses.field(metadata=dict(static=True))


def host_checked(points, norm: NormStats):
    """A batch of clouds checked on the host (:func:`pam_jax.pointcloud.check_clouds`: shape,
    finite, plausible range) before it enters a compiled graph. Inside a trace (the caller jits
    a function that calls the selector) only the shape and dtype can be checked: the values are
    the outer caller's to check. (Reading an array that is on a device is a transfer: a caller
    that must not make one checks on the host itself and makes the selector with checked=False.)"""
    if isinstance(points, jax.core.Tracer):
        check_batch_shape(points.shape, points.dtype)
        return points
    pts = check_clouds(points, norm)
    # an array already on the devices in float32 goes in as it is (its placement kept)
    return points if isinstance(points, jax.Array) and points.dtype == np.float32 else pts


class _Checked:
    """A jitted function whose last two arguments are (clouds, key), behind :func:`host_checked`;
    its other attributes (lower, trace, eval_shape, ...) are the jitted function's."""

    def __init__(self, fn: Callable, norm: NormStats):
        self._fn, self._norm = fn, norm

    def __call__(self, *args):
        *head, points, key = args
        return self._fn(*head, host_checked(points, self._norm), key)

    def __getattr__(self, name):
        return getattr(self.__dict__["_fn"], name)


class Selector:
    """The selector of :func:`make_selector`, three jitted entry points:

        select(ref_params, score_params, points, key) -> Selection    one graph, from parameters
        select.prepare(ref_params, score_params) -> Prepared          parameter-only work
        select.decide(prepared, points, key) -> Selection             one decision

    `decide(prepare(r, s), p, k)` is `select(r, s, p, k)`. The parameter-only work (the timestep
    conditioning tables of every DDIM and Monte-Carlo timestep, the attention matrices in the
    layout the loops read, the compute-dtype copies) does not depend on the observation, so a
    controller prepares once per parameters and then pays only for the decision.

    Made with ``checked=True`` (the default), `select` and `decide` check their clouds on the
    host first (shape, finite, plausible range; :func:`host_checked`) and fail with one line."""

    def __init__(self, select: Callable, prepare: Callable, decide: Callable, norm: NormStats | None = None):
        if norm is not None:
            select, decide = _Checked(select, norm), _Checked(decide, norm)
        self._select, self.prepare, self.decide = select, prepare, decide

    def __call__(self, ref_params, score_params, points, key) -> Selection:
        return self._select(ref_params, score_params, points, key)

    def __getattr__(self, name):   # lower, trace, eval_shape, ...: those of the one graph
        return getattr(self.__dict__["_select"], name)


def make_selector(graphdef, diff: DiffusionConfig, norm: NormStats, scfg: SelectConfig, *,
                  score_graphdef=None, scorer: Callable | None = None, mesh=None,
                  shard: str = "obs", checked: bool = True) -> Selector:
    """-> the Selector: jitted select(ref_params, score_params, points (B, Np, 3), key) ->
    Selection, and its two halves (`prepare`, `decide`).

    `score_params`: the DPO policy (implicit), the reward model (explicit, with `score_graphdef`),
    or None (first / random). Mode "custom" traces `scorer(score_params, points, candidates)
    -> (B, N)` (raw frame) into the same graph. `mesh` with `shard` = "obs" | "candidates"
    spreads the work. `checked=False` skips the host checks of the clouds (for a caller that
    checks them itself).
    """
    if scfg.mode not in MODES:
        raise ValueError(f"unknown selection mode {scfg.mode!r}: expected one of {MODES}")
    if scfg.mode == "explicit" and score_graphdef is None:
        raise ValueError("explicit-reward selection needs score_graphdef (the reward model)")
    if scfg.mode == "custom" and scorer is None:
        raise ValueError("custom selection needs scorer(score_params, points, candidates) -> (B, N)")
    if scfg.reward_noise not in REWARD_NOISE:
        raise ValueError(f"unknown reward_noise {scfg.reward_noise!r}: expected one of {REWARD_NOISE}")
    if scfg.snap not in SNAP_RULES:
        raise ValueError(f"unknown snap rule {scfg.snap!r}: expected one of {SNAP_RULES}")
    if scfg.snap != "none" and not scfg.snap_rows:
        raise ValueError(f"snap rule {scfg.snap!r} needs snap_rows (the action rows it moves)")
    if shard not in ("obs", "candidates"):
        raise ValueError(f"shard must be 'obs' or 'candidates', got {shard!r}")
    if scfg.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute_dtype {scfg.compute_dtype!r}: expected one of {COMPUTE_DTYPES}")
    if not (isinstance(scfg.unroll, int) and scfg.unroll >= 1):
        raise ValueError(f"unroll must be an integer >= 1, got {scfg.unroll!r}")
    kernels.validate_runtime(scfg.runtime)
    if scfg.runtime.experimental:
        if not EXPERIMENTAL:
            raise ValueError(f"runtime.fused={scfg.runtime.fused!r}, runtime.stack_models={scfg.runtime.stack_models}: "
                             "experimental forms, not part of the package (import benchmarks.experimental.fused)")
        return EXPERIMENTAL[-1](graphdef, diff, norm, scfg, score_graphdef=score_graphdef, scorer=scorer,
                                mesh=mesh, shard=shard)
    schedule = diffusion.schedule_from_config(diff)
    cast = lambda p: cast_params(p, scfg.compute_dtype)  # noqa: E731
    t_max = diffusion.timestep_limit(scfg.reward_timestep_frac, diff.num_train_timesteps)
    T = diff.num_train_timesteps
    # the timesteps each model's conditioning table needs: the DDIM steps (reference) and the
    # Monte-Carlo timesteps 0 .. t_max-1 (both models, implicit reward)
    mc_steps = np.arange(t_max)
    ref_steps = diffusion.ddim_timesteps(T, scfg.num_inference_steps)
    if scfg.mode == "implicit":
        ref_steps = np.union1d(ref_steps, mc_steps)
    center, scale = np.asarray(norm.center, np.float32), np.asarray(norm.scale, np.float32)
    n = scfg.num_candidates

    signature = (scfg.mode, scfg.num_inference_steps, t_max, scfg.compute_dtype)

    def constrain(x):
        if mesh is None or shard != "candidates":
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, "data")))

    def prepare(ref_params, score_params) -> Prepared:
        ref_params = cast(ref_params)
        ref_ctx = nnx.merge(graphdef, ref_params).prepare(num_timesteps=T, timesteps=ref_steps)
        score, score_ctx = score_params, None
        if scfg.mode == "implicit":
            score = cast(score_params)
            score_ctx = nnx.merge(graphdef, score).prepare(num_timesteps=T, timesteps=mc_steps)
        elif scfg.mode == "explicit":
            score = cast(score_params)   # the reward model reads t = 0 only: a one-row table
            score_ctx = nnx.merge(score_graphdef, score).policy.prepare(num_timesteps=1)
        return Prepared(ref_params, ref_ctx, score, score_ctx, signature)

    def decide(prep: Prepared, points, key) -> Selection:
        if not isinstance(prep, Prepared):
            raise TypeError(f"decide: expected the Prepared of this selector's prepare(), got {type(prep).__name__}")
        if prep.signature != signature:
            raise ValueError(f"decide: prepared for another selector (mode, steps, MC timesteps, dtype) "
                             f"{prep.signature}, this one is {signature}: prepare it again")
        k_init, k_loop, k_score = jax.random.split(key, 3)
        pts = normalize(points, center, scale)
        ref = nnx.merge(graphdef, prep.ref)
        # the geometry (FPS + kNN) depends on the cloud only: once per observation, for every model
        groups = ref.group(pts)
        ctx_ref = ref.encode(pts, groups, prepared=prep.ref_ctx)
        x_T = constrain(jax.random.normal(k_init, (pts.shape[0], n, 2, 3), pts.dtype))
        loop = dict(num_inference_steps=scfg.num_inference_steps, eta=scfg.eta, clip_sample=diff.clip_sample,
                    unroll=scfg.unroll)
        x0 = diffusion.sample(lambda x, t: constrain(ref.denoise(x, t, ctx_ref)), schedule, x_T, k_loop, **loop)
        mc = dict(samples=scfg.reward_samples, t_max=t_max, beta=scfg.beta, noise=scfg.reward_noise)
        if scfg.mode == "implicit":
            policy = nnx.merge(graphdef, prep.score)
            ctx_pol = policy.encode(pts, groups, prepared=prep.score_ctx)
            scores = implicit_scores(policy, ctx_pol, ref, ctx_ref, schedule, x0, k_score, **mc)
        elif scfg.mode == "explicit":
            rm = nnx.merge(score_graphdef, prep.score)
            shared = rm.policy.encoder.grouping == ref.encoder.grouping
            scores = rm.score(x0, rm.policy.encode(pts, groups if shared else None, prepared=prep.score_ctx))
        elif scfg.mode == "custom":
            scores = scorer(prep.score, points, unnormalize(x0, center, scale))
        elif scfg.mode == "first":
            scores = jnp.broadcast_to(-jnp.arange(n, dtype=x0.dtype), x0.shape[:2])
        else:
            scores = jax.random.uniform(k_score, x0.shape[:2])
        scores = scores.astype(jnp.float32)
        idx = jnp.argmax(scores, axis=-1)
        # the candidates were scored as sampled; what is executed has its grasp points snapped
        # onto the cloud (the published code's transform_output)
        raw = unnormalize(x0, center, scale)
        executed = snap_action(raw, points.astype(raw.dtype), scfg.snap, scfg.snap_rows, scfg.snap_neighbours)
        chosen = jnp.take_along_axis(executed, idx[:, None, None, None], axis=1)[:, 0]
        return Selection(chosen, idx, raw, scores, executed)

    def select(ref_params, score_params, points, key):
        return decide(prepare(ref_params, score_params), points, key)

    # traced with the runtime config's kernel forms
    select, prepare, decide = (kernels.traced(f, scfg.runtime) for f in (select, prepare, decide))
    check = norm if checked else None
    if mesh is None:
        return Selector(jax.jit(select), jax.jit(prepare), jax.jit(decide), check)
    repl = NamedSharding(mesh, P())
    obs = NamedSharding(mesh, P("data")) if shard == "obs" else repl
    return Selector(jax.jit(select, in_shardings=(repl, repl, obs, repl)),
                    jax.jit(prepare, in_shardings=(repl, repl), out_shardings=repl),
                    jax.jit(decide, in_shardings=(repl, obs, repl)), check)


def checked_selector(select: Callable, norm: NormStats, factor: float = CLOUD_RANGE_FACTOR) -> Callable:
    """`select` (a :class:`Selector`, or its `decide`: any function whose last two arguments are
    the clouds and the key) behind :func:`check_clouds`: a bad cloud fails on the host with one
    line before the compiled graph runs (which stays pure and jitted)."""

    def checked(*args):
        *head, points, key = args
        if isinstance(points, jax.core.Tracer):
            return select(*head, host_checked(points, norm), key)
        return select(*head, check_clouds(points, norm, factor), key)

    return checked


def select_with_host_scorer(select_first: Callable, points, key,
                            scorer: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Selection:
    """Candidates from a mode="first" selector, scored by host code (e.g. a simulator oracle).

    `select_first(points, key) -> Selection` (e.g. a mode="first" Selector's `decide` with its
    Prepared bound); `scorer(points (B, Np, 3), candidates (B, N, A, 3)) -> scores (B, N)`. This
    path leaves the graph on purpose: an oracle that runs physics cannot be traced.
    The scorer sees the candidates as they would be executed (snapped, ``Selection.executed``).
    """
    sel = select_first(points, key)
    cands = np.asarray(sel.candidates)
    executed = cands if sel.executed is None else np.asarray(sel.executed)
    scores = np.asarray(scorer(np.asarray(points), executed), np.float32)
    if scores.shape != cands.shape[:2]:
        raise ValueError(f"scorer: expected scores of shape {cands.shape[:2]}, got {scores.shape}")
    idx = np.argmax(scores, axis=-1)
    return Selection(executed[np.arange(len(idx)), idx], idx, cands, scores, executed)

"""Where one implicit-selection decision's time goes, part by part, at the reference
model size, 3000 points, K = 8, B = 1, on whatever device JAX uses:

    python benchmarks/decision_parts.py

Each part is jitted on its own and timed (median): the parameter-only work a Selector prepares
once (both models' conditioning tables and weight layouts, at 10/10), the grouping (FPS + kNN),
FPS alone, the point encoder with its cross-attention keys and values (one model), one DDIM step
of the K candidates, and one Monte-Carlo scoring pass over 10 x K rows (one model).
"""
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pam_jax import diffusion
from pam_jax.bench.compute import _reference_models, _timed
from pam_jax.config import DiffusionConfig, ModelConfig
from pam_jax.models import geometry
from pam_jax.models.policy import noise_errors

diff = DiffusionConfig()
T, K, M = diff.num_train_timesteps, 8, 10
g, ref, pol = _reference_models(ModelConfig())
model = lambda p: nnx.merge(g, p)  # noqa: E731
pts = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3000, 3)).astype(np.float32))
t_max = diffusion.timestep_limit(0.1, T)
mc_steps = np.arange(t_max)
ref_steps = np.union1d(diffusion.ddim_timesteps(T, 10), mc_steps)
schedule = diffusion.schedule_from_config(diff)

prepare = jax.jit(lambda a, b: (model(a).prepare(num_timesteps=T, timesteps=ref_steps),
                                model(b).prepare(num_timesteps=T, timesteps=mc_steps)))
prepared = prepare(ref, pol)[0]
group = jax.jit(lambda p, x: model(p).group(x))
groups = group(ref, pts)
fps = jax.jit(jax.vmap(lambda p: geometry.farthest_point_sample(p, ModelConfig().num_tokens)))
encode = jax.jit(lambda p, x, gr, c: model(p).encode(x, gr, prepared=c))
ctx = encode(ref, pts, groups, prepared)
x = jax.random.normal(jax.random.key(0), (1, K, 2, 3))
step = jax.jit(lambda p, x, c: model(p).denoise(x, jnp.int32(5), c))
xs = jax.random.normal(jax.random.key(1), (1, K * M, 2, 3))
ts = jnp.full((1, K * M), 3, jnp.int32)
score = jax.jit(lambda p, x, c: noise_errors(model(p), c, schedule, x, ts, x))

parts = [("parameter-only work, both models (prepared once)", lambda: prepare(ref, pol)),
         ("grouping: FPS + kNN", lambda: group(ref, pts)),
         ("FPS alone", lambda: fps(pts)),
         ("point encoder + keys/values, one model", lambda: encode(ref, pts, groups, prepared)),
         (f"one DDIM step, {K} candidates", lambda: step(ref, x, ctx)),
         (f"one Monte-Carlo pass, {K * M} rows, one model", lambda: score(ref, xs, ctx))]
print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
for name, fn in parts:
    jax.block_until_ready(fn())
    print(f"{name:<52} {statistics.median(_timed(fn, budget_s=2.0)) * 1e3:8.2f} ms", flush=True)

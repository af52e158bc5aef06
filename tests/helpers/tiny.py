"""A tiny configuration that compiles and runs in seconds, shared by the tests."""
from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, TrainConfig

TINY_MODEL = ModelConfig(num_tokens=16, knn=8, encoder_layers=1, width=48, layers=1, heads=2, mlp_ratio=2)


def tiny_config(run_dir: str = "runs/tiny", **train_kw) -> Config:
    train = dict(steps=6, noise_replicas=2, log_every=2, checkpoint_every=3, run_dir=str(run_dir),
                 num_devices=1)
    train.update(train_kw)
    return Config(
        name="tiny",
        model=TINY_MODEL,
        diffusion=DiffusionConfig(num_train_timesteps=20, num_inference_steps=5),
        data=DataConfig(source="toy_bimodal", num_points=64, batch_size=8),
        optim=OptimConfig(lr=1e-3, warmup_steps=2, ema_decay=0.9),
        train=TrainConfig(**train),
    )


def run_steps(cfg: Config, num_devices: int, num_steps: int = 3):
    """Drive `num_steps` supervised steps by hand on the toy data -> (losses, final state).

    Each process feeds its own slice of every global batch (multi-host aware).
    """
    import jax

    from pam_jax.toy.data import ToyBimodalData
    from pam_jax.train import sharding
    from pam_jax.train.loop import init_train_state, step_for

    mesh = sharding.make_mesh(num_devices)
    data = ToyBimodalData(batch_size=cfg.data.batch_size, num_points=cfg.data.num_points,
                          seed=cfg.data.seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
    _, tx, state = init_train_state(cfg, mesh)
    step = step_for(cfg, tx, mesh, data.norm_stats())
    losses = []
    for s in range(num_steps):
        state, m = step(state, sharding.to_global(data.batch(s), mesh))
        losses.append(float(m["loss"]))
    return losses, state


def checksum(tree) -> float:
    import jax
    import numpy as np

    return float(sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(tree)))


def perturbed_policy(seed: int):
    """A tiny policy (graphdef, params) whose initial weights carry N(0, 0.1) noise, so two seeds
    give clearly different networks."""
    import jax

    from pam_jax.models.policy import init_policy

    g, p = init_policy(TINY_MODEL, seed)
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return g, jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def random_clouds(b: int = 2, n: int = 64, seed: int = 0):
    """(b, n, 3) float32 points uniform in [-1, 1]."""
    import numpy as np

    return np.random.default_rng(seed).uniform(-1, 1, (b, n, 3)).astype(np.float32)

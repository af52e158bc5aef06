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

"""Toy bimodal bar picking: the built-in synthetic task (no files, no simulator).

Each scene is a thin bar (1000 noisy points, random length 0.3-0.6 m, pose and yaw). The
correct action picks its two endpoints in either order, so the action distribution has two
modes. The supervised diffusion policy must learn both.

Run:
    pam-jax train --experiment toy_bimodal
    pam-jax eval --run runs/toy_bimodal              # 64 fresh scenes x 16 samples

Expected (2 CPU cores, 1 device): about 3-4 minutes of training; then at least 90% of the
samples lie within 5% of the bar length of a true endpoint pair, and each endpoint order gets
at least 20% of the samples (see BUILD_NOTES.md for the measured figures).
"""
from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="toy_bimodal",
        model=ModelConfig(num_tokens=32, knn=16, encoder_layers=1, width=128, layers=2, heads=4),
        diffusion=DiffusionConfig(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                  num_inference_steps=20, eta=0.0),
        data=DataConfig(source="toy_bimodal", num_points=1000, batch_size=32, max_poses=2),
        optim=OptimConfig(lr=3e-4, warmup_steps=100, ema_decay=0.999),
        train=TrainConfig(steps=1500, noise_replicas=8, log_every=50, checkpoint_every=500,
                          run_dir="runs/toy_bimodal"),
    )

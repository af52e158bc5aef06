"""The configs of the simulated-task experiments (sim_{rope,granular,cloth}.py beside this file).

One builder, so that the three experiment files state only what differs per task. The model is
the toy size (width 128, 32 tokens, 1000 points) so that `pam-jax demo` fits on a laptop.
Stages: `supervised`, `dpo` (DeformPAM fine-tuning against the frozen SL policy) and `reward`
(the explicit reward head, a baseline), both preference stages on the same finetune data.
"""
from __future__ import annotations

from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, PreferenceConfig, TrainConfig
from pam_jax.tasks import data_task_name

STAGES = ("supervised", "dpo", "reward")


def sim_config(task: str, stage: str = "supervised", *, root: str = "", eta: float = 0.0,
               sl_steps: int = 1500, sl_lr: float = 3e-4, pref_steps: int = 1000, dpo_lr: float = 1e-4,
               reward_lr: float = 1e-4, beta: float = 100.0, num_candidates: int = 8) -> Config:
    if stage not in STAGES:
        raise ValueError(f"sim_{task}.py: unknown stage {stage!r}: expected one of {STAGES}")
    dt = data_task_name(task)
    root = root or f"runs/demo_{task}"
    model = ModelConfig(num_tokens=32, knn=16, encoder_layers=1, width=128, layers=2, heads=4)
    diffusion = DiffusionConfig(num_train_timesteps=100, num_inference_steps=20, eta=eta)
    data = DataConfig(source="tfds", data_dir=f"{root}/tfds", dataset=f"deformpam/{dt}_supervised", task=dt,
                      num_points=1000, batch_size=32, max_poses=11)
    if stage == "supervised":
        return Config(name=f"sim_{task}", model=model, diffusion=diffusion, data=data,
                      optim=OptimConfig(lr=sl_lr, warmup_steps=100, ema_decay=0.999),
                      train=TrainConfig(steps=sl_steps, noise_replicas=8, log_every=50, checkpoint_every=500,
                                        run_dir=f"{root}/sl"))
    pref_data = DataConfig(**{**data.__dict__, "dataset": f"deformpam/{dt}_finetune", "batch_size": 16,
                              "max_poses": 1})
    lr = dpo_lr if stage == "dpo" else reward_lr
    return Config(name=f"sim_{task}_{stage}", model=model, diffusion=diffusion, data=pref_data,
                  optim=OptimConfig(lr=lr, warmup_steps=20, ema_decay=0.0),
                  train=TrainConfig(stage=stage, steps=pref_steps, log_every=20, checkpoint_every=250,
                                    run_dir=f"{root}/{stage}"),
                  preference=PreferenceConfig(init_from=f"{root}/sl", loss="deformpam", beta=beta,
                                              num_candidates=num_candidates))

"""The configs of the simulated-task experiments (sim_{rope,granular,cloth}.py beside this file).

One builder, so that the three experiment files state only what differs per task. The model is
the toy size (width 128, 32 tokens, 1000 points) so that `pam-jax demo` fits on a laptop.
Stages (`sim_TASK:STAGE`), the preference ones all on the same finetune data:
  supervised  the SL policy;
  dpo         DeformPAM fine-tuning against the frozen SL policy with the paper's settings:
              AdamW lr 1e-5, cosine decay, no warm-up, batch 28, no gradient clipping, fresh
              noise for each action of each pair, 200 epochs of the preference records; its
              implicit reward is read with M = 100 Monte-Carlo samples (the paper's test setting);
  dpo_fast    the earlier settings: lr 1e-4 (20 warm-up steps), batch 16, clipping
              at 1.0, one noise per candidate reused across its pairs, `pref_steps` steps, M = 10;
  reward      the paper's explicit baseline: a freshly initialised attention network with one
              linear output, trained like `dpo` (lr 1e-5, batch 28, no clipping, 200 epochs);
  reward_sl   the SL-initialised explicit baseline: the SL policy's weights + an MLP head, trained
              exactly like `dpo` (same learning rate, epochs, batch and clipping), so that the
              implicit and the explicit reward get the same budget and the same initialisation.
Each writes where `pam-jax demo --task TASK` (the study at its demo scale, root
runs/demo_TASK) keeps that stage: `<root>/sl_s0`, `<root>/dpo_s0`, `<root>/<stage>` for the others,
all from `<root>/sl_s0` and the data in `<root>/tfds`.
"""
from __future__ import annotations

from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, PreferenceConfig, TrainConfig
from pam_jax.tasks import data_task_name

STAGES = ("supervised", "dpo", "dpo_fast", "reward", "reward_sl")


def sim_config(task: str, stage: str = "supervised", *, root: str = "", eta: float = 0.0,
               sl_steps: int = 1500, sl_lr: float = 3e-4, pref_epochs: float = 200.0, pref_lr: float = 1e-5,
               pref_batch: int = 28, pref_steps: int = 1000, fast_lr: float = 1e-4, beta: float = 100.0,
               num_candidates: int = 8) -> Config:
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
                                        run_dir=f"{root}/sl_s0"))
    paper = stage in ("dpo", "reward", "reward_sl")    # trained with the paper's DPO optimisation
    pref_data = DataConfig(**{**data.__dict__, "dataset": f"deformpam/{dt}_finetune",
                              "batch_size": pref_batch if paper else 16, "max_poses": 1})
    if paper:
        optim = OptimConfig(lr=pref_lr, warmup_steps=0, grad_clip=0.0, ema_decay=0.0)
        train = TrainConfig(stage=stage.split("_")[0], steps=pref_steps, epochs=pref_epochs, log_every=20,
                            checkpoint_every=250, run_dir=f"{root}/{stage}_s0" if stage == "dpo" else f"{root}/{stage}")
    else:
        optim = OptimConfig(lr=fast_lr, warmup_steps=20, grad_clip=1.0, ema_decay=0.0)
        train = TrainConfig(stage=stage.split("_")[0], steps=pref_steps, log_every=20, checkpoint_every=250,
                            run_dir=f"{root}/{stage}")
    pref = PreferenceConfig(init_from=f"{root}/sl_s0", loss="deformpam", beta=beta, num_candidates=num_candidates,
                            pair_noise="per_pair" if paper else "per_candidate", reward_samples=100 if paper else 10,
                            reward_init="sl" if stage in ("reward_sl", "dpo_fast") else "fresh",
                            reward_head="mlp" if stage in ("reward_sl", "dpo_fast") else "linear")
    return Config(name=f"sim_{task}_{stage}", model=model, diffusion=diffusion, data=pref_data,
                  optim=optim, train=train, preference=pref)

"""The DeformPAM experiments on the published data: one builder; deformpam_{rope,nut,tshirt}.py
are thin entries that name the task and the DDIM eta.

Stages: `supervised` (default) and `dpo` (fine-tuning on the preference rankings against the
frozen supervised model). Build the datasets once (nothing is downloaded; point --src at a local
copy of DeformPAM_Dataset), then train both stages, e.g. for the rope:

    pam-jax data build deformpam --src DeformPAM_Dataset/rope_supervised --task rope --kind supervised --data-dir data/tfds
    pam-jax data build deformpam --src DeformPAM_Dataset/rope_finetune --task rope --kind finetune --data-dir data/tfds
    pam-jax train --experiment deformpam_rope
    pam-jax train --experiment deformpam_rope:dpo

Runtime: at the reference size (3000 points, batch 32, K=8) a supervised step takes about
4.2 s on 2 CPU cores (BUILD_NOTES.md), so the full schedule needs an accelerator. A CPU smoke
run: add --set train.steps=20. Expected result: the supervised loss falls below about 0.1; the
DPO stage's pair_accuracy (metrics.jsonl) rises above 0.5. Reward-guided selection then uses
both checkpoints (pam_jax.select).
"""
from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, PreferenceConfig, TrainConfig

STAGES = ("supervised", "dpo")


def deformpam_config(task: str, stage: str = "supervised", *, eta: float) -> Config:
    """The config of one stage on the published data of `task` (rope | nut | tshirt_short)."""
    sl_run = f"runs/deformpam_{task}"
    supervised = Config(
        name=f"deformpam_{task}",
        model=ModelConfig(),  # the reference size: width 240, 2 layers, 4 heads
        diffusion=DiffusionConfig(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                  num_inference_steps=100, eta=eta),
        data=DataConfig(source="tfds", data_dir="data/tfds", dataset=f"deformpam/{task}_supervised",
                        task=task, num_points=0, batch_size=32, max_poses=11),
        optim=OptimConfig(lr=1e-4, warmup_steps=500, ema_decay=0.999),
        train=TrainConfig(stage="supervised", steps=20000, noise_replicas=8, checkpoint_every=1000,
                          run_dir=sl_run),
    )
    if stage == "supervised":
        return supervised
    if stage == "dpo":
        return Config(
            name=f"deformpam_{task}_dpo",
            model=supervised.model,
            diffusion=supervised.diffusion,
            data=DataConfig(source="tfds", data_dir="data/tfds", dataset=f"deformpam/{task}_finetune",
                            task=task, num_points=0, batch_size=16, max_poses=1),
            optim=OptimConfig(lr=1e-5, warmup_steps=100, ema_decay=0.0),
            train=TrainConfig(stage="dpo", steps=5000, checkpoint_every=500, run_dir=f"{sl_run}_dpo"),
            preference=PreferenceConfig(init_from=sl_run, loss="deformpam", beta=100.0),
        )
    raise ValueError(f"deformpam_{task}: unknown stage {stage!r}: expected one of {STAGES}")

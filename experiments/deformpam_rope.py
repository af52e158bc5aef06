"""DeformPAM, rope task (single pick-and-place (pick, place)), trained from the published data.

Stages: `supervised` (default) and `dpo` (fine-tuning on the preference rankings against the
frozen supervised model). Build the datasets once (nothing is downloaded; point --src at a local
copy of DeformPAM_Dataset):

    pam-jax data build deformpam --src DeformPAM_Dataset/rope_supervised --task rope --kind supervised --data-dir data/tfds
    pam-jax data build deformpam --src DeformPAM_Dataset/rope_finetune --task rope --kind finetune --data-dir data/tfds

Then train both stages:

    pam-jax train --experiment experiments/deformpam_rope.py
    pam-jax train --experiment experiments/deformpam_rope.py:dpo

Runtime: at the reference size (3000 points, batch 32, K=8) a supervised step takes about
4.2 s on 2 CPU cores (BUILD_NOTES.md), so the full schedule needs an accelerator; no GPU figure
has been measured yet. A CPU smoke run: add --set train.steps=20. Expected result: the
supervised loss falls below about 0.1; the DPO stage's pair_accuracy (metrics.jsonl) rises
above 0.5. Reward-guided selection then uses both checkpoints (pam_jax.select).
"""
from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, PreferenceConfig, TrainConfig

TASK = "rope"


def get_config(stage: str = "supervised") -> Config:
    sl_run = f"runs/deformpam_{TASK}"
    supervised = Config(
        name=f"deformpam_{TASK}",
        model=ModelConfig(),  # the reference size: width 240, 2 layers, 4 heads
        diffusion=DiffusionConfig(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                  num_inference_steps=100, eta=1.0),
        data=DataConfig(source="tfds", data_dir="data/tfds", dataset=f"deformpam/{TASK}_supervised",
                        task=TASK, num_points=0, batch_size=32, max_poses=11),
        optim=OptimConfig(lr=1e-4, warmup_steps=500, ema_decay=0.999),
        train=TrainConfig(stage="supervised", steps=20000, noise_replicas=8, checkpoint_every=1000,
                          run_dir=sl_run),
    )
    if stage == "supervised":
        return supervised
    if stage == "dpo":
        return Config(
            name=f"deformpam_{TASK}_dpo",
            model=supervised.model,
            diffusion=supervised.diffusion,
            data=DataConfig(source="tfds", data_dir="data/tfds", dataset=f"deformpam/{TASK}_finetune",
                            task=TASK, num_points=0, batch_size=16, max_poses=1),
            optim=OptimConfig(lr=1e-5, warmup_steps=100, ema_decay=0.0),
            train=TrainConfig(stage="dpo", steps=5000, checkpoint_every=500, run_dir=f"{sl_run}_dpo"),
            preference=PreferenceConfig(init_from=sl_run, loss="deformpam", beta=100.0),
        )
    raise ValueError(f"deformpam_{TASK}.py: unknown stage {stage!r}: expected 'supervised' or 'dpo'")

"""The DeformPAM experiments on the published data: one builder; deformpam_{rope,nut,tshirt}.py
are thin entries that name the task and the DDIM eta.

Stages: `supervised` (default), `dpo` (fine-tuning on the preference rankings against the
frozen supervised model with the paper's settings: AdamW lr 1e-5, cosine decay, batch 28, no
gradient clipping, fresh noise for each action of each pair, 200 epochs; M = 100 Monte-Carlo
samples for its implicit reward) and `dpo_fast` (the settings used before: 100 warm-up steps,
batch 16, clipping at 1.0, one noise per candidate, 5000 steps, M = 10). Build the datasets
once (nothing is downloaded; point --src at a local copy of DeformPAM_Dataset), then train both
stages, e.g. for the rope:

    pam-jax data build deformpam --src DeformPAM_Dataset/rope_supervised --task rope --kind supervised --data-dir data/tfds
    pam-jax data build deformpam --src DeformPAM_Dataset/rope_finetune --task rope --kind finetune --data-dir data/tfds
    pam-jax train --experiment deformpam_rope
    pam-jax train --experiment deformpam_rope:dpo

Runtime: at the reference size (3000 points, batch 32, K=8) a supervised step takes about
2.4-4.2 s on 2 CPU cores (BUILD_NOTES.md), so the full schedule needs an accelerator. A CPU smoke
run: add --set train.steps=20 (and train.epochs=0 for the `dpo` stage, whose budget is in
epochs). Expected result: the supervised loss falls below about 0.1; the DPO stage's
pair_accuracy (metrics.jsonl) rises above 0.5. Reward-guided selection then uses
both checkpoints (pam_jax.select).
"""
from pam_jax.config import Config, DataConfig, DiffusionConfig, ModelConfig, OptimConfig, PreferenceConfig, TrainConfig

STAGES = ("supervised", "dpo", "dpo_fast")


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
    if stage in ("dpo", "dpo_fast"):
        paper = stage == "dpo"
        return Config(
            name=f"deformpam_{task}_{stage}",
            model=supervised.model,
            diffusion=supervised.diffusion,
            data=DataConfig(source="tfds", data_dir="data/tfds", dataset=f"deformpam/{task}_finetune",
                            task=task, num_points=0, batch_size=28 if paper else 16, max_poses=1),
            optim=OptimConfig(lr=1e-5, warmup_steps=0 if paper else 100, grad_clip=0.0 if paper else 1.0,
                              ema_decay=0.0),
            train=TrainConfig(stage="dpo", steps=5000, epochs=200.0 if paper else 0.0, checkpoint_every=500,
                              run_dir=f"{sl_run}_{stage}"),
            preference=PreferenceConfig(init_from=sl_run, loss="deformpam", beta=100.0,
                                        pair_noise="per_pair" if paper else "per_candidate",
                                        reward_samples=100 if paper else 10),
        )
    raise ValueError(f"deformpam_{task}: unknown stage {stage!r}: expected one of {STAGES}")

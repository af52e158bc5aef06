"""Toy bar task, stage 2: DPO fine-tuning on a planted preference ("left end first").

Starts from the supervised run of experiments/toy_bimodal.py. Candidates are sampled on-policy
from that model (K=8, DDIM eta=1) on 512 scenes, labelled by an oracle that prefers the
lower-x endpoint first, and the copy of the SL model is fine-tuned with DeformPAM's loss
(-sigmoid(-beta * Delta), beta=100) against the frozen SL model.

Run (after the supervised run):
    pam-jax train --experiment toy_bimodal
    pam-jax train --experiment toy_dpo
    pam-jax eval --run runs/toy_dpo          # RAS vs SL on 64 fresh scenes

Expected (2 CPU cores): about 2-3 minutes; on 64 fresh scenes RAS with the implicit reward picks
the preferred order in >= 90% of scenes while SL alone (first candidate) does about half the time.
"""
from pam_jax.config import Config, DataConfig, OptimConfig, PreferenceConfig, TrainConfig
from pam_jax.experiments import toy_bimodal


def get_config() -> Config:
    sl = toy_bimodal.get_config()
    return Config(
        name="toy_dpo",
        model=sl.model,
        diffusion=sl.diffusion,
        data=DataConfig(source="toy_preference", num_points=sl.data.num_points, batch_size=16,
                        num_states=512),
        optim=OptimConfig(lr=1e-4, warmup_steps=20, ema_decay=0.0),  # DeformPAM: 1e-5 on real data
        train=TrainConfig(stage="dpo", steps=1000, log_every=20, checkpoint_every=100,
                          run_dir="runs/toy_dpo"),
        preference=PreferenceConfig(init_from=sl.train.run_dir, loss="deformpam", beta=100.0,
                                    num_candidates=8, reward_samples=10,
                                    # one noise per candidate (not the paper's per pair): 36 pairs of 9
                                    # candidates would cost 8x per step; the figures above were measured so
                                    pair_noise="per_candidate"),
    )

"""One process of the 2-process CPU test (started by tests/test_multihost.py, not collected).

usage: multihost_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_JSON RUN_DIR
Each process has 2 CPU devices; the mesh spans all 4 and each process feeds its half of every
global batch. Writes the per-step losses and a parameter checksum.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"


def main():
    port, nproc, pid, out, run_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    sys.path.insert(0, os.path.dirname(__file__))
    from pam_jax.train import sharding

    sharding.init_distributed(f"127.0.0.1:{port}", nproc, pid, cpu_collectives=True)
    import jax

    from _tiny import checksum, run_steps, tiny_config
    from pam_jax.config import override
    from pam_jax.train.loop import train

    cfg = override(tiny_config(run_dir), ["train.num_devices=0"])
    losses, state = run_steps(cfg, 0)
    checksum_ = checksum(state.params)
    # the whole loop too: checkpoints written by both processes into one run folder
    res = train(cfg, progress_bar=False, log=lambda *a: None)
    result = {"process": jax.process_index(), "devices": jax.device_count(), "losses": losses,
              "checksum": checksum_, "train_step": int(res.state.step)}
    with open(out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

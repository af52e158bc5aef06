"""The user-facing benchmarks of `pam-jax bench`: train step, sampler and geometry (compute),
input pipeline (data), policy server (serve)."""

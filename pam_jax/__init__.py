"""pam_jax: DeformPAM (diffusion policy + preference alignment + reward-guided selection) in JAX."""

__version__ = "0.1.0"

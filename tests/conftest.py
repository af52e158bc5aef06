"""Test-wide settings: 8 forced CPU devices, set before jax is imported anywhere."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PAM_JAX_COMPILE_CACHE", "off")  # the CLI's cache stays out of the tests' home

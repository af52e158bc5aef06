"""Apps: the pam-jax command, the demo, the benchmarks, the annotator. Nothing below imports them."""

"""Forms of the selector that have never been timed on a GPU, off by default and outside the
installed package; the runtime config selects them once :mod:`benchmarks.experimental.fused` is
imported."""

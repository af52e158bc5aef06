"""TFDS dataset builders of pam_jax (written as ArrayRecord, read without TensorFlow).

- ``deformpam``: the published DeformPAM layout (real data) and the same layout written by
  pam_jax itself (simulated demonstrations, rollouts, preferences).

Build with ``pam-jax data build deformpam --src DIR --task rope --kind supervised``.
"""

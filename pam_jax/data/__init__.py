"""Datasets: the DeformPAM sample layout, TFDS builds (ArrayRecord), and the grain pipeline.

- :mod:`pam_jax.data.layout`    read/validate one sample folder; write one atomically
- :mod:`pam_jax.data.scan`      find the sample folders under a root
- :mod:`pam_jax.data.fixtures`  a tiny dataset in the published layout
- :mod:`pam_jax.data.build`     build a dataset with ``pam_jax.data_builders.deformpam``
- :mod:`pam_jax.data.sources`   locate and open built datasets
- :mod:`pam_jax.data.sample`    one record -> one fixed-shape sample (frame, subsample, augment)
- :mod:`pam_jax.data.stats`     padded shapes and normalisation statistics stored with a dataset
- :mod:`pam_jax.data.pipeline`  ``DeformPAMData``: process-local batches, resumable order
- :mod:`pam_jax.toy.data`, :mod:`pam_jax.toy.preference_data`  the built-in synthetic task
- :mod:`pam_jax.data.train_data`  the training data named by a config (``data.source``)

Three lines from sample folders to batches::

    build("/data/rope_supervised", task="rope", kind="supervised", data_dir="/data/tfds")
    data = pipeline.make_train_data("/data/tfds", task="rope", kind="supervised", batch_size=32)
    batch = data.batch(0)   # points (32, 3000, 3), actions (32, M, 2, 3), action_valid, ...

Submodules are imported on use, so ``import pam_jax.data`` stays light (no TFDS import).
"""

"""TFDS builder for folders in the DeformPAM sample layout (see ``Builder``)."""
from pam_jax.data_builders.deformpam.deformpam_dataset_builder import Builder, DeformPAMConfig

__all__ = ["Builder", "DeformPAMConfig"]

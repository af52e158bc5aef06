"""DeformPAM, rope task (single pick-and-place (pick, place); DDIM eta=1), trained from the published data.

    pam-jax train --experiment deformpam_rope          # supervised
    pam-jax train --experiment deformpam_rope:dpo      # DPO against the frozen supervised model

How to build the data, the runtime and the expected result: see experiments/_deformpam.py.
"""
from pam_jax.experiments._deformpam import deformpam_config


def get_config(stage: str = "supervised"):
    return deformpam_config("rope", stage, eta=1.0)

"""DeformPAM, nut task (sweep (start, end); DDIM eta=0), trained from the published data.

    pam-jax train --experiment deformpam_nut          # supervised
    pam-jax train --experiment deformpam_nut:dpo      # DPO against the frozen supervised model

How to build the data, the runtime and the expected result: see experiments/_deformpam.py.
"""
from pam_jax.experiments._deformpam import deformpam_config


def get_config(stage: str = "supervised"):
    return deformpam_config("nut", stage, eta=0.0)

"""The policy server's wire format: it lives in the robot-side package `pam_jax_client.protocol`
(numpy and msgpack only); see there for the messages of both dialects."""
from pam_jax_client.protocol import *  # noqa: F401,F403
from pam_jax_client.protocol import __all__  # noqa: F401

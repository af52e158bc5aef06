"""The robot side of `pam-jax serve`: `PolicyClient` and the wire protocol
(`pam_jax_client.protocol`, both pam_jax's own dialect and openpi's). numpy, msgpack and
websockets only: no jax."""
from pam_jax_client.client import PolicyClient
from pam_jax_client.protocol import ProtocolError, ServerError

__version__ = "0.1.0"
__all__ = ["PolicyClient", "ProtocolError", "ServerError", "__version__"]

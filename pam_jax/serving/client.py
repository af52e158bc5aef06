"""The robot side of `pam-jax serve`: the client of the `pam-jax-client` package, re-exported."""
from pam_jax_client.client import MAX_REPLY_BYTES, PolicyClient  # noqa: F401
from pam_jax_client.protocol import ServerError  # noqa: F401

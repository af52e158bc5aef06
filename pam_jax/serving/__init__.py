"""Serving a trained policy: a websocket server with dynamic batching (`pam-jax serve`), its
client, and an exported graph that runs without flax or the training code (`pam-jax export`).

Importing this package loads neither jax nor flax: `PolicyClient` needs only numpy, websockets
and msgpack, so a robot's computer can use it. The server lives in `pam_jax.serving.server`.
"""
from pam_jax.serving.client import PolicyClient
from pam_jax.serving.exported import ExportedPolicy, load_exported
from pam_jax.serving.protocol import ProtocolError, ServerError

__all__ = ["PolicyClient", "ServerError", "ProtocolError", "load_exported", "ExportedPolicy"]

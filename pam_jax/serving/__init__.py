"""Serving a trained policy: a websocket server with dynamic batching (`pam-jax serve`), its
client, and an exported graph that runs without flax or the training code (`pam-jax export`).

Importing this package loads neither jax nor flax. `PolicyClient` and the wire protocol are the
robot-side package `pam_jax_client` (packages/pam-jax-client: numpy, websockets and msgpack
only), re-exported here; a robot's computer installs that package alone. The server lives in `pam_jax.serving.server`.
The names below load on first use, so that the CLI's parser (which reads `protocol`) works
where websockets is not installed (e.g. a GPU image that only runs the benchmarks).
"""
import importlib

_WHERE = {"PolicyClient": "client", "ExportedPolicy": "exported", "load_exported": "exported",
          "ProtocolError": "protocol", "ServerError": "protocol"}
__all__ = ["PolicyClient", "ServerError", "ProtocolError", "load_exported", "ExportedPolicy"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"pam_jax.serving.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'pam_jax.serving' has no attribute {name!r}")

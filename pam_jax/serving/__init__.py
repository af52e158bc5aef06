"""Serving a trained policy: a websocket server with dynamic batching (`pam-jax serve`), its
client, and an exported graph that runs without flax or the training code (`pam-jax export`).

Importing this package loads neither jax nor flax: `PolicyClient` needs only numpy, websockets
and msgpack, so a robot's computer can use it. The server lives in `pam_jax.serving.server`.
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

"""The policy server's wire format: msgpack messages over a websocket, numpy arrays inside them
as ``{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": raw bytes}``.

Messages (each a msgpack map with a "type"):
  server -> client, on connect   {"type": "metadata", "metadata": {...}}
  client -> server               {"type": "select", "points": (Np, 3) array, "seed": int | None}
  server -> client               {"type": "result", "action": (2, 3), "candidates": (N, 2, 3),
                                  "scores": (N,), "index": int, "seed": int, "server_ms": float}
                                 {"type": "error", "message": one line}

Only numpy and msgpack: the robot side imports this without jax.
"""
from __future__ import annotations

import math

import msgpack
import numpy as np

VERSION = 1
SEED_LIMIT = 2**32                    # seeds are integers in [0, 2**32)
_KINDS = "biuf"                       # bool, signed, unsigned, float: nothing else crosses the wire
_ARRAY = "__ndarray__"
MODES = ("implicit", "explicit", "first")   # metadata["mode"]: how the server picks a candidate
BATCHING = ("exact", "vmap")                 # metadata["batching"] (pam_jax.serving.graph.batch_selector)


class ServerError(RuntimeError):
    """The server answered a request with an error (its one-line message)."""


class ProtocolError(ValueError):
    """A message that does not follow the protocol (answered with an error reply)."""


def _encode(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _KINDS:
            raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent (numbers only)")
        return {_ARRAY: True, "dtype": obj.dtype.str, "shape": list(obj.shape),
                "data": np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(d: dict):
    if not d.get(_ARRAY):
        return d
    try:
        dtype = np.dtype(d["dtype"])
        shape = tuple(d["shape"])
        data = d["data"]
    except (KeyError, TypeError) as e:
        raise ProtocolError(f"malformed array ({e})") from None
    if dtype.kind not in _KINDS or dtype.itemsize > 8:
        raise ProtocolError(f"arrays of dtype {dtype} are not accepted (numbers only)")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape) or len(shape) > 8:
        raise ProtocolError(f"malformed array shape {list(shape)}")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"array data does not match dtype {dtype} and shape {list(shape)}")
    return np.frombuffer(data, dtype).reshape(shape)


def pack(message: dict) -> bytes:
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data, max_bytes: int | None = None) -> dict:
    """bytes -> a message dict (arrays decoded); anything else is a ProtocolError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("expected a binary msgpack message, got text")
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(f"message too large: {len(data)} bytes (at most {max_bytes})")
    try:
        msg = msgpack.unpackb(data, raw=False, object_hook=_decode, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001  (msgpack raises many kinds)
        raise ProtocolError(f"malformed msgpack message ({type(e).__name__})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("expected a map with a 'type'")
    return msg


def check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ProtocolError(f"seed: expected an integer in [0, 2**32) or none, got {seed!r}")
    return int(seed)


def check_cloud(points, num_points: int) -> np.ndarray:
    """One observation, exactly as the compiled graph takes it: (num_points, 3) finite numbers ->
    float32. (The server adds the policy's range check, pam_jax.select.check_clouds.)"""
    if not isinstance(points, np.ndarray):
        raise ProtocolError(f"points: expected an array, got {type(points).__name__}")
    if points.shape != (num_points, 3):
        hint = " (send one cloud per request)" if points.ndim == 3 else ""
        raise ProtocolError(f"points: expected one cloud of shape ({num_points}, 3), got {points.shape}{hint}")
    if points.dtype.kind == "b":
        raise ProtocolError("points: expected numbers, got booleans")
    pts = points.astype(np.float32)
    bad = int(pts.size - np.isfinite(pts).sum())
    if bad:
        raise ProtocolError(f"points: {bad} non-finite values (NaN/inf)")
    return pts


def parse_request(msg: dict, num_points: int) -> tuple[np.ndarray, int | None]:
    """A decoded "select" message -> (points (num_points, 3) float32, seed or None)."""
    if msg.get("type") != "select":
        raise ProtocolError(f"unknown message type {msg.get('type')!r}: expected 'select'")
    unknown = set(msg) - {"type", "points", "seed"}
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))} in a 'select' message")
    return check_cloud(msg.get("points"), num_points), check_seed(msg.get("seed"))


def request(points, seed=None) -> bytes:
    return pack({"type": "select", "points": np.asarray(points), "seed": seed})


def error(message: str) -> bytes:
    line = (str(message).strip().splitlines() or ["error"])[0]
    return pack({"type": "error", "message": line})


def result(message: dict) -> dict:
    """A "result"/"error" reply -> the dict `PolicyClient.select` returns, or ServerError."""
    if message.get("type") == "error":
        raise ServerError(str(message.get("message", "error")))
    if message.get("type") != "result":
        raise ProtocolError(f"unexpected reply type {message.get('type')!r}")
    return {k: message[k] for k in ("action", "candidates", "scores", "index", "seed", "server_ms")}

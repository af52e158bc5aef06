"""The wire format of `pam-jax serve`: msgpack messages over a websocket. numpy and msgpack only.

Two dialects share one port; the server tells them apart per message:

pam_jax's own (every message a map with a "type"; arrays as
``{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": raw bytes}``):
  server -> client, on connect   the metadata: one plain map, {"type": "metadata", "protocol": 2, ...}
  client -> server               {"type": "select", "points": (num_points, 3) task frame, "seed": int | None}
                                 {"type": "select_world", "points": (N, 3) world frame, any N, NaN allowed,
                                  "seed": int | None, "calibration": (4, 4) world -> task, optional}
  server -> client               {"type": "result", "action": (2, 3), "candidates": (K, 2, 3),
                                  "scores": (K,), "index": int, "seed": int, "server_ms": float}
                                 (select_world adds "task_action" and "task_candidates", the policy's
                                  frame; "action" and "candidates" are then in the world frame)
                                 {"type": "error", "message": one line}

openpi's (``openpi_client.msgpack_numpy``: arrays marked with bytes keys b"__ndarray__", b"data",
b"dtype", b"shape"), for `openpi_client.websocket_client_policy.WebsocketClientPolicy`:
  server -> client, on connect   the same metadata map
  client -> server               an observation map without "type": {"points": (N, 3) world frame,
                                  "seed": int (optional), "calibration": (4, 4) (optional)}
  server -> client               the select_world reply's arrays and numbers, plus
                                  "server_timing": {"infer_ms": float}
                                 an error: a text frame holding one line (the client raises RuntimeError)
"""
from __future__ import annotations

import dataclasses
import math

import msgpack
import numpy as np

__all__ = [
    "VERSION", "SEED_LIMIT", "MODES", "BATCHING", "OUTPUTS", "ServerError", "ProtocolError", "Request", "pack",
    "pack_openpi", "decode", "unpack", "metadata_frame", "read_metadata", "check_seed", "check_cloud",
    "check_world_cloud", "parse_request", "request", "request_world", "error", "error_line", "result",
    "reply", "reply_openpi", "REQUEST_OVERHEAD",
]

VERSION = 2
SEED_LIMIT = 2**32                    # seeds are integers in [0, 2**32)
REQUEST_OVERHEAD = 4096               # bytes of a request besides its cloud (map, seed, calibration)
_KINDS = "biuf"                       # bool, signed, unsigned, float: nothing else crosses the wire
MODES = ("implicit", "explicit", "first")   # metadata["mode"]: how the server picks a candidate
BATCHING = ("exact", "vmap")                 # metadata["batching"]
OUTPUTS = ("action", "candidates", "scores", "index")


class ServerError(RuntimeError):
    """The server answered a request with an error (its one-line message)."""


class ProtocolError(ValueError):
    """A message that does not follow the protocol (answered with an error reply)."""


# --------------------------------------------------------------------------- arrays, both dialects


def _array_or_scalar(obj, marker, data, dtype, shape):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _KINDS:
            raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent (numbers only)")
        return {marker: True, dtype: obj.dtype.str, shape: list(obj.shape),
                data: np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _encode(obj):
    return _array_or_scalar(obj, "__ndarray__", "data", "dtype", "shape")


def _encode_openpi(obj):
    return _array_or_scalar(obj, b"__ndarray__", b"data", b"dtype", b"shape")


def _field(d: dict, name: str, text: bool):
    key = name if text else name.encode()
    if key not in d:
        raise ProtocolError(f"malformed array (no {name!r})")
    return d[key]


def _decode(d: dict):
    """object_hook: an array map of either dialect -> ndarray; openpi's numpy scalar -> a number."""
    if d.get("__ndarray__") is True:
        text = True
    elif d.get(b"__ndarray__") is True:
        text = False
    elif d.get(b"__npgeneric__") is True:
        try:
            dtype = np.dtype(d[b"dtype"])
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed scalar ({e})") from None
        if dtype.kind not in _KINDS:
            raise ProtocolError(f"scalars of dtype {dtype} are not accepted (numbers only)")
        value = d.get(b"data")
        if not isinstance(value, (bool, int, float)):
            raise ProtocolError(f"malformed scalar {value!r}")
        return value
    else:
        return d
    try:
        dtype = np.dtype(_field(d, "dtype", text))
    except TypeError as e:
        raise ProtocolError(f"malformed array dtype ({e})") from None
    shape, data = tuple(_field(d, "shape", text)), _field(d, "data", text)
    if dtype.kind not in _KINDS or dtype.itemsize > 8:
        raise ProtocolError(f"arrays of dtype {dtype} are not accepted (numbers only)")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape) or len(shape) > 8:
        raise ProtocolError(f"malformed array shape {list(shape)}")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"array data does not match dtype {dtype} and shape {list(shape)}")
    return np.frombuffer(data, dtype).reshape(shape)


def pack(message: dict) -> bytes:
    """A message -> bytes, pam_jax's own array encoding."""
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def pack_openpi(message: dict) -> bytes:
    """A message -> bytes, openpi's array encoding (bytes keys)."""
    return msgpack.packb(message, default=_encode_openpi, use_bin_type=True)


def decode(data, max_bytes: int | None = None):
    """bytes -> the decoded object (arrays of either dialect decoded); else a ProtocolError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("expected a binary msgpack message, got text")
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(f"message too large: {len(data)} bytes (at most {max_bytes})")
    try:
        return msgpack.unpackb(data, raw=False, object_hook=_decode, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001  (msgpack raises many kinds)
        raise ProtocolError(f"malformed msgpack message ({type(e).__name__})") from None


def unpack(data, max_bytes: int | None = None) -> dict:
    """bytes -> a pam_jax message (a map with a "type"); anything else is a ProtocolError."""
    msg = decode(data, max_bytes)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("expected a map with a 'type'")
    return msg


def metadata_frame(metadata: dict) -> bytes:
    """The first frame on connect: one plain map (no arrays), read alike by both dialects."""
    return pack({"type": "metadata", **{k: v for k, v in metadata.items() if k != "type"}})


def read_metadata(message: dict) -> dict:
    if message.get("type") != "metadata":
        raise ProtocolError(f"expected metadata on connect, got {message.get('type')!r}")
    if isinstance(message.get("metadata"), dict):   # servers of protocol 1 wrapped it
        return message["metadata"]
    return {k: v for k, v in message.items() if k != "type"}


# --------------------------------------------------------------------------- requests


@dataclasses.dataclass
class Request:
    """A parsed request: `world` clouds go through the server's framing first."""

    dialect: str                      # "pam_jax" or "openpi"
    world: bool
    points: np.ndarray                # (num_points, 3) float32 task frame, or (N, 3) world frame
    seed: int | None
    calibration: np.ndarray | None    # (4, 4) world -> task, or None (the server's)


def check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ProtocolError(f"seed: expected an integer in [0, 2**32) or none, got {seed!r}")
    return int(seed)


def _check_numbers(points, what: str) -> None:
    if not isinstance(points, np.ndarray):
        raise ProtocolError(f"{what}: expected an array, got {type(points).__name__}")
    if points.dtype.kind == "b":
        raise ProtocolError(f"{what}: expected numbers, got booleans")


def check_cloud(points, num_points: int) -> np.ndarray:
    """One task-frame observation, exactly as the compiled graph takes it: (num_points, 3) finite
    numbers -> float32."""
    _check_numbers(points, "points")
    if points.shape != (num_points, 3):
        hint = " (send one cloud per request)" if points.ndim == 3 else ""
        raise ProtocolError(f"points: expected one cloud of shape ({num_points}, 3), got {points.shape}{hint}")
    pts = points.astype(np.float32)
    bad = int(pts.size - np.isfinite(pts).sum())
    if bad:
        raise ProtocolError(f"points: {bad} non-finite values (NaN/inf)")
    return pts


def check_world_cloud(points, max_points: int) -> np.ndarray:
    """One world-frame cloud: (N, 3) numbers with N <= max_points -> float64 (NaN kept: the
    server's framing drops non-finite points)."""
    _check_numbers(points, "points")
    if points.ndim != 2 or points.shape[1] != 3:
        hint = " (send one cloud per request)" if points.ndim == 3 else ""
        raise ProtocolError(f"points: expected one cloud of shape (N, 3), got {points.shape}{hint}")
    if points.shape[0] > max_points:
        raise ProtocolError(f"points: {points.shape[0]} points, more than this server's limit of {max_points}")
    return points.astype(np.float64)


def _calibration(value):
    if value is None:
        return None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf" or value.shape != (4, 4):
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise ProtocolError(f"calibration: expected a (4, 4) world-to-task matrix, got {got}")
    return value.astype(np.float64)


_OWN_FIELDS = {"select": {"type", "points", "seed"}, "select_world": {"type", "points", "seed", "calibration"}}
_OPENPI_FIELDS = {"points", "seed", "calibration"}


def parse_request(msg, num_points: int, max_points: int | None = None) -> Request:
    """A decoded message -> a Request. A map with a "type" is pam_jax's own; any other map is an
    openpi observation (a world-frame cloud)."""
    if not isinstance(msg, dict):
        raise ProtocolError("expected a map with a 'type', or an openpi observation map")
    bad_keys = [k for k in msg if not isinstance(k, str)]
    if bad_keys:
        raise ProtocolError(f"unknown field(s) {', '.join(sorted(map(repr, bad_keys)))}")
    max_points = max_points if max_points is not None else num_points
    if "type" in msg:
        kind = msg["type"]
        if kind not in _OWN_FIELDS:
            raise ProtocolError(f"unknown message type {kind!r}: expected 'select' or 'select_world'")
        unknown = set(msg) - _OWN_FIELDS[kind]
        if unknown:
            raise ProtocolError(f"unknown field(s) {', '.join(sorted(unknown))} in a {kind!r} message")
        seed = check_seed(msg.get("seed"))
        if kind == "select":
            return Request("pam_jax", False, check_cloud(msg.get("points"), num_points), seed, None)
        return Request("pam_jax", True, check_world_cloud(msg.get("points"), max_points), seed,
                       _calibration(msg.get("calibration")))
    unknown = set(msg) - _OPENPI_FIELDS
    if unknown:
        raise ProtocolError(f"unknown observation field(s) {', '.join(sorted(unknown))}: expected points, "
                            "seed, calibration")
    return Request("openpi", True, check_world_cloud(msg.get("points"), max_points), check_seed(msg.get("seed")),
                   _calibration(msg.get("calibration")))


def request(points, seed=None) -> bytes:
    return pack({"type": "select", "points": np.asarray(points), "seed": seed})


def request_world(points, seed=None, calibration=None) -> bytes:
    msg = {"type": "select_world", "points": np.asarray(points), "seed": seed}
    if calibration is not None:
        msg["calibration"] = np.asarray(calibration, np.float64)
    return pack(msg)


# --------------------------------------------------------------------------- replies


def error_line(message) -> str:
    return (str(message).strip().splitlines() or ["error"])[0]


def error(message) -> bytes:
    return pack({"type": "error", "message": error_line(message)})


def reply(out: dict) -> bytes:
    return pack({"type": "result", **out})


def reply_openpi(out: dict) -> bytes:
    body = {k: v for k, v in out.items() if k != "server_ms"}
    return pack_openpi({**body, "server_timing": {"infer_ms": float(out["server_ms"])}})


_RESULT = ("action", "candidates", "scores", "index", "seed", "server_ms")


def result(message: dict) -> dict:
    """A "result"/"error" reply -> the dict `PolicyClient.select` returns, or ServerError."""
    if message.get("type") == "error":
        raise ServerError(str(message.get("message", "error")))
    if message.get("type") != "result":
        raise ProtocolError(f"unexpected reply type {message.get('type')!r}")
    return {k: message[k] for k in _RESULT + ("task_action", "task_candidates") if k in message}

"""The robot side of `pam-jax serve`: a blocking websocket client (numpy, websockets and msgpack
only, no jax).

    from pam_jax_client import PolicyClient
    with PolicyClient("127.0.0.1", 8000) as policy:
        out = policy.select_world(cloud, seed=0)   # any (N, 3) world-frame cloud; NaN points are dropped
        out["action"]                              # (2, 3) in the world frame
        out["task_action"]                         # (2, 3) in the policy's task frame
"""
from __future__ import annotations

import contextlib

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pam_jax_client import protocol
from pam_jax_client.protocol import ServerError

MAX_REPLY_BYTES = 64 * 2**20


def _closed(e: ConnectionClosed) -> ServerError:
    why = e.rcvd.reason if e.rcvd and e.rcvd.reason else "no reason given"
    return ServerError(f"the server closed the connection: {why}")


class PolicyClient:
    """One connection to a policy server. `.metadata` is what the server sent on connect (model
    and diffusion config, normalisation, selection settings, versions, `num_points`,
    `max_world_points`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, *, timeout: float = 60.0):
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        try:
            self._ws = self._stack.enter_context(connect(f"ws://{host}:{port}", open_timeout=timeout,
                                                         compression=None, max_size=MAX_REPLY_BYTES, proxy=None))
        except (OSError, TimeoutError) as e:
            raise ConnectionError(f"no policy server at ws://{host}:{port} ({e})") from None
        self.metadata: dict = protocol.read_metadata(self._recv())

    def _recv(self) -> dict:
        try:
            return protocol.unpack(self._ws.recv(timeout=self.timeout))
        except ConnectionClosed as e:
            raise _closed(e) from None

    def _ask(self, message: bytes) -> dict:
        try:
            self._ws.send(message)
        except ConnectionClosed as e:
            raise _closed(e) from None
        return protocol.result(self._recv())

    def select(self, points, seed: int | None = None) -> dict:
        """One task-frame observation (num_points, 3) -> {"action" (2, 3), "candidates" (K, 2, 3),
        "scores" (K,), "index", "seed", "server_ms"}. The same points and seed give the same
        result. A request the server refuses raises ServerError with its one-line message."""
        return self._ask(protocol.request(points, seed))

    def select_world(self, points, seed: int | None = None, calibration=None) -> dict:
        """One raw world-frame cloud (N, 3), any N up to the server's `max_world_points`, NaN
        points allowed -> the :meth:`select` dict with "action" and "candidates" in the world
        frame, plus "task_action" and "task_candidates" in the policy's frame. `calibration`: a
        (4, 4) rigid world-to-task transform for this request (default: the server's)."""
        return self._ask(protocol.request_world(points, seed, calibration))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The robot side of `pam-jax serve`: a blocking websocket client. Imports numpy, websockets and
msgpack only (no jax), so it runs on the robot's computer.

    from pam_jax.serving import PolicyClient
    with PolicyClient("127.0.0.1", 8000) as policy:
        out = policy.select(points, seed=0)   # points: (Np, 3) in the policy's task frame
        out["action"]                         # (2, 3)
"""
from __future__ import annotations

import contextlib

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pam_jax.serving import protocol
from pam_jax.serving.protocol import ServerError

MAX_REPLY_BYTES = 64 * 2**20


class PolicyClient:
    """One connection to a policy server. `.metadata` is what the server sent on connect (model
    and diffusion config, normalisation, selection settings, versions, `num_points`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, *, timeout: float = 60.0):
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        try:
            self._ws = self._stack.enter_context(connect(f"ws://{host}:{port}", open_timeout=timeout,
                                                         compression=None, max_size=MAX_REPLY_BYTES, proxy=None))
        except (OSError, TimeoutError) as e:
            raise ConnectionError(f"no policy server at ws://{host}:{port} ({e})") from None
        msg = self._recv()
        if msg.get("type") != "metadata":
            raise protocol.ProtocolError(f"expected metadata on connect, got {msg.get('type')!r}")
        self.metadata: dict = msg["metadata"]

    def _recv(self) -> dict:
        try:
            return protocol.unpack(self._ws.recv(timeout=self.timeout))
        except ConnectionClosed as e:
            why = e.rcvd.reason if e.rcvd and e.rcvd.reason else "no reason given"
            raise ServerError(f"the server closed the connection: {why}") from None

    def select(self, points, seed: int | None = None) -> dict:
        """One observation (Np, 3) -> {"action" (2, 3), "candidates" (N, 2, 3), "scores" (N,),
        "index", "seed", "server_ms"}. The same points and seed give the same result. A request
        the server refuses raises ServerError with its one-line message."""
        try:
            self._ws.send(protocol.request(points, seed))
        except ConnectionClosed as e:
            why = e.rcvd.reason if e.rcvd and e.rcvd.reason else "no reason given"
            raise ServerError(f"the server closed the connection: {why}") from None
        return protocol.result(self._recv())

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""`pam-jax serve`: a websocket policy server with dynamic batching.

Each connection gets the metadata, then sends "select" requests (pam_jax.serving.protocol) one at
a time. Requests from all connections are gathered for up to `window_ms` or `max_batch` requests,
padded to the next of a few fixed batch sizes (all compiled at start-up, so nothing recompiles
while serving) and answered by one call of the batched selection graph. A bad request gets an
error reply and the connection stays open. `GET /healthz` on the same port answers 200 once the
graph is compiled. SIGTERM or SIGINT stops the server cleanly.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http
import secrets
import signal
import threading
import time

import numpy as np
from websockets.asyncio.server import serve

from pam_jax.serving import protocol
from pam_jax.serving.graph import OUTPUTS, ServedPolicy

HARD_LIMIT_FACTOR = 4   # frames above this many times the request limit are refused by websockets (close 1009)


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The padded batch sizes compiled for `max_batch`: the powers of two below it, and it."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"--max-batch must be an integer >= 1, got {max_batch!r}")
    return tuple(sorted({*(2**i for i in range(max_batch.bit_length()) if 2**i < max_batch), max_batch}))


def request_limit(num_points: int) -> int:
    """The largest request accepted: a float64 cloud, plus room for the map around it."""
    return num_points * 3 * 8 + 4096


@dataclasses.dataclass
class _Pending:
    points: np.ndarray
    seed: int
    future: asyncio.Future


class Batcher:
    """Gathers requests into padded batches, one batch at a time on one worker thread."""

    def __init__(self, served: ServedPolicy, sizes: tuple[int, ...], window_s: float):
        self.served, self.sizes, self.window_s = served, tuple(sorted(sizes)), window_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pam-jax-select")
        self.batches = 0

    def run(self, points: list[np.ndarray], seeds: list[int]) -> list[dict]:
        """Pad to the next compiled size (copies of the first cloud, seed 0), select, split."""
        n = len(points)
        size = next(s for s in self.sizes if s >= n)
        pts = np.stack(points + [points[0]] * (size - n))
        out = self.served.select_batch(pts, seeds + [0] * (size - n))
        return [{k: (int(out[k][i]) if k == "index" else out[k][i]) for k in OUTPUTS} for i in range(n)]

    def warm_up(self) -> None:
        pts = np.zeros((self.served.num_points, 3), np.float32)
        for s in self.sizes:
            self.run([pts] * s, [0] * s)

    async def submit(self, points: np.ndarray, seed: int) -> dict:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(points, seed, fut))
        return await fut

    async def loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.window_s
            while len(items) < self.sizes[-1]:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(self.worker, self.run, [i.points for i in items],
                                                     [i.seed for i in items])
            except Exception as e:  # noqa: BLE001  (reported to each request; the server keeps serving)
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(RuntimeError(f"selection failed: {type(e).__name__}: {e}"))
                continue
            self.batches += 1
            for i, r in zip(items, results):
                if not i.future.done():
                    i.future.set_result(r)


class PolicyServer:
    """`served` behind a websocket on host:port (port 0: any free port, see `.port` once ready)."""

    def __init__(self, served: ServedPolicy, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8,
                 window_ms: float = 5.0, sizes: tuple[int, ...] | None = None):
        if not window_ms >= 0:
            raise ValueError(f"--batch-window-ms must be >= 0, got {window_ms}")
        self.served, self.host, self.port = served, host, port
        self.sizes = tuple(sizes) if sizes else batch_sizes(max_batch)
        self.window_s = window_ms / 1000.0
        self.limit = request_limit(served.num_points)
        self.metadata = {**served.metadata, "batch_sizes": list(self.sizes), "batch_window_ms": window_ms,
                         "max_request_bytes": self.limit}
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future | None = None
        self.batcher: Batcher | None = None

    def _health(self, connection, request):
        if not self.ready.is_set():   # bound, still compiling: health and websockets both answer 503
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "compiling\n")
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async def _handle(self, ws) -> None:
        await ws.send(protocol.pack({"type": "metadata", "metadata": self.metadata}))
        async for message in ws:
            t0 = time.perf_counter()
            try:
                points, seed = protocol.parse_request(protocol.unpack(message, self.limit), self.served.num_points)
                points = self.served.check(points)
            except ValueError as e:   # ProtocolError included
                await ws.send(protocol.error(e))
                continue
            seed = secrets.randbelow(protocol.SEED_LIMIT) if seed is None else seed
            try:
                r = await self.batcher.submit(points, seed)
            except RuntimeError as e:
                await ws.send(protocol.error(e))
                continue
            await ws.send(protocol.pack({"type": "result", **r, "seed": seed,
                                         "server_ms": (time.perf_counter() - t0) * 1e3}))

    async def serve(self, on_bound=None, on_ready=None) -> None:
        """Bind (a busy port fails at once), compile every batch size (503 meanwhile), then serve
        until :meth:`stop` (or SIGTERM/SIGINT when run by :meth:`run`)."""
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        self.batcher = Batcher(self.served, self.sizes, self.window_s)
        worker = None
        try:
            async with serve(self._handle, self.host, self.port, process_request=self._health, compression=None,
                             max_size=HARD_LIMIT_FACTOR * self.limit) as server:
                self.port = server.sockets[0].getsockname()[1]
                if on_bound:
                    on_bound(self)
                warm = self._loop.run_in_executor(self.batcher.worker, self.batcher.warm_up)
                await asyncio.wait([warm, self._stop], return_when=asyncio.FIRST_COMPLETED)
                if self._stop.done():   # stopped while compiling
                    return
                await warm
                worker = asyncio.create_task(self.batcher.loop())
                self.ready.set()
                if on_ready:
                    on_ready(self)
                await self._stop
        finally:
            if worker:
                worker.cancel()
            self.batcher.worker.shutdown(wait=True)

    def stop(self) -> None:
        """Stop serving (thread-safe)."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            except RuntimeError:   # the loop closed meanwhile: already stopped
                pass

    def run(self, on_bound=None, on_ready=None) -> None:
        """Blocking: serve until SIGTERM or SIGINT."""

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            await self.serve(on_bound, on_ready)

        asyncio.run(main())

    def start_in_thread(self, timeout: float = 300.0) -> threading.Thread:
        """Serve from a daemon thread (tests, benchmarks); returns once ready. Call :meth:`stop`."""
        errors = []

        def target():
            try:
                asyncio.run(self.serve())
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                self.ready.set()

        t = threading.Thread(target=target, daemon=True, name="pam-jax-serve")
        t.start()
        if not self.ready.wait(timeout) or errors:
            self.stop()
            raise RuntimeError(f"the policy server did not start: {errors[0] if errors else 'timeout'}")
        return t

"""`pam-jax serve`: a websocket policy server with dynamic batching, speaking two dialects on one
port (pam_jax's own and openpi's; see pam_jax_client.protocol).

Each connection gets the metadata, then sends requests one at a time: task-frame clouds of
exactly `num_points`, or raw world-frame clouds of any size up to `max_world_points`, which the
server frames as the training data was prepared (pam_jax.pointcloud.frame_world_cloud: non-finite
points dropped, the calibration applied, outliers removed, centred, scaled, subsampled) and whose
actions it maps back to the world frame. Every request is checked on its own before it joins a
batch, so one client's bad cloud never fails another's. Requests from all connections are
gathered for up to `window_ms` or `max_batch` requests, padded to the next of a few fixed batch
sizes (all compiled at start-up, so nothing recompiles while serving) and answered by one call of
the batched selection graph. A bad request gets an error reply and the connection stays open.
`GET /healthz` on the same port answers 200 once the graph is compiled.

SIGTERM or SIGINT drains: the server stops accepting connections, answers every request already
received, replies "the server is shutting down" to any that arrives meanwhile, then closes each
connection (code 1001, "server shutting down") and returns. Ordinary events (a refused request, an
oversize frame, a client gone before its reply) log one line each on the `pam_jax.serving`
logger, rate-limited per kind; none logs a traceback.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http
import logging
import secrets
import signal
import sys
import threading
import time

import numpy as np
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from pam_jax import pointcloud as pc
from pam_jax.serving import protocol

HARD_LIMIT_FACTOR = 4   # frames above this many times the request limit are refused by websockets (close 1009)
MAX_WORLD_POINTS = 400_000   # default size limit of a world-frame cloud (a 640x480 depth image is 307,200)
SHUTTING_DOWN = "the server is shutting down"
log = logging.getLogger("pam_jax.serving")


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The padded batch sizes compiled for `max_batch`: the powers of two below it, and it."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"--max-batch must be an integer >= 1, got {max_batch!r}")
    return tuple(sorted({*(2**i for i in range(max_batch.bit_length()) if 2**i < max_batch), max_batch}))


def request_limit(num_points: int) -> int:
    """The largest request accepted for clouds of `num_points`: float64, plus room for the map."""
    return num_points * 3 * 8 + protocol.REQUEST_OVERHEAD


class EventLog:
    """One line per event on `logger`, at most `burst` lines per kind at once and `per_s` a
    second after that; a line after a quiet spell says how many were not logged."""

    def __init__(self, logger: logging.Logger = log, burst: int = 10, per_s: float = 1.0, clock=time.monotonic):
        self.logger, self.burst, self.per_s, self.clock = logger, burst, per_s, clock
        self._kinds: dict[str, list] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, level: int = logging.INFO) -> None:
        now = self.clock()
        with self._lock:
            tokens, last, dropped = self._kinds.get(kind, (self.burst, now, 0))
            tokens = min(self.burst, tokens + (now - last) * self.per_s)
            if tokens < 1:
                self._kinds[kind] = [tokens, now, dropped + 1]
                return
            self._kinds[kind] = [tokens - 1, now, 0]
        more = f" ({dropped} more {kind} event(s) not logged)" if dropped else ""
        self.logger.log(level, "%s%s", protocol.error_line(message), more)


class _OneLine(logging.LoggerAdapter):
    """websockets' own log records, as one rate-limited line each (an exception's type and
    message instead of its traceback)."""

    def __init__(self, events: EventLog):
        super().__init__(logging.getLogger("websockets.server"), {})
        self.events = events

    def log(self, level, msg, *args, exc_info=None, **kwargs):
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        err = sys.exc_info()[1] if exc_info is True else (exc_info[1] if isinstance(exc_info, tuple) else exc_info)
        if isinstance(err, BaseException):
            text += f": {type(err).__name__}: {err}"
        self.events("websockets", text, level)


@dataclasses.dataclass
class _Pending:
    points: np.ndarray
    seed: int
    future: asyncio.Future


class Batcher:
    """Gathers requests into padded batches, one batch at a time on one worker thread."""

    def __init__(self, served, sizes: tuple[int, ...], window_s: float):
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
        return [{k: (int(out[k][i]) if k == "index" else out[k][i]) for k in protocol.OUTPUTS} for i in range(n)]

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


def _peer(ws) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"client {host}:{port}"
    except (TypeError, ValueError, AttributeError):
        return "client"


class PolicyServer:
    """`served` behind a websocket on host:port (port 0: any free port, see `.port` once ready).

    `served` is a pam_jax.serving.graph.ServedPolicy or a pam_jax.serving.exported.ExportedPolicy
    (anything with `num_points`, `metadata`, `check(points)` and `select_batch(points, seeds)`).
    `calibration`: the (4, 4) rigid world-to-task transform applied to world-frame clouds that
    bring none (default identity). `max_world_points`: the largest world-frame cloud accepted.
    `drain_s`: how long a shutdown waits for the requests in flight."""

    def __init__(self, served, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8,
                 window_ms: float = 5.0, sizes: tuple[int, ...] | None = None, calibration=None,
                 max_world_points: int = MAX_WORLD_POINTS, drain_s: float = 30.0, events: EventLog | None = None):
        if not window_ms >= 0:
            raise ValueError(f"--batch-window-ms must be >= 0, got {window_ms}")
        if isinstance(max_world_points, bool) or not isinstance(max_world_points, int) \
                or max_world_points < served.num_points:
            raise ValueError(f"--max-points must be an integer >= num_points ({served.num_points}), "
                             f"got {max_world_points!r}")
        self.served, self.host, self.port = served, host, port
        self.sizes = tuple(sizes) if sizes else batch_sizes(max_batch)
        self.window_s, self.drain_s = window_ms / 1000.0, float(drain_s)
        self.calibration = pc.Rigid(np.eye(4) if calibration is None else calibration)
        self.max_world_points = max_world_points
        self.limit = request_limit(max_world_points)
        frame = served.metadata.get("frame")   # how the training clouds were made; without it, task frame only
        self.framing = ({k: frame[k] for k in ("preprocess", "xy_scale", "voxel_size", "n_sigma", "subsample_method")}
                        if isinstance(frame, dict) else None)
        self.metadata = {**served.metadata, "protocol": protocol.VERSION, "batch_sizes": list(self.sizes),
                         "batch_window_ms": window_ms, "max_request_bytes": self.limit,
                         "max_world_points": max_world_points, "calibration": self.calibration.matrix.tolist()}
        self.events = events or EventLog()
        self.ready = threading.Event()
        self.draining = False
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future | None = None
        self.batcher: Batcher | None = None
        self._prep = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="pam-jax-frame")

    def _health(self, connection, request):
        if self.draining:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        if not self.ready.is_set():   # bound, still compiling: health and websockets both answer 503
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "compiling\n")
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    def frame(self, req: protocol.Request, seed: int):
        """A parsed request -> (the checked policy input (num_points, 3) float32, the WorldFraming
        or None). World-frame clouds are framed here; a bad cloud is a one-line ValueError."""
        if not req.world:
            return self.served.check(req.points), None
        if self.framing is None:
            raise ValueError("this policy's metadata does not say how its training clouds were framed (an older "
                             "export?): send task-frame clouds, or export it again")
        cal = self.calibration if req.calibration is None else pc.Rigid(req.calibration)
        pts, framing = pc.frame_world_cloud(req.points, num_points=self.served.num_points,
                                            rng=np.random.default_rng(seed), calibration=cal, **self.framing)
        return self.served.check(pts), framing

    async def _send_error(self, ws, dialect: str, message) -> None:
        await ws.send(protocol.error_line(message) if dialect == "openpi" else protocol.error(message))

    async def _answer(self, ws, req: protocol.Request, t0: float) -> None:
        seed = secrets.randbelow(protocol.SEED_LIMIT) if req.seed is None else req.seed
        try:
            points, framing = await self._loop.run_in_executor(self._prep, self.frame, req, seed)
        except ValueError as e:
            self.events("refused", f"{_peer(ws)}: request refused: {protocol.error_line(e)}")
            await self._send_error(ws, req.dialect, e)
            return
        try:
            r = await self.batcher.submit(points, seed)
        except RuntimeError as e:
            self.events("failed", f"{_peer(ws)}: {protocol.error_line(e)}", logging.WARNING)
            await self._send_error(ws, req.dialect, e)
            return
        out = {**r, "seed": seed}
        if framing is not None:
            out = {**out, "action": framing.to_world(r["action"]), "candidates": framing.to_world(r["candidates"]),
                   "task_action": r["action"], "task_candidates": r["candidates"]}
        out["server_ms"] = (time.perf_counter() - t0) * 1e3
        await ws.send(protocol.reply_openpi(out) if req.dialect == "openpi" else protocol.reply(out))

    async def _handle(self, ws) -> None:
        dialect, busy = "pam_jax", False   # errors before a message decodes answer in the last dialect seen
        try:
            await ws.send(protocol.metadata_frame(self.metadata))
            async for message in ws:
                t0 = time.perf_counter()
                try:
                    msg = protocol.decode(message, self.limit)
                    if isinstance(msg, dict):   # the dialect of the reply, even to a refused request
                        dialect = "pam_jax" if "type" in msg else "openpi"
                    if self.draining:
                        await self._send_error(ws, dialect, SHUTTING_DOWN)
                        continue
                    req = protocol.parse_request(msg, self.served.num_points, self.max_world_points)
                except protocol.ProtocolError as e:
                    self.events("refused", f"{_peer(ws)}: request refused: {e}")
                    await self._send_error(ws, dialect, SHUTTING_DOWN if self.draining else e)
                    continue
                busy = True
                self._inflight += 1
                try:
                    await self._answer(ws, req, t0)
                    busy = False
                finally:
                    self._inflight -= 1
                    if self._inflight == 0 and self._idle is not None:
                        self._idle.set()
        except ConnectionClosed as e:
            code = e.sent.code if e.sent and e.sent.code == 1009 else (e.rcvd.code if e.rcvd else 1006)
            if code == 1009:
                self.events("oversize", f"{_peer(ws)}: frame over {HARD_LIMIT_FACTOR * self.limit} bytes, "
                                        "connection closed (1009)", logging.WARNING)
            elif busy:
                self.events("disconnect", f"{_peer(ws)}: disconnected before its reply (code {code})")
            elif code not in (1000, 1001):
                self.events("disconnect", f"{_peer(ws)}: connection lost (code {code})")

    async def _drain(self, server) -> None:
        """Stop accepting, let the requests in flight finish, close every connection."""
        self.draining = True
        server.close(close_connections=False)
        if self._inflight:
            self._idle = asyncio.Event()
            if self._inflight:
                try:
                    await asyncio.wait_for(self._idle.wait(), self.drain_s)
                except TimeoutError:
                    self.events("shutdown", f"{self._inflight} request(s) still running after {self.drain_s:g} s; "
                                            "closing their connections", logging.WARNING)
        await asyncio.gather(*(c.close(1001, "server shutting down") for c in list(server.connections)),
                             return_exceptions=True)

    async def serve(self, on_bound=None, on_ready=None) -> None:
        """Bind (a busy port fails at once), compile every batch size (503 meanwhile), then serve
        until :meth:`stop` (or SIGTERM/SIGINT when run by :meth:`run`), then drain."""
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        self.batcher = Batcher(self.served, self.sizes, self.window_s)
        worker = None
        try:
            async with serve(self._handle, self.host, self.port, process_request=self._health, compression=None,
                             max_size=HARD_LIMIT_FACTOR * self.limit, logger=_OneLine(self.events)) as server:
                self.port = server.sockets[0].getsockname()[1]
                if on_bound:
                    on_bound(self)
                warm = self._loop.run_in_executor(self.batcher.worker, self.batcher.warm_up)
                await asyncio.wait([warm, self._stop], return_when=asyncio.FIRST_COMPLETED)
                if self._stop.done():   # stopped while compiling
                    self.draining = True
                    return
                await warm
                worker = asyncio.create_task(self.batcher.loop())
                self.ready.set()
                if on_ready:
                    on_ready(self)
                await self._stop
                await self._drain(server)
        finally:
            if worker:
                worker.cancel()
            self.batcher.worker.shutdown(wait=True)
            self._prep.shutdown(wait=False)

    def stop(self) -> None:
        """Stop serving, draining first (thread-safe)."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            except RuntimeError:   # the loop closed meanwhile: already stopped
                pass

    def run(self, on_bound=None, on_ready=None) -> None:
        """Blocking: serve until SIGTERM or SIGINT, then drain."""

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

"""The server under ordinary trouble: one log line per event (rate-limited, no traceback), and on
SIGTERM a drain: every request already received is answered or told "shutting down"."""
import logging
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers.scenes import REPO, scene
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pam_jax.serving import PolicyClient, ServerError, protocol
from pam_jax.serving.server import HARD_LIMIT_FACTOR, EventLog


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self):
        return [self.format(r) for r in self.records]


@pytest.fixture
def lines():
    h = Lines()
    for name in ("pam_jax.serving", "websockets.server"):
        logging.getLogger(name).addHandler(h)
    logging.getLogger("pam_jax.serving").setLevel(logging.INFO)
    yield h
    for name in ("pam_jax.serving", "websockets.server"):
        logging.getLogger(name).removeHandler(h)


def wait_for(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def no_traceback(h: Lines):
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in h.records), h.text()
    assert all("\n" not in line for line in h.text()), h.text()


def test_an_oversize_frame_logs_one_line(world_server, lines):
    with connect(f"ws://127.0.0.1:{world_server.port}", proxy=None, compression=None) as ws:
        ws.recv(timeout=30)
        ws.send(b"x" * (HARD_LIMIT_FACTOR * world_server.limit + 1))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd.code == 1009
    assert wait_for(lambda: any("1009" in t for t in lines.text()))
    time.sleep(0.3)
    assert len(lines.records) == 1, lines.text()
    assert "frame over" in lines.text()[0] and "client 127.0.0.1:" in lines.text()[0]
    no_traceback(lines)


def test_a_disconnect_mid_request_logs_one_line(world_server, lines):
    ws = connect(f"ws://127.0.0.1:{world_server.port}", proxy=None, compression=None).__enter__()
    ws.recv(timeout=30)
    ws.send(protocol.request_world(scene(seed=30), seed=1))
    ws.close()   # before the reply
    assert wait_for(lambda: any("disconnected before its reply" in t for t in lines.text())), lines.text()
    time.sleep(0.3)
    assert len(lines.records) == 1, lines.text()
    no_traceback(lines)
    with PolicyClient("127.0.0.1", world_server.port) as c:   # the server serves on
        assert c.select_world(scene(seed=30), seed=1)["action"].shape == (2, 3)


def test_refused_requests_log_one_line_each_and_are_rate_limited(world_server, lines):
    with PolicyClient("127.0.0.1", world_server.port) as c:
        for _ in range(25):
            with pytest.raises(ServerError, match="seed"):
                c.select_world(scene(seed=31), seed=-1)
    assert wait_for(lambda: len(lines.records) >= 10)
    assert 10 <= len(lines.records) < 25, lines.text()
    assert all("request refused: seed: expected an integer" in t for t in lines.text())
    no_traceback(lines)


def test_event_log_burst_then_rate_with_a_count_of_what_was_dropped():
    got, now = [], [0.0]
    logger = logging.getLogger("test_event_log")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    h = Lines()
    logger.addHandler(h)
    events = EventLog(logger, burst=3, per_s=1.0, clock=lambda: now[0])
    for i in range(10):
        events("refused", f"event {i}")
    now[0] = 2.5   # two and a half tokens back
    events("refused", "later 1")
    events("refused", "later 2")
    events("refused", "later 3")
    events("oversize", "another kind")   # its own budget
    got = [r.getMessage() for r in h.records]
    assert got == ["event 0", "event 1", "event 2", "later 1 (7 more refused event(s) not logged)", "later 2",
                   "another kind"]


def _reader(stream) -> queue.Queue:
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in stream], daemon=True).start()
    return q


@pytest.mark.slow
def test_sigterm_with_eight_clients_mid_request_drains(runs, tmp_path):
    """A 2 s batch window and a 16-request batch keep 8 requests waiting in the server when
    SIGTERM arrives; a ninth, idle client asks during the drain."""
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pam_jax.cli", "serve", "--sl", runs["sl"], "--mode", "first",
                             "--port", "0", "--max-batch", "16", "--batch-window-ms", "2000"],
                            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    try:
        out = _reader(proc.stdout)
        line = ""
        while "serving" not in line:
            line = out.get(timeout=240)
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        clients = [PolicyClient("127.0.0.1", port, timeout=60) for _ in range(9)]
        got, sent = {}, threading.Barrier(9)

        def ask(i):
            try:
                clients[i]._ws.send(protocol.request_world(scene(seed=40 + i), 40 + i))
                sent.wait()
                got[i] = protocol.result(clients[i]._recv())
            except ServerError as e:
                got[i] = e

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        sent.wait()
        time.sleep(0.3)   # the 8 requests are in the server, waiting for the batch window
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:   # the idle client asks during the drain
            got[8] = clients[8].select_world(scene(seed=48), seed=48)
        except ServerError as e:
            got[8] = e
        for t in threads:
            t.join(120)
        assert proc.wait(120) == 0
        for c in clients:
            c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    answered = [i for i in range(8) if isinstance(got[i], dict)]
    for i in range(8):
        assert isinstance(got[i], dict) or "shutting down" in str(got[i]), (i, got[i])
    assert answered, "no request in flight was answered"
    for i in answered:
        assert got[i]["action"].shape == (2, 3) and got[i]["seed"] == 40 + i
    assert isinstance(got[8], ServerError) and "shutting down" in str(got[8])
    log = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in log, log
    print(f"answered {len(answered)} of 8 in flight; the ninth: {got[8]}; log: {log.strip().splitlines()}")

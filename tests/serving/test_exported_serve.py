"""`pam-jax serve --exported FILE`: a robot PC serves an export artefact with flax, orbax, TFDS,
TensorFlow and MuJoCo unimportable (a sys.meta_path finder refuses them)."""
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers.scenes import NP, REPO, scene

from pam_jax.serving import PolicyClient, ServerError

BLOCKED = ("flax", "orbax", "tensorflow_datasets", "tensorflow", "mujoco", "optax", "grain")
SERVE = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Refuse())
from pam_jax.cli import main
code = main(sys.argv[1:])
print("loaded:", sorted(m for m in BLOCKED if m in sys.modules), flush=True)
sys.exit(code)
"""


@pytest.mark.slow
def test_serve_exported_without_flax_orbax_tfds_or_mujoco(runs, world_server, tmp_path, capsys):
    from pam_jax.cli import app as cli

    art = tmp_path / "policy.pamx"
    assert cli.main(["export", "--sl", runs["sl"], "--dpo", runs["dpo"], "--out", str(art)]) == 0
    capsys.readouterr()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--exported", str(art), "--port", "0",
                             "--max-batch", "1", "--max-points", "4096"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
        reader.start()
        line = ""
        while "serving" not in line:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read()[-2000:]
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        cloud = scene(seed=60)
        with PolicyClient("127.0.0.1", port) as c:
            assert c.metadata["num_points"] == NP and c.metadata["batch"] == 1
            got = c.select_world(cloud, seed=9)
            with pytest.raises(ServerError, match="points are finite"):
                c.select_world(np.full((500, 3), np.nan), seed=9)
            with pytest.raises(ServerError, match="normalisation scales"):
                c.select(np.full((NP, 3), 100.0, np.float32), seed=9)
        with PolicyClient("127.0.0.1", world_server.port) as c:   # the in-process graph of the same runs
            want = c.select_world(cloud, seed=9)
        assert got["index"] == want["index"]
        np.testing.assert_allclose(got["action"], want["action"], atol=1e-5)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-4, atol=1e-4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()[-2000:]
        reader.join(30)
        rest = [lines.get().strip() for _ in range(lines.qsize())]
        assert "stopped" in rest and "loaded: []" in rest, rest
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

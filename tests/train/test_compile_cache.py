"""The CLI's persistent compilation cache: where it lives, how it is turned off, and that a
second run of the same command loads its compiled programs from it."""
import json
import pathlib
import subprocess
import sys

from pam_jax.train import compile_cache

TINY_EXPERIMENT = '''
from pam_jax.config import *
def get_config():
    return Config(name="cache_tiny",
        model=ModelConfig(num_tokens=16, knn=8, encoder_layers=1, width=32, layers=1, heads=2, mlp_ratio=2),
        diffusion=DiffusionConfig(num_train_timesteps=20, num_inference_steps=4),
        data=DataConfig(num_points=64, batch_size=4),
        train=TrainConfig(steps=1, noise_replicas=2, log_every=1, checkpoint_every=1, num_devices=1))
'''

# runs the CLI in a fresh process and prints how many compilations the persistent cache served
RUN = '''
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event))
from pam_jax.cli.app import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "hits": hits.count("/jax/compilation_cache/cache_hits")}))
'''


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve() == tmp_path / "xdg" / "pam_jax" / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve() == tmp_path / "env"
    assert compile_cache.resolve(str(tmp_path / "flag")) == tmp_path / "flag"   # the flag wins
    for off in ("off", "OFF", "0", "none"):
        assert compile_cache.resolve(off) is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve() is None


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    from pam_jax.cli import app as cli

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["--compile-cache", str(blocker / "sub"), "train", "--experiment", "none.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pam-jax: error: --compile-cache: cannot create")


def _train(tmp_path: pathlib.Path, cache: pathlib.Path, run: str) -> dict:
    exp = tmp_path / "exp.py"
    exp.write_text(TINY_EXPERIMENT)
    out = subprocess.run([sys.executable, "-c", RUN, "--compile-cache", str(cache), "train", "--experiment",
                          str(exp), "--no-progress", "--set", f"train.run_dir={tmp_path / run}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_cli_run_hits_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path, cache, "run1")
    entries = sorted(p.name for p in cache.iterdir())
    assert first == {"code": 0, "hits": 0} and entries
    second = _train(tmp_path, cache, "run2")   # a fresh run folder: the same programs compile again
    assert second["code"] == 0 and second["hits"] >= 1

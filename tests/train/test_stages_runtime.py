"""The runtime section is recorded with every run (config.json) and with every benchmark result,
field by field, and it is not part of the model: a preference run made with other kernel forms
fine-tunes a supervised run made with the defaults."""
import dataclasses
import json

from helpers.tiny import TINY_MODEL, tiny_config

from pam_jax.config import RuntimeConfig, from_dict, override
from pam_jax.eval import checks
from pam_jax.train.loop import train
from pam_jax.train.restore import load_policy

FIELDS = [f.name for f in dataclasses.fields(RuntimeConfig)]


def _run(cfg):
    return train(cfg, progress_bar=False, log=lambda *a: None)


def test_runs_record_every_kernel_field_and_preference_runs_ignore_them(tmp_path):
    sl = tiny_config(tmp_path / "sl", steps=2, checkpoint_every=2)
    _run(sl)
    written = json.loads((tmp_path / "sl" / "config.json").read_text())["runtime"]
    assert list(written) == FIELDS and written == dataclasses.asdict(RuntimeConfig())
    dpo = override(tiny_config(tmp_path / "dpo"), [
        "train.stage=dpo", f"preference.init_from={tmp_path / 'sl'}", "data.source=toy_preference",
        "data.num_states=8", "data.batch_size=4", "preference.num_candidates=3", "train.steps=2",
        "train.checkpoint_every=2", "runtime.fps=rows", "runtime.pad=on", "runtime.small_attention=0"])
    _run(dpo)                                            # loads the SL parent made with the defaults
    written = json.loads((tmp_path / "dpo" / "config.json").read_text())["runtime"]
    assert list(written) == FIELDS
    assert (written["fps"], written["pad"], written["small_attention"]) == ("rows", "on", 0)
    assert load_policy(tmp_path / "dpo").cfg.runtime == dpo.runtime
    # the evaluation's run checks compare the model and diffusion sections only
    assert checks._model_difference(load_policy(tmp_path / "dpo").cfg, load_policy(tmp_path / "sl").cfg) is None
    # a config.json from before the section existed reads as the defaults
    old = json.loads((tmp_path / "sl" / "config.json").read_text())
    del old["runtime"]
    assert from_dict(old).runtime == RuntimeConfig()


def test_bench_json_records_every_kernel_field(monkeypatch, capsys):
    """`pam-jax bench sampler --json --set runtime...` at the smallest size (the tiny model, one
    row of 2 DDIM steps and 2 Monte-Carlo samples): its machine block holds every runtime field."""
    from pam_jax import cli
    from pam_jax.bench import compute as bench

    real = bench.bench_sampler

    def tiny(**kw):
        kw.update(rows=[{"name": "tiny", "N": 2, "B": 1, "steps": 2, "M": 2, "staged": False}], budget_s=0.01,
                  model_overrides=dataclasses.asdict(TINY_MODEL))
        return real(**kw)

    monkeypatch.setattr(bench, "bench_sampler", tiny)
    assert cli.main(["bench", "sampler", "--json", "--points", "64", "--set", "runtime.fps=argmax",
                     "runtime.small_attention=0"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r["machine"]["runtime"]) == FIELDS
    assert r["machine"]["runtime"] == dataclasses.asdict(RuntimeConfig(fps="argmax", small_attention=0))
    assert cli.main(["bench", "sampler", "--set", "train.steps=3"]) == 2   # only the runtime section
    assert "only the runtime section" in capsys.readouterr().err

"""What `pip install .` installs: the package with its experiments and data builders inside its
own namespace (pam_jax.experiments, pam_jax.data_builders), and the pam-jax command."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(REPO)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    (path,) = out.glob("pam_jax-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_experiments_and_builders_under_the_package(wheel):
    names = set(wheel.namelist())
    for must in ("pam_jax/cli/app.py", "pam_jax/experiments/toy_bimodal.py", "pam_jax/experiments/_sim.py",
                 "pam_jax/data_builders/deformpam/deformpam_dataset_builder.py", "pam_jax/tasks.py",
                 "pam_jax/annotate/static/annotate.js", "pam_jax/workflows/study.py", "pam_jax/toy/data.py"):
        assert must in names, must
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"experiments", "data_builders", "tests", "benchmarks"}      # no generic top-level names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pam-jax = pam_jax.cli:main" in wheel.read(entry).decode()

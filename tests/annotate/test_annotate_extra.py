"""`pam-jax annotate` without its extra (starlette, uvicorn, plotly): one line that names the
extra to install, no traceback."""
from __future__ import annotations

import sys

import pytest

from pam_jax import cli

SERVER = "pam_jax.annotate.server"


@pytest.mark.parametrize("missing", ["starlette", "uvicorn", "plotly"])
def test_annotate_without_its_extra_names_the_extra(missing, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)          # `import missing` now raises ImportError
    monkeypatch.delitem(sys.modules, SERVER, raising=False)  # so the server module is imported anew
    assert cli.main(["annotate", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"pam-jax: error: the annotator needs {missing}, not installed "
                   "(pip install 'pam_jax[annotate]')\n"), err


def test_plotly_js_without_plotly_names_the_extra(monkeypatch):
    pytest.importorskip("starlette")
    from pam_jax.annotate import server as server_lib
    from pam_jax.annotate import store as store_lib

    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(store_lib.StoreError, match=r"pip install 'pam_jax\[annotate\]'"):
        server_lib.plotly_js()

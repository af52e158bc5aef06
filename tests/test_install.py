"""What a user checks first about an install: `pam-jax --version`, the licence, the citation, and
that uv.lock (what `make install` installs) agrees with pyproject.toml and with the README's
table of the jax each Python gets."""
from __future__ import annotations

import pathlib
import re
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet

from pam_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = tomllib.loads((REPO / "uv.lock").read_text())


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"pam-jax {PROJECT['version']}"
    assert metadata.version("pam_jax") == PROJECT["version"]


def test_licence_is_apache_2():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "Copyright 2026 The pam_jax authors" in text
    assert PROJECT["license"] == "Apache-2.0"


def test_citation_cites_pam_jax_and_credits_deformpam():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == PROJECT["version"]
    assert cff["license"] == "Apache-2.0" and "pam_jax" in cff["title"]
    (ref,) = cff["references"]
    assert ref["title"].startswith("DeformPAM:") and ref["year"] == 2025
    assert [a["family-names"] for a in ref["authors"]] == ["Chen", "Xue", "Zhou", "Fang", "Lu"]
    assert "ICRA" in ref["conference"]["name"]
    assert any("2410.11584" in i["value"] for i in ref["identifiers"])


def _locked(name: str, python: str) -> str:
    """The version uv.lock gives ``name`` on ``python``: its one entry, or the entry one of whose
    resolution markers holds there."""
    env = {"python_full_version": f"{python}.0", "python_version": python}
    (version,) = [p["version"] for p in LOCK["package"] if p["name"] == name
                  and ("resolution-markers" not in p
                       or any(Marker(m).evaluate(env) for m in p["resolution-markers"]))]
    return version


def test_lock_covers_the_pythons_pyproject_allows():
    assert SpecifierSet(LOCK["requires-python"]) == SpecifierSet(PROJECT["requires-python"])
    editable = next(p for p in LOCK["package"] if p["name"] == "pam-jax")
    assert editable["source"] == {"editable": "."}
    for py in ("3.11", "3.12", "3.13"):
        assert py + ".0" in SpecifierSet(PROJECT["requires-python"])
        jax = _locked("jax", py)
        assert jax in SpecifierSet(next(r for r in PROJECT["dependencies"] if r.startswith("jax"))[3:])
        assert _locked("jaxlib", py) == jax          # jax and jaxlib move together


def test_readme_table_is_the_locks():
    rows = re.findall(r"^\| (3\.1\d) +\| jax (\S+), flax (\S+) +\|", (REPO / "README.md").read_text(), re.M)
    assert [r[0] for r in rows] == ["3.11", "3.12", "3.13"]
    for py, jax, flax in rows:
        assert (_locked("jax", py), _locked("flax", py)) == (jax, flax), py

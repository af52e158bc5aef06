"""Small result files kept twice: in a run folder and, when given, in a results folder meant to
be committed, from which a run folder that lacks them (a new machine) is restored."""
from __future__ import annotations

import json
import pathlib
import shutil

from pam_jax.data.io import write_json_atomic


def _load(path: pathlib.Path):
    return json.loads(path.read_text()) if path.exists() else None


class Mirror:
    def __init__(self, root, results=None):
        self.root = pathlib.Path(root)
        self.results = pathlib.Path(results) if results else None

    def save(self, rel: str, obj) -> None:
        """Write JSON `obj` at `rel` in the run folder and copy it under `results`."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj)
        self._copy(rel)

    def save_text(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self._copy(rel)

    def _copy(self, rel: str) -> None:
        if self.results is not None:
            dest = self.results / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / rel, dest)

    def get(self, rel: str):
        """The JSON at `rel` (restored from `results` when the run folder lacks it), else None."""
        got = _load(self.root / rel)
        if got is None and self.results is not None:
            got = _load(self.results / rel)
            if got is not None:
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.results / rel, self.root / rel)
        return got

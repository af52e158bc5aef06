"""Small file helpers of the data layer: atomic JSON writes and tolerant JSON reads."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import uuid

log = logging.getLogger("pam_jax.data")



def write_json_atomic(path: pathlib.Path, data) -> bool:
    """Write JSON via a temp file + os.replace. Returns False if the folder is read-only."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.info("could not write %s (%s)", path, e)
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


def read_json(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None

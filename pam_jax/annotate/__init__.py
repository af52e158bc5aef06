"""`pam-jax annotate`: rank candidate actions in a browser (human preference labels).

    pam-jax annotate --data runs/collect/rope_finetune [--task rope] [--annotator alice]

Serves one page on http://127.0.0.1:8765/ over a folder of samples in the published layout
(finetune samples: a cloud and K candidate actions, ``pose_virtual.prediction.begin``). The
annotator ranks the candidates, marks equal pairs and candidates that cannot be compared, and
may give their own action; each submission is validated and written as the sample's
``annotation`` (``metadata.yaml`` and ``annotation.yaml``, the published protocol, see
:mod:`.protocol`), atomically, with a compare-and-swap on the sample's version so that two
annotators on one folder never overwrite each other. Stop it with Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib

TASK_CHOICES = ("rope", "nut", "tshirt", "tshirt_short")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="folder of samples in the published layout (finetune samples with candidates)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    parser.add_argument("--task", choices=TASK_CHOICES, default=None,
                        help="the task of the samples (default: from each sample's action type)")
    parser.add_argument("--annotator", default=None, metavar="NAME",
                        help="name recorded with every annotation (default: asked on the page)")


EXTRA = ("starlette", "uvicorn", "plotly")   # the `annotate` extra of pyproject.toml
INSTALL_HINT = "pip install 'pam_jax[annotate]'"


def missing_extra() -> list[str]:
    """The packages of the `annotate` extra that cannot be imported here."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def run(args) -> int:
    missing = missing_extra()
    if missing:
        raise ImportError(f"the annotator needs {', '.join(missing)}, not installed "
                          f"({INSTALL_HINT})")
    from . import server as server_lib
    from . import store as store_lib
    if not 0 <= int(args.port) <= 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    try:
        store = store_lib.Store(args.data, task=getattr(args, "task", None),
                                annotator=getattr(args, "annotator", None))
        server_lib.plotly_js()
        server, sock, url = server_lib.make_server(store, args.host, int(args.port))
    except (store_lib.StoreError, store_lib.Invalid) as e:
        raise ValueError(str(e)) from None
    except ImportError as e:
        raise ImportError(f"the annotator needs starlette, uvicorn and plotly ({INSTALL_HINT}): {e}") from None
    if not server_lib.is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this address can read and "
              "annotate these samples (there is no login)")
    p = store.progress()
    print(f"annotating {store.root} ({p['done']}/{p['total']} samples done)")
    print(f"open {url} in a browser; Ctrl-C stops the server", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("annotator stopped")
    return 0

"""`pam-jax serve`, `pam-jax export` and `pam-jax info`: from trained runs to a robot."""
from __future__ import annotations

import argparse
import json
import os
import sys

from pam_jax.serving.protocol import BATCHING, MODES


def _add_runs(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--sl", required=required, help="the supervised run (samples the candidates); with --dpo or "
                                                   "--reward, the checkpoint that run was trained against is used")
    p.add_argument("--sl-step", type=int, default=None,
                   help="use this SL checkpoint instead of the one the preference run was trained against")
    p.add_argument("--dpo", help="the DPO run (implicit reward: scores the candidates)")
    p.add_argument("--reward", help="an explicit reward run (--mode explicit)")
    p.add_argument("--mode", choices=MODES, default="implicit",
                   help="how a candidate is chosen: implicit (DPO reward), explicit (reward model), first "
                        "(no selection); default %(default)s")
    p.add_argument("--candidates", type=int, default=None, help="N (default: the scoring run's preference config)")
    p.add_argument("--reward-samples", type=int, default=None, help="M of the implicit reward (default: the DPO run's)")
    p.add_argument("--batching", choices=BATCHING, default="exact",
                   help="exact: each observation of a batch computed alone in the graph, results bit-identical "
                        "to a lone request; vmap: vectorised (faster on a GPU, last float bits may depend on "
                        "the batch size); default %(default)s")


def add_subparsers(sub) -> None:
    s = sub.add_parser("serve", help="serve a policy to a robot over a websocket",
                       description="A websocket policy server: the metadata on connect, msgpack requests with "
                                   "numpy clouds, dynamic batching of concurrent requests (padded to a few "
                                   "batch sizes compiled at start-up), GET /healthz on the same port. Clients: "
                                   "from pam_jax_client import PolicyClient, or openpi's WebsocketClientPolicy "
                                   "(world-frame clouds, framed by the server). SIGTERM or Ctrl-C drains and "
                                   "stops it.")
    _add_runs(s, required=False)
    s.add_argument("--exported", metavar="FILE",
                   help="serve a `pam-jax export` artefact instead of runs (jax and numpy only: no flax, orbax, "
                        "TFDS or MuJoCo); its batch size and selection are fixed at export")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    s.add_argument("--max-batch", type=int, default=8, help="most requests answered by one call")
    s.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long the first request of a batch waits for others")
    s.add_argument("--calibration", metavar="FILE",
                   help="the robot's world-to-task transform for world-frame clouds: a (4, 4) rigid matrix in a "
                        ".npy or .json file (default identity; a request may bring its own)")
    s.add_argument("--max-points", type=int, default=None,
                   help="the largest world-frame cloud accepted, in points (default 400000)")
    s.add_argument("--drain-s", type=float, default=30.0,
                   help="on SIGTERM, how long to wait for the requests in flight (default %(default)s)")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write the selection graph as one file that runs without the training code",
                       description="A jax.export artefact of the whole selection graph with its parameters, "
                                   "normalisation and metadata; load it with pam_jax.serving.load_exported "
                                   "(jax and numpy only, no flax).")
    _add_runs(e)
    e.add_argument("--out", required=True, help="the artefact file (a zip)")
    e.add_argument("--platforms", default=None,
                   help="comma-separated platforms to lower for, e.g. cpu,cuda (default: this machine's)")
    e.add_argument("--batch", type=int, default=1, help="clouds per call of the exported graph")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="the backend: devices, versions, compile cache",
                       description="What jax sees: the backend and its devices, the jax, jaxlib and flax "
                                   "versions, and the persistent compile cache folder.")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def _served(args):
    from pam_jax.serving.graph import load_served

    return load_served(args.sl, args.dpo, args.reward, mode=args.mode, num_candidates=args.candidates,
                       reward_samples=args.reward_samples, batching=args.batching, sl_step=getattr(args, "sl_step", None))


def _calibration(path):
    import numpy as np

    if path is None:
        return None
    try:
        m = np.load(path) if str(path).endswith(".npy") else np.asarray(json.loads(open(path).read()), np.float64)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"--calibration {path}: cannot read a (4, 4) matrix ({e})") from None
    from pam_jax.pointcloud import Rigid

    return Rigid(m).matrix   # checked: rigid, finite


def _log_to_stderr() -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pam-jax serve: %(message)s"))
    handler.set_name("pam-jax serve")
    for name in ("pam_jax.serving", "websockets.server"):
        logger = logging.getLogger(name)
        if any(h.get_name() == "pam-jax serve" for h in logger.handlers):   # a second serve in one process
            continue
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if name == "pam_jax.serving" else logging.WARNING)
        logger.propagate = False


def cmd_serve(args) -> int:
    from pam_jax.serving.server import MAX_WORLD_POINTS, PolicyServer, batch_sizes

    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if bool(args.exported) == bool(args.sl):
        raise ValueError("serve needs either --sl RUN (with --dpo or --reward) or --exported FILE")
    if args.exported and (args.dpo or args.reward or args.candidates or args.reward_samples):
        raise ValueError("--exported serves the artefact's own selection: drop --dpo, --reward, --candidates "
                         "and --reward-samples")
    if not args.drain_s >= 0:
        raise ValueError(f"--drain-s must be >= 0, got {args.drain_s}")
    sizes = batch_sizes(args.max_batch)   # before loading anything
    calibration = _calibration(args.calibration)
    if args.exported:
        from pam_jax.serving.exported import load_exported

        served = load_exported(args.exported)
    else:
        served = _served(args)
    _log_to_stderr()
    server = PolicyServer(served, host=args.host, port=args.port, sizes=sizes, window_ms=args.batch_window_ms,
                          calibration=calibration, drain_s=args.drain_s,
                          max_world_points=args.max_points if args.max_points is not None
                          else max(MAX_WORLD_POINTS, served.num_points))

    def bound(s):
        print(f"listening on {s.host}:{s.port}; compiling batch sizes {', '.join(map(str, sizes))} "
              "(/healthz answers 503 until done) ...", flush=True)

    def ready(s):
        m = served.metadata
        print(f"serving {m['mode']} selection ({m['task']}, {m['num_points']} points, "
              f"N={m['selection']['num_candidates']}) on ws://{s.host}:{s.port} "
              f"(health: http://{s.host}:{s.port}/healthz)", flush=True)

    try:
        server.run(on_bound=bound, on_ready=ready)
    except OSError as e:   # the port is taken, the host is not ours
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print("stopped", flush=True)
    return 0


def cmd_export(args) -> int:
    import jax

    from pam_jax.serving.export import export_policy, parse_platforms

    platforms = parse_platforms(args.platforms) if args.platforms else (_platform_name(jax.default_backend()),)
    out = export_policy(_served(args), args.out, platforms=platforms, batch=args.batch)
    print(f"exported {args.mode} selection for {', '.join(platforms)}, batch {args.batch}: {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB); load with pam_jax.serving.load_exported")
    return 0


def _platform_name(backend: str) -> str:
    return {"gpu": "cuda"}.get(backend, backend)


def info() -> dict:
    import flax
    import jax
    import jaxlib

    cache = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR") or None
    devices = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    return {"backend": jax.default_backend(), "devices": devices,
            "device_count": jax.device_count(), "process_count": jax.process_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "python": sys.version.split()[0], "compile_cache": cache}


def cmd_info(args) -> int:
    r = info()
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"backend: {r['backend']} ({r['device_count']} device{'s' if r['device_count'] != 1 else ''}, "
          f"{r['process_count']} process{'es' if r['process_count'] != 1 else ''})")
    for d in r["devices"]:
        print(f"  {d}")
    print(f"jax {r['jax']}, jaxlib {r['jaxlib']}, flax {r['flax']}, python {r['python']}")
    print(f"compile cache: {r['compile_cache'] or 'off (set JAX_COMPILATION_CACHE_DIR to keep compiled graphs)'}")
    return 0


def add_bench_arguments(b: argparse.ArgumentParser) -> None:
    """`pam-jax bench serve`'s flags (the bench subcommand's --points and --json are shared)."""
    g = b.add_argument_group("serve", "pam-jax bench serve: loopback clients against the in-process selector")
    g.add_argument("--clients", type=int, default=8, help="concurrent loopback clients")
    g.add_argument("--requests", type=int, default=64, help="requests in all, split over the clients")
    g.add_argument("--max-batch", type=int, default=8)
    g.add_argument("--batch-window-ms", type=float, default=5.0)
    g.add_argument("--sl", help="serve these runs (default: random reference-size networks, --points points)")
    g.add_argument("--dpo")
    g.add_argument("--reward")
    g.add_argument("--mode", choices=MODES, default="implicit")
    g.add_argument("--batching", choices=BATCHING, default="exact")


def cmd_bench_serve(args) -> int:
    from pam_jax.bench import compute as bench
    from pam_jax.bench import serve_bench

    if args.sl:
        args.candidates = args.reward_samples = None
        served = _served(args)
    else:
        served = serve_bench.reference_served(args.points, args.batching)
    r = serve_bench.bench_serve(served, clients=args.clients, requests=args.requests, max_batch=args.max_batch,
                                window_ms=args.batch_window_ms)
    bench.print_result(r, args.json, serve_bench.format_serve)
    return 0

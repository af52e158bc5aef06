"""The annotator's web server (Starlette): one page, three static files, a small JSON API.

    GET  /                                   the page
    GET  /static/{annotate.js,annotate.css}  the page's code (this package)
    GET  /static/plotly.min.js               plotly.js, served from the plotly Python package
    GET  /api/progress                       {total, done, first_unannotated, samples, annotator}
    GET  /api/samples/{index}                one sample: cloud, candidates, saved ranking, version
    POST /api/samples/{index}/annotation     {sample_id, version, ranked, equal, not_comparable,
                                              own_action, annotator?} -> 200 | 400 | 409

Samples are addressed by their index in the server's own list (an int route parameter); no
client value is ever used as a path. Only the files above are served. Requests must carry a
Host header naming this server (DNS-rebinding guard); a POST must be JSON (a cross-site form
cannot send it without a CORS preflight, which is never granted), same-origin when an Origin
header is present, and at most 64 KiB.
"""
from __future__ import annotations

import importlib.resources
import ipaddress
import json
import pathlib
import socket

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import store as store_lib

STATIC = pathlib.Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Content-Security-Policy": CSP}


def plotly_js() -> pathlib.Path:
    """plotly.min.js as shipped in the plotly Python package (served locally, never fetched)."""
    try:
        path = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        raise store_lib.StoreError("the annotator needs the plotly package "
                                  "(pip install 'pam_jax[annotate]')") from None
    path = pathlib.Path(str(path))
    if not path.is_file():
        raise store_lib.StoreError(f"{path}: missing from the plotly package")
    return path


def _json(data, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _error(message: str, status: int, **extra) -> JSONResponse:
    return _json({"error": str(message).splitlines()[0] if str(message) else "error", **extra}, status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str) -> list[str]:
    """Host headers accepted: the loopback names when bound to loopback; the bound name too
    otherwise; anything when bound to every interface (0.0.0.0 / ::)."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    names = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host not in names:
        names.append(host)
    return names


def create_app(store: store_lib.Store, *,
               allowed_hosts=("127.0.0.1", "localhost", "::1", "[::1]")) -> Starlette:
    js = plotly_js()

    def static(path: pathlib.Path, media_type: str, cache: str = "no-cache"):
        async def endpoint(request: Request):
            return FileResponse(path, media_type=media_type,
                                headers={**SECURITY_HEADERS, "Cache-Control": cache})
        return endpoint

    async def progress(request: Request):
        p = await run_in_threadpool(store.progress)
        p.update(annotator=store.annotator, task=store.spec.name if store.spec is not None else None,
                 root=store.root.name)
        return _json(p)

    def index_of(request: Request) -> int:
        i = request.path_params["index"]
        store.entry(i)  # IndexError -> 404
        return i

    async def sample(request: Request):
        try:
            i = index_of(request)
        except IndexError as e:
            return _error(str(e), 404)
        return _json(await run_in_threadpool(store.load, i))

    async def annotate(request: Request):
        try:
            i = index_of(request)
        except IndexError as e:
            return _error(str(e), 404)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return _error("cross-origin request refused", 403)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error("expected Content-Type: application/json", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(f"request too large (more than {MAX_BODY} bytes)", 413)
        try:
            payload = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error("the request is not valid JSON", 400)
        try:
            result = await run_in_threadpool(store.save, i, payload)
        except store_lib.Invalid as e:
            return _error(str(e), 400)
        except store_lib.Conflict as e:
            return _error(str(e), 409, **e.current)
        except store_lib.Unavailable as e:
            return _error(str(e), 422)
        except OSError as e:
            return _error(f"could not write the annotation ({type(e).__name__}: {e.strerror or e})", 500)
        return _json(result)

    async def not_found(request: Request, exc):
        return _error("not found", 404)

    async def method_not_allowed(request: Request, exc):
        return _error("method not allowed", 405)

    routes = [
        Route("/", static(STATIC / "index.html", "text/html; charset=utf-8")),
        Route("/static/annotate.js", static(STATIC / "annotate.js", "text/javascript; charset=utf-8")),
        Route("/static/annotate.css", static(STATIC / "annotate.css", "text/css; charset=utf-8")),
        Route("/static/plotly.min.js", static(js, "text/javascript; charset=utf-8", "max-age=86400")),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/progress", progress),
        Route("/api/samples/{index:int}", sample),
        Route("/api/samples/{index:int}/annotation", annotate, methods=["POST"]),
    ]
    return Starlette(routes=routes,
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
                     exception_handlers={404: not_found, 405: method_not_allowed})


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = any free port); one-line StoreError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise store_lib.StoreError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def make_server(store: store_lib.Store, host: str = "127.0.0.1", port: int = 8765, *, log_level="warning"):
    """-> (uvicorn.Server, bound socket, url). ``server.run(sockets=[sock])`` serves until
    ``server.should_exit`` is set (Ctrl-C sets it when run in the main thread)."""
    import uvicorn

    app = create_app(store, allowed_hosts=allowed_hosts_for(host))
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return server, sock, f"http://{shown}:{actual}/"


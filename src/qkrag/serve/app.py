"""The web app of `qkrag serve`: a Starlette application with a JSON API over `workspace` and one static page.

Routes (all GET, all read-only):
  /                      the page (static/index.html, plain HTML + JS, no build step)
  /api/sources           the collections served, their judged queries, and why any failed to load
  /api/query             ?source=NAME&q=TEXT or &query_id=ID, optional &relevant=ID,ID and &k=10: the four rankings
  /api/collection        ?source=NAME: per-query gains and losses, histograms, reliability diagram
  /api/aspects           the aspect maps and neighbours (when started with --aspects FILE)
  /api/pairs             ?n=25&seed=0: a sample of generated pairs (when started with --pairs FOLDER)

Every library error becomes `{"error": "<one line: what, problem, fix>"}` with status 400 (404 for an unknown
collection), which the page shows in place of results; anything else is logged with its traceback on the server and
answered with a one-line message, never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkrag.errors import QkragError, fail
from qkrag.serve.workspace import Source, collection_report, run_query

log = logging.getLogger("qkrag.serve")
STATIC = Path(__file__).parent / "static"


@dataclass
class Served:
    """What one `qkrag serve` process shows: its sources (by name, in order), and the optional aspect and pairs
    views, each already computed, or the error that kept it from loading."""

    sources: dict[str, Source]
    aspects: dict[str, Any] | None = None
    pairs_folder: str | None = None
    errors: dict[str, str] = field(default_factory=dict)  # view -> why it could not load

    def source(self, name: str | None) -> Source:
        if not name and self.sources:
            return next(iter(self.sources.values()))
        if name not in self.sources:
            raise fail(f"collection {name!r}", "is not served here",
                       f"pick one of {list(self.sources)} (or restart `qkrag serve` with it)", UnknownSource)
        return self.sources[name]


class UnknownSource(QkragError):
    """A collection name the server does not serve (answered with 404)."""


def open_served(folders: list[str | Path] = (), indexes: list[Any] = (), *, encoder: Any = None,
                projection: str | Path | None = None, split: str = "test", aspects: str | Path | None = None,
                pairs: str | Path | None = None) -> Served:
    """Load what the page shows: each BEIR folder and each Chroma collection (an `IndexConfig`) as a source, searched
    by `encoder` (default: the default encoder) with `projection` when given, the aspect view of a labelled corpus
    and a pairs folder. A source that fails to load stays listed with its error; so does a projection for another
    encoder (the page shows both)."""
    from qkrag.embed.encoders import make_encoder
    from qkrag.serve.workspace import load_aspects, load_folder, load_index

    if not folders and not indexes:
        raise fail("qkrag serve", "was given nothing to show",
                   "pass a BEIR folder (e.g. data/demo) or --collection NAME")
    encoder = encoder or make_encoder()
    sources: dict[str, Source] = {}
    for folder in folders:
        source = load_folder(folder, encoder, projection, split)
        sources[_unique(source.name, sources)] = source
    for config in indexes:
        source = load_index(config, encoder, projection)
        sources[_unique(source.name, sources)] = source
    served = Served(sources, pairs_folder=str(pairs) if pairs else None)
    if aspects:
        try:
            served.aspects = load_aspects(aspects, encoder)
        except QkragError as err:
            served.errors["aspects"] = str(err)
    return served


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}-{n}", n + 1
    return out


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise fail(name, f"{raw!r} is not a whole number", f"use a number from {low} to {high}") from None
    if not low <= value <= high:
        raise fail(name, f"{value} is out of range", f"use a number from {low} to {high}")
    return value


def _require_server_packages() -> None:
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise fail("qkrag serve", f"needs {' and '.join(missing)}, which are not installed",
                   'install the serve extra: pip install "qkrag[serve]"')


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def host_allowed(host_header: str | None, port: int | None, allowed: tuple[str, ...] = LOOPBACK_NAMES) -> bool:
    """Whether a request's Host header names this server: one of `allowed` (loopback names, or the address it was
    bound to), with the port it listens on. A page on another site that rebinds its DNS name to 127.0.0.1 sends its
    own name as Host, so it is refused: it cannot read the corpus through the visitor's browser."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # an IPv6 literal: [::1]:8765
        name, _, rest = host.partition("]")
        name, given = name + "]", rest.removeprefix(":")
    else:
        name, _, given = host.partition(":")
    try:
        given_port = int(given) if given else 80  # no port in Host: the scheme's default
    except ValueError:
        return False
    return name in allowed and (port is None or given_port == int(port))


def make_app(served: Served, allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES):
    """The Starlette application serving `served`. Requests whose Host header is not one of `allowed_hosts` with
    the server's port are answered 421 (see `host_allowed`)."""
    _require_server_packages()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def page(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def sources(request):
        return JSONResponse({"sources": [s.describe() for s in served.sources.values()],
                             "aspects": served.aspects is not None or "aspects" in served.errors,
                             "pairs": served.pairs_folder is not None, "errors": served.errors})

    def query(request):
        p = request.query_params
        relevant = [r.strip() for r in p.get("relevant", "").split(",") if r.strip()]
        return JSONResponse(run_query(served.source(p.get("source")), p.get("q"), query_id=p.get("query_id") or None,
                                      relevant=relevant, k=_int(p, "k", 10, 1, 100)))

    def collection(request):
        return JSONResponse(collection_report(served.source(request.query_params.get("source"))))

    def aspects(request):
        if served.aspects is None:
            raise fail("aspect view", served.errors.get("aspects", "no labelled corpus given"),
                       "start `qkrag serve` with --aspects FILE (e.g. data/cities/cities.jsonl)")
        return JSONResponse(served.aspects)

    def pairs(request):
        from qkrag.serve.workspace import load_pairs_view

        if served.pairs_folder is None:
            raise fail("pairs view", "no pairs folder given", "start `qkrag serve` with --pairs FOLDER "
                       "(the --out of `qkrag generate`)")
        p = request.query_params
        return JSONResponse(load_pairs_view(served.pairs_folder, _int(p, "n", 25, 1, 500),
                                            _int(p, "seed", 0, 0, 2**31)))

    async def library_error(request, err: QkragError):
        return JSONResponse({"error": str(err)}, status_code=404 if isinstance(err, UnknownSource) else 400)

    async def other_error(request, err: Exception):
        log.exception("qkrag serve: %s failed", request.url.path)
        return JSONResponse({"error": f"internal error while answering {request.url.path}: {type(err).__name__}: "
                             f"{err} (the server log has the details)"}, status_code=500)

    async def check_host(request, call_next):
        server = request.scope.get("server")
        if not host_allowed(request.headers.get("host"), server[1] if server else None, allowed_hosts):
            return JSONResponse({"error": f"Host {request.headers.get('host')!r}: is not this server. Fix: open it "
                                 "as http://127.0.0.1:PORT/ (the address `qkrag serve` printed)"}, status_code=421)
        return await call_next(request)

    routes = [Route("/", page), Route("/api/sources", sources), Route("/api/query", query),
              Route("/api/collection", collection), Route("/api/aspects", aspects), Route("/api/pairs", pairs),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, exception_handlers={QkragError: library_error, Exception: other_error},
                     middleware=[Middleware(BaseHTTPMiddleware, dispatch=check_host)])


def serve(served: Served, host: str = "127.0.0.1", port: int = 8765, on_ready: Any = None) -> None:
    """Serve the page on `host`:`port` until interrupted (127.0.0.1 unless told otherwise: the page shows your
    corpus to whoever can reach it). `on_ready(url)` is called once the socket listens."""
    import uvicorn

    names = LOOPBACK_NAMES if host in ("127.0.0.1", "localhost", "::1") else (*LOOPBACK_NAMES, host.lower())
    config = uvicorn.Config(make_app(served, names), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        startup = server.startup

        async def announced(sockets=None):
            await startup(sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
                on_ready(f"http://{host}:{bound}/")

        server.startup = announced  # type: ignore[method-assign]
    server.run()

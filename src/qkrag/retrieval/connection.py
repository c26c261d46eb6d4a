"""Where a Chroma index lives and how qkrag reaches it: an embedded database on disk, or a Chroma server by URL.

`IndexConfig` names the collection, its location and the HNSW settings it is built with; `connect` returns a client.
Against a Chroma server every request has a timeout (`IndexConfig.timeout`, `$QKRAG_TIMEOUT`): a server that accepts
and never answers fails in seconds with a message, instead of hanging, and a dropped connection is one clear line
(`ServerCalls`), not an httpx traceback.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkrag.cache import default_cache_dir, default_timeout
from qkrag.errors import fail, redact
from qkrag.ranking import Space, check_space

# Chroma's own defaults, for the record and the benchmark; ours (IndexConfig) are higher, measured in index_bench.
CHROMA_DEFAULT_HNSW = {"ef_search": 100, "ef_construction": 100, "M": 16}


@dataclass
class IndexConfig:
    """Where the index lives and how Chroma builds it.

    `host` set: a Chroma server (`chroma run --path P --port N`) through `chromadb.HttpClient`; otherwise an embedded
    `PersistentClient` at `path`. `space`, `ef_construction` and `M` are fixed when a collection is created;
    `ef_search` can change: it is stored whenever the collection is opened. Chroma 1.5.9 reads it when it loads the
    HNSW graph, though, and keeps a loaded graph for the life of the client (or server) process, so a new ef_search
    takes effect in the next process, or in this one if the collection has not been queried yet.
    """

    collection: str = "qkrag"
    path: str | os.PathLike[str] = ".qkrag/chroma"
    host: str | None = None
    port: int = 8000
    space: Space = "cosine"
    # HNSW settings chosen for near-exact recall where Chroma's defaults lose much of it on unclustered vectors; the
    # recall and latency of both are in benchmarks/results/index_bench.md.
    ef_search: int = 400
    ef_construction: int = 200
    M: int = 32
    batch_size: int = 512  # documents per embed + upsert step; must stay below the client's get_max_batch_size()
    timeout: float = field(default_factory=default_timeout)  # seconds per request to a Chroma server
    lock_timeout: float = 60.0  # seconds a second writer of one collection waits for the first before it fails

    def __post_init__(self) -> None:
        check_space(self.space)
        for name in ("timeout", "lock_timeout"):
            if not float(getattr(self, name)) > 0:
                raise fail(f"IndexConfig.{name}", f"must be a positive number of seconds, got {getattr(self, name)!r}",
                           "pass a value above 0")
        for name in ("ef_search", "ef_construction", "M", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise fail(f"IndexConfig.{name}", f"must be a positive integer, got {getattr(self, name)!r}",
                           "pass a value of 1 or more")

    @property
    def location(self) -> str:
        return f"http://{self.host}:{self.port}" if self.host else str(Path(self.path))

    @property
    def lock_path(self) -> Path:
        """The lock file of this collection's writers: beside the Chroma folder for an embedded index; for a server,
        under the local cache folder, keyed by host:port:collection (it only keeps out writers on this machine)."""
        if self.host:
            key = hashlib.sha256(f"{self.host}:{self.port}:{self.collection}".encode()).hexdigest()[:16]
            return default_cache_dir() / "locks" / f"chroma-{key}.lock"
        folder = Path(self.path).resolve()
        return folder.parent / f".{folder.name}.{self.collection}.lock"

    def hnsw(self) -> dict[str, Any]:
        """The collection `configuration={"hnsw": ...}` Chroma 1.x takes at creation (not legacy `hnsw:*` metadata)."""
        return {"space": self.space, "ef_search": int(self.ef_search),
                "ef_construction": int(self.ef_construction), "max_neighbors": int(self.M)}


def connect(config: IndexConfig):
    """A Chroma client for `config`: HTTP when a host is given, else embedded on disk. Telemetry is off."""
    import chromadb

    # Chroma keeps one client system per path/host in a process and refuses a second one with other settings, so
    # every qkrag client is made with exactly these settings.
    settings = chromadb.Settings(anonymized_telemetry=False)
    if not config.host:
        Path(config.path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(config.path), settings=settings)
    _check_answers(config)
    try:
        client = chromadb.HttpClient(host=config.host, port=int(config.port), settings=settings)
    except Exception as err:  # connection refused, wrong port, not a Chroma server...
        raise fail(config.location, f"cannot reach a Chroma server ({type(err).__name__}: {redact(str(err))})",
                   f"start one with `chroma run --path DIR --host {config.host} --port {config.port}`, "
                   "or drop --host to use an embedded index on disk") from None
    # chromadb 1.5.9 builds its httpx session with timeout=None: a server that stops answering would hang every later
    # request forever. Its session is not configurable, so set the timeout on it (checked: `_server._session`).
    session = getattr(getattr(client, "_server", None), "_session", None)
    if session is not None:
        import httpx

        session.timeout = httpx.Timeout(float(config.timeout))
    return ServerCalls(client, config)


def _check_answers(config: IndexConfig) -> None:
    """Fail fast, with a message, on an address that refuses or that accepts and never answers: chromadb's own first
    requests (made while the client is built) have no timeout."""
    import urllib.error
    import urllib.request

    url = f"{config.location}/api/v2/heartbeat"
    try:
        with urllib.request.urlopen(url, timeout=float(config.timeout)):
            return
    except urllib.error.HTTPError:
        return  # it answered: whether it is a Chroma server, chromadb's own client says next
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            problem = f"accepts connections but did not answer within {config.timeout:g} s"
        else:
            problem = f"cannot reach a Chroma server ({redact(str(reason))})"
    raise fail(config.location, problem,
               f"start one with `chroma run --path DIR --host {config.host} --port {config.port}`, check that this "
               "address is a Chroma server, or raise the timeout ($QKRAG_TIMEOUT) for a slow one")


class ServerCalls:
    """A Chroma client or collection whose method calls turn a server timeout or a dropped connection into a
    one-line `QkragError` (an httpx traceback tells a user nothing). Attributes pass through unchanged."""

    def __init__(self, target: Any, config: IndexConfig):
        self._target = target
        self._config = config

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx

            try:
                result = value(*args, **kwargs)
            except httpx.TimeoutException:
                raise fail(self._config.location, f"the Chroma server did not answer {name}() within "
                           f"{self._config.timeout:g} s", "check that the server is healthy, or raise the timeout "
                           "($QKRAG_TIMEOUT) for a slow one") from None
            except httpx.TransportError as err:
                raise fail(self._config.location, f"the connection to the Chroma server failed during {name}() "
                           f"({type(err).__name__}: {redact(str(err))})", "check that the server is still up, "
                           "then run again") from None
            # Collections a wrapped client returns are wrapped too, so their calls get the same treatment.
            return ServerCalls(result, self._config) if hasattr(result, "query") and hasattr(result, "upsert") \
                else result

        return call


def collection_names(client: Any) -> list[str]:
    """The collections a Chroma client holds, qkrag's derived (projected) ones included, sorted."""
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(names)


__all__ = ["CHROMA_DEFAULT_HNSW", "IndexConfig", "ServerCalls", "collection_names", "connect"]

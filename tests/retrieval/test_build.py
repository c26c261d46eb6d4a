"""Building an index: idempotent, resumable after a kill, one writer at a time, another corpus refused, and a corrupt
or mixed collection rebuilt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import NO_CACHE, build_quietly, hash_encoder, tiny_corpus
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions
from qkrag.errors import InputError, QkragError
from qkrag.retrieval.build import build_index
from qkrag.retrieval.connection import IndexConfig
from qkrag.retrieval.dense import DenseRetriever
from qkrag.retrieval.store import ChromaIndex


@pytest.fixture
def config(tmp_path: Path) -> IndexConfig:
    return IndexConfig(collection="test-docs", path=tmp_path / "chroma", batch_size=64)


def test_reindexing_is_idempotent(config: IndexConfig, tmp_path: Path) -> None:
    corpus = tiny_corpus(150)
    log = tmp_path / "batches.log"
    encoder = hash_encoder(log=str(log))
    first = build_quietly(corpus, encoder, config)
    assert first.count() == 150 and first.last_build.added == 150
    second = build_quietly(corpus, encoder, config)
    assert second.count() == 150
    assert second.last_build.added == 0 and second.last_build.unchanged == 150
    assert sum(int(n) for n in log.read_text().split()) == 150  # the second run embedded nothing
    ids, vectors = second.get_vectors()
    assert sorted(ids) == sorted(corpus.ids) and len(set(ids)) == 150
    assert vectors.dtype == np.float32 and vectors.shape == (150, 32)


def test_changed_and_removed_documents_are_updated(config: IndexConfig) -> None:
    corpus = tiny_corpus(30)
    build_quietly(corpus, hash_encoder(), config)
    changed = Corpus.from_texts({**{d.id: d.text for d in corpus.documents[:20]}, "d0": "violin violin violin"})
    index = build_quietly(changed, hash_encoder(), config)
    assert index.last_build.updated == 1 and index.last_build.removed == 10 and index.count() == 20
    assert index.search_vectors(hash_encoder().embed_batch(["violin"], "query"), 1)[0][0].id == "d0"


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.fakes import hash_encoder, tiny_corpus, NO_CACHE
from qkrag.retrieval.build import build_index
from qkrag.retrieval.connection import IndexConfig
config = IndexConfig(collection="test-docs", path={path!r}, batch_size=100)
build_index(tiny_corpus(3000), hash_encoder(delay=0.05, log={log!r}), config, NO_CACHE, progress=False)
print("finished")
"""


@pytest.mark.slow  # a fresh interpreter importing chromadb, then 3,000 upserts
def test_a_killed_build_is_incomplete_and_resumes_to_exactly_once(tmp_path: Path) -> None:
    path, log = tmp_path / "chroma", tmp_path / "batches.log"
    log.touch()
    script = KILL_SCRIPT.format(tests=str(Path(__file__).resolve().parents[2]), path=str(path), log=str(log))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # 8 batches embedded means at least 7 upserted; 30 make the whole corpus, so this is midway.
        while len(log.read_text().split()) < 8:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the build never got going"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    config = IndexConfig(collection="test-docs", path=path, batch_size=100)
    index = ChromaIndex.for_encoder(config, hash_encoder(), create=False)
    assert not index.complete
    assert 0 < index.count() < 3000
    with pytest.raises(QkragError, match="incomplete.*rerun `qkrag index` to finish it"):
        DenseRetriever(hash_encoder(), index).search(["apple river"], 5)
    done_before = index.count()

    resumed = build_index(tiny_corpus(3000), hash_encoder(log=str(log)), config, NO_CACHE, progress=False)
    assert resumed.complete and resumed.count() == 3000
    assert resumed.last_build.added == 3000 - done_before and resumed.last_build.unchanged == done_before
    ids = resumed.all_ids()
    assert len(ids) == 3000 and set(ids) == set(tiny_corpus(3000).ids)
    assert DenseRetriever(hash_encoder(), resumed).search(["apple river"], 5)[0]


WRITER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.fakes import hash_encoder, NO_CACHE
from tests.retrieval.test_build import prefixed_corpus
from qkrag.errors import QkragError
from qkrag.retrieval.build import build_index
from qkrag.retrieval.connection import IndexConfig
config = IndexConfig(collection="shared-docs", path={path!r}, batch_size=25, lock_timeout={lock_timeout})
try:
    build_index(prefixed_corpus({prefix!r}, 300), hash_encoder(delay={delay}, log={log!r}), config, NO_CACHE,
                progress=False, replace=True)  # the second corpus replaces the first on purpose
except QkragError as err:
    print(f"error: {{err}}", file=sys.stderr)
    sys.exit(2)
print("finished")
"""


def prefixed_corpus(prefix: str, n: int) -> Corpus:
    """`n` documents with ids `<prefix>0..`: two of these are two different corpora."""
    return Corpus.from_texts({f"{prefix}{i}": t for i, t in enumerate(tiny_corpus(n, seed=len(prefix)).contents)})


def start_writer(tmp_path: Path, prefix: str, *, delay: float = 0.0, lock_timeout: float = 120.0) -> tuple:
    log = tmp_path / f"{prefix}.log"
    log.touch()
    script = WRITER_SCRIPT.format(tests=str(Path(__file__).resolve().parents[2]), path=str(tmp_path / "chroma"), prefix=prefix,
                                  delay=delay, log=str(log), lock_timeout=lock_timeout)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    return child, log


def wait_for_batches(child, log: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while len(log.read_text().split()) < n:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the first build never got going"
        time.sleep(0.02)


@pytest.mark.slow  # two fresh interpreters importing chromadb
def test_two_concurrent_builds_into_one_collection_never_mix(tmp_path: Path) -> None:
    """Two processes index two different corpora into one collection on disk at once: the second waits for the
    first, and the collection ends holding exactly the second corpus, complete and searchable."""
    first, first_log = start_writer(tmp_path, "a", delay=0.3)
    try:
        wait_for_batches(first, first_log, 2)  # the first build is midway: it holds the lock
        second, _ = start_writer(tmp_path, "b")
        results = [p.communicate(timeout=240) for p in (first, second)]
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0 and second.returncode == 0, results
    config = IndexConfig(collection="shared-docs", path=tmp_path / "chroma")
    index = ChromaIndex.for_encoder(config, hash_encoder(), create=False)
    ids = index.all_ids()
    assert index.complete and index.count() == 300 and set(ids) == set(prefixed_corpus("b", 300).ids)
    assert index.metadata["qkrag:count"] == 300
    assert DenseRetriever(hash_encoder(), index).search(["apple river"], 5)[0]


@pytest.mark.slow
def test_a_second_writer_that_waits_too_long_fails_with_a_clear_message(tmp_path: Path) -> None:
    first, first_log = start_writer(tmp_path, "a", delay=0.3)
    try:
        wait_for_batches(first, first_log, 1)
        config = IndexConfig(collection="shared-docs", path=tmp_path / "chroma", lock_timeout=0.5)
        with pytest.raises(QkragError, match=rf"shared-docs.*another process \(pid {first.pid}\) is writing it.*"
                                             r"waited 0.5 s.*Fix: let that run finish"):
            build_index(prefixed_corpus("b", 300), hash_encoder(), config, NO_CACHE, progress=False)
    finally:
        first.kill()
        first.wait(30)


def test_a_collection_whose_vectors_do_not_match_its_texts_is_rebuilt(config: IndexConfig, tmp_path: Path) -> None:
    """A writer that bypassed qkrag (or a second one that raced it) left other vectors under the same ids and texts:
    the count is right, so only a look at the vectors tells. The next build notices and rebuilds."""
    import chromadb

    from qkrag.cache import DiskCache

    options = EmbedOptions(cache=DiskCache(tmp_path / "emb.sqlite"), progress=False)
    corpus = tiny_corpus(40)
    build_index(corpus, hash_encoder(), config, options, progress=False)
    raw = chromadb.PersistentClient(path=str(config.path), settings=chromadb.Settings(anonymized_telemetry=False))
    rogue = raw.get_collection(config.collection, embedding_function=None)
    rogue.upsert(ids=corpus.ids, embeddings=np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32),
                 documents=corpus.contents)
    again = build_index(corpus, hash_encoder(), config, options, progress=False)
    assert "not what the encoder makes of their texts" in again.last_build.rebuilt
    assert again.complete and again.count() == 40 and again.last_build.added == 40
    query = hash_encoder().embed_batch([corpus.contents[7]], "query")
    assert again.query(query, 1)[1][0][0] == "d7"


def test_a_collection_with_more_vectors_than_its_build_stored_is_rebuilt(config: IndexConfig) -> None:
    import chromadb

    corpus = tiny_corpus(30)
    build_quietly(corpus, hash_encoder(), config)
    raw = chromadb.PersistentClient(path=str(config.path), settings=chromadb.Settings(anonymized_telemetry=False))
    raw.get_collection(config.collection, embedding_function=None).add(
        ids=["x1", "x2"], embeddings=np.ones((2, 32), np.float32), documents=["other corpus", "other corpus"])
    again = build_quietly(corpus, hash_encoder(), config)
    assert again.last_build.rebuilt == "it holds 32 vectors where its completed build stored 30"
    assert again.count() == 30 and set(again.all_ids()) == set(corpus.ids)


def test_a_collection_with_corrupt_hnsw_files_is_rebuilt(config: IndexConfig, tmp_path: Path) -> None:
    """What two processes writing one Chroma folder leave behind: HNSW files Chroma cannot load. The count and the
    texts in SQLite still look fine, so only reading the vectors tells; the next build drops and rebuilds it."""
    from chromadb.api.client import SharedSystemClient

    corpus = tiny_corpus(1500)  # enough for Chroma to persist its HNSW graph to files
    build_quietly(corpus, hash_encoder(), config)
    SharedSystemClient.clear_system_cache()  # as a new process would, read the graph from disk, not from memory
    graphs = list(Path(config.path).glob("*/data_level0.bin"))
    assert graphs, "Chroma kept the graph in memory only: nothing to corrupt"
    for graph in graphs:
        os.truncate(graph, graph.stat().st_size // 3)
        (graph.parent / "header.bin").write_bytes(os.urandom(100))
    again = build_quietly(corpus, hash_encoder(), config)
    assert again.last_build.rebuilt.startswith("reading it failed")
    assert again.complete and again.count() == 1500 and again.last_build.added == 1500
    query = hash_encoder().embed_batch([corpus.contents[3]], "query")
    assert again.query(query, 1)[1][0][0] == "d3"


def test_indexing_another_corpus_into_a_collection_is_refused_unless_replace(tmp_path, fake_encoder):
    from qkrag.data import Document

    config = IndexConfig(collection="docs", path=tmp_path / "db")
    first = Corpus([Document(f"a{i}", f"apple text {i}") for i in range(6)], source="a")
    other = Corpus([Document(f"b{i}", f"river text {i}") for i in range(6)], source="b")
    build_index(first, fake_encoder, config, progress=False)
    with pytest.raises(InputError, match="holds 6 documents of another corpus"):
        build_index(other, fake_encoder, config, progress=False)
    assert build_index(first, fake_encoder, config, progress=False).count() == 6  # untouched
    assert build_index(other, fake_encoder, config, progress=False, replace=True).last_build.removed == 6


def test_build_index_from_a_corpus_file_records_the_same_content_hash(tmp_path, fake_encoder):
    from qkrag.data import CorpusFile, load_corpus
    from tests.test_data import ROWS, write_corpus

    path = write_corpus(tmp_path / "corpus.jsonl", [*ROWS, *({"_id": f"n{i}", "text": f"doc {i}"} for i in range(40))])
    config = IndexConfig(collection="whole", path=tmp_path / "db", batch_size=8)
    whole = build_index(load_corpus(path), fake_encoder, config, progress=False)
    recorded = whole.metadata["qkrag:content_hash"]
    again = build_index(CorpusFile(path), fake_encoder, config, progress=False)
    assert again.metadata["qkrag:content_hash"] == recorded and vars(again.last_build)["unchanged"] == 44
    other = build_index(CorpusFile(path), fake_encoder,
                        IndexConfig(collection="streamed", path=tmp_path / "db", batch_size=8), progress=False)
    assert other.metadata["qkrag:content_hash"] == recorded and vars(other.last_build)["added"] == 44

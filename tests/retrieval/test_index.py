"""The Chroma index: idempotent, resumable, refuses other encoders and half-built indexes, agrees with exact search."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeEncoder, FakeOpenAIServer, free_port
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, Encoder
from qkrag.errors import IndexMismatchError, InputError, QkragError
from qkrag.retrieval.index import ChromaIndex, DenseRetriever, ExactIndex, IndexConfig, build_index, recall_at_k

VENV_BIN = Path(sys.executable).parent


def hash_encoder(dim: int = 32, name: str = "hash", **options) -> FakeEncoder:
    """The shared fake encoder, named "<name>-<dim>" as an index records it; spread, for rankings without ties."""
    return FakeEncoder(dim, f"{name}-{dim}", spread=True, **options)


WORDS = "apple river stone cloud engine violin forest copper lantern harbor meadow falcon quartz orbit".split()


def tiny_corpus(n: int, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    return Corpus.from_texts({f"d{i}": " ".join(rng.choice(WORDS, size=4)) + f" w{i}" for i in range(n)})


NO_CACHE = EmbedOptions(cache=None, progress=False)


@pytest.fixture
def config(tmp_path: Path) -> IndexConfig:
    return IndexConfig(collection="test-docs", path=tmp_path / "chroma", batch_size=64)


def build(corpus: Corpus, encoder: Encoder, config: IndexConfig) -> ChromaIndex:
    return build_index(corpus, encoder, config, NO_CACHE, progress=False)


# ------------------------------------------------------------------------------------------------ config & creation


def test_config_rejects_unknown_space_and_bad_numbers() -> None:
    with pytest.raises(InputError, match="space"):
        IndexConfig(space="dot")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ef_search"):
        IndexConfig(ef_search=0)


def test_collection_records_encoder_space_and_hnsw_settings(config: IndexConfig) -> None:
    config.space, config.ef_search, config.M = "ip", 123, 24
    index = build(tiny_corpus(20), hash_encoder(), config)
    assert index.space == "ip"  # Chroma's default would have been l2
    assert index.hnsw_settings["ef_search"] == 123 and index.hnsw_settings["max_neighbors"] == 24
    meta = index.metadata
    assert meta["qkrag:encoder"] == "hash-32" and meta["qkrag:dimension"] == 32
    assert meta["qkrag:complete"] is True and meta["qkrag:version"]
    assert index.collection._embedding_function is None  # Chroma's downloading default was never built


def test_reopening_applies_new_ef_search_but_refuses_another_space(config: IndexConfig) -> None:
    build(tiny_corpus(10), hash_encoder(), config)
    config.ef_search = 321
    assert ChromaIndex.for_encoder(config, hash_encoder(), create=False).hnsw_settings["ef_search"] == 321
    config.space = "l2"
    with pytest.raises(IndexMismatchError, match="'cosine'.*another collection name"):
        ChromaIndex.for_encoder(config, hash_encoder())


@pytest.mark.slow  # ~5 s: needs a graph big enough for ef_search to matter
def test_a_new_ef_search_takes_effect_when_the_collection_is_reopened(config: IndexConfig) -> None:
    from chromadb.api.client import SharedSystemClient

    rng = np.random.default_rng(0)
    docs, queries = rng.standard_normal((3000, 64), np.float32), rng.standard_normal((50, 64), np.float32)
    ids = [f"r{i}" for i in range(len(docs))]
    truth = ExactIndex(ids, docs).query(queries, 10)[1]
    config.ef_search, config.batch_size = 10, 1000
    index = ChromaIndex.open(config, "random-64", 64)
    index.add_vectors(ids, docs)
    index.mark_complete()
    low = recall_at_k(index.query(queries, 10)[1], truth)
    SharedSystemClient.clear_system_cache()  # Chroma keeps a loaded graph's ef_search until its system goes
    config.ef_search = 400
    high = recall_at_k(ChromaIndex.open(config, "random-64", 64).query(queries, 10)[1], truth)
    assert low < 0.9 and high > 0.97 and high > low + 0.1


def test_opening_a_missing_collection_without_create_says_how_to_build_it(config: IndexConfig) -> None:
    with pytest.raises(InputError, match="does not exist.*qkrag index"):
        ChromaIndex.for_encoder(config, hash_encoder(), create=False)


# ------------------------------------------------------------------------------------------------ building


def test_reindexing_is_idempotent(config: IndexConfig, tmp_path: Path) -> None:
    corpus = tiny_corpus(150)
    log = tmp_path / "batches.log"
    encoder = hash_encoder(log=str(log))
    first = build(corpus, encoder, config)
    assert first.count() == 150 and first.last_build.added == 150
    second = build(corpus, encoder, config)
    assert second.count() == 150
    assert second.last_build.added == 0 and second.last_build.unchanged == 150
    assert sum(int(n) for n in log.read_text().split()) == 150  # the second run embedded nothing
    ids, vectors = second.get_vectors()
    assert sorted(ids) == sorted(corpus.ids) and len(set(ids)) == 150
    assert vectors.dtype == np.float32 and vectors.shape == (150, 32)


def test_changed_and_removed_documents_are_updated(config: IndexConfig) -> None:
    corpus = tiny_corpus(30)
    build(corpus, hash_encoder(), config)
    changed = Corpus.from_texts({**{d.id: d.text for d in corpus.documents[:20]}, "d0": "violin violin violin"})
    index = build(changed, hash_encoder(), config)
    assert index.last_build.updated == 1 and index.last_build.removed == 10 and index.count() == 20
    assert index.search_vectors(hash_encoder().embed_batch(["violin"], "query"), 1)[0][0].id == "d0"


def test_stored_vectors_round_trip(config: IndexConfig) -> None:
    corpus = tiny_corpus(40)
    index = build(corpus, hash_encoder(), config)
    ids, vectors = index.get_vectors()
    expected = hash_encoder().embed_batch([corpus.get(i).content for i in ids], "document")
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)


def test_opening_with_another_encoder_is_refused(config: IndexConfig) -> None:
    build(tiny_corpus(10), hash_encoder(dim=32), config)
    with pytest.raises(IndexMismatchError, match=r"'hash-32'.*'other-32'.*another collection name, or rebuild"):
        build(tiny_corpus(10), hash_encoder(dim=32, name="other"), config)
    with pytest.raises(IndexMismatchError, match=r"32-d.*16-d"):
        ChromaIndex.for_encoder(config, hash_encoder(dim=16, name="hash"))
    index = ChromaIndex.for_encoder(config, hash_encoder())
    with pytest.raises(IndexMismatchError):
        DenseRetriever(hash_encoder(name="other"), index)


def test_an_incomplete_index_refuses_queries(config: IndexConfig) -> None:
    index = build(tiny_corpus(10), hash_encoder(), config)
    index.mark_complete(False)
    with pytest.raises(QkragError, match="incomplete.*rerun `qkrag index`"):
        index.query(np.ones((1, 32), np.float32), 3)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.retrieval.test_index import hash_encoder, tiny_corpus, NO_CACHE
from qkrag.retrieval.index import IndexConfig, build_index
config = IndexConfig(collection="test-docs", path={path!r}, batch_size=100)
build_index(tiny_corpus(3000), hash_encoder(delay=0.05, log={log!r}), config, NO_CACHE, progress=False)
print("finished")
"""


@pytest.mark.slow  # ~10 s: a fresh interpreter importing chromadb, then 3,000 upserts
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


# ------------------------------------------------------------------------------------------------ searching


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_chroma_agrees_with_exact_search(config: IndexConfig, space: str) -> None:
    config.space = space  # type: ignore[assignment]
    corpus = tiny_corpus(300)
    encoder = hash_encoder()
    index = build(corpus, encoder, config)
    exact = ExactIndex.from_chroma(index)
    queries = encoder.embed_batch([" ".join(WORDS[i : i + 2]) for i in range(10)], "query")
    c_scores, c_ids = index.query(queries, 10)
    e_scores, e_ids = exact.query(queries, 10)
    assert c_ids.shape == e_ids.shape == (10, 10)
    assert recall_at_k(c_ids, e_ids) >= 0.98  # tiny data: HNSW at our settings is essentially exact
    # the scores are the same readable similarities, not Chroma's distances
    np.testing.assert_allclose(c_scores[:, 0], e_scores[:, 0], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(c_scores, axis=1) <= 1e-6)  # best first


def test_similarity_scores_have_the_documented_meaning(config: IndexConfig) -> None:
    config.space = "ip"
    index = ChromaIndex.open(config, "manual", 2)
    index.add_vectors(["a", "b"], np.array([[2.0, 0.0], [0.0, 1.0]]), ["A", "B"])
    index.mark_complete()
    scores, ids = index.query(np.array([[3.0, 1.0]]), 2)
    assert list(ids[0]) == ["a", "b"] and scores[0] == pytest.approx([6.0, 1.0], abs=1e-5)  # dot products
    l2 = index.sibling("manual-l2", "manual", 2, space="l2")
    l2.add_vectors(["a", "b"], np.array([[2.0, 0.0], [0.0, 1.0]]))
    l2.mark_complete()
    scores, ids = l2.query(np.array([[3.0, 1.0]]), 2)
    assert list(ids[0]) == ["a", "b"] and scores[0] == pytest.approx([-2.0, -9.0], abs=1e-5)  # minus squared L2


def test_a_sibling_collection_holds_other_vectors_beside_the_raw_one(config: IndexConfig) -> None:
    corpus = tiny_corpus(50)
    raw = build(corpus, hash_encoder(), config)
    ids, vectors = raw.get_vectors()
    projected = raw.sibling("test-docs-projected", "hash-32|proj", 8)
    projected.add_vectors(ids, vectors[:, :8] * 2, [corpus.get(i).content for i in ids])
    projected.add_vectors(ids, vectors[:, :8] * 2, [corpus.get(i).content for i in ids])  # upsert: still once
    projected.mark_complete()
    assert projected.space == "ip" and projected.count() == 50 and raw.count() == 50
    assert projected.client is raw.client
    hit = projected.search_vectors(vectors[:1, :8] * 2, 1)[0][0]
    assert hit.text == corpus.get(hit.id).content
    with pytest.raises(IndexMismatchError):
        projected.add_vectors(ids, vectors, None)  # 32-d into an 8-d collection
    projected.delete()
    assert "test-docs-projected" not in [c.name for c in raw.client.list_collections()]


def test_dense_retriever_over_chroma_and_exact(config: IndexConfig) -> None:
    corpus = Corpus.from_texts({"a": "copper lantern harbor", "b": "violin forest meadow", "c": "quartz orbit falcon"})
    encoder = hash_encoder()
    chroma = build(corpus, encoder, config)
    exact = ExactIndex(corpus.ids, encoder.embed_batch(corpus.contents, "document"), "cosine",
                       texts=dict(zip(corpus.ids, corpus.contents)))
    for index in (chroma, exact):
        hits = DenseRetriever(encoder, index, options=NO_CACHE).search(["violin meadow", "orbit"], k=2)
        assert [row[0].id for row in hits] == ["b", "c"]
        assert hits[0][0].text == "violin forest meadow"
        assert hits[0][0].score > hits[0][1].score and -1.0 <= hits[0][1].score <= 1.0
    for index in (chroma, exact):  # k larger than the collection: every document once, no padding
        scores, ids = index.query(encoder.embed_batch(["orbit", "violin"], "query"), 50)
        assert scores.shape == ids.shape == (2, 3) and sorted(ids[0]) == ["a", "b", "c"]


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_index_is_exact_search(space: str) -> None:
    from qkrag.ranking import exact_search

    rng = np.random.default_rng(1)
    docs, queries = rng.normal(size=(200, 16)) * rng.uniform(0.1, 5, size=(200, 1)), rng.normal(size=(7, 16))
    scores, ids = ExactIndex([f"d{i}" for i in range(200)], docs, space).query(queries, 5)  # type: ignore[arg-type]
    want_scores, want_pos = exact_search(queries.astype(np.float32), docs.astype(np.float32), 5, space)  # type: ignore
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert (ids == np.array([f"d{i}" for i in range(200)], dtype=object)[want_pos]).all()


def test_exact_index_rejects_misshapen_input() -> None:
    with pytest.raises(InputError):
        ExactIndex(["a", "b"], np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------------ real server


CHROMA_PROCESSES: dict[int, subprocess.Popen] = {}  # port -> the `chroma run` serving it


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real `chroma run` on 127.0.0.1 at a free port, shared by this module's server tests (each uses a collection
    of its own); killed in teardown whatever happens."""
    tmp_path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(VENV_BIN / "chroma"), "run", "--path", str(tmp_path / "server-db"),
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chroma server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        CHROMA_PROCESSES[port] = server
        yield port
    finally:
        CHROMA_PROCESSES.pop(port, None)
        server.kill()
        server.wait(30)
        log.close()


@pytest.mark.slow
def test_server_path_against_a_real_chroma_server(chroma_server: int) -> None:
    config = IndexConfig(collection="served-docs", host="127.0.0.1", port=chroma_server, batch_size=64)
    corpus = tiny_corpus(200)
    encoder = hash_encoder()
    index = build(corpus, encoder, config)
    again = build(corpus, encoder, config)
    assert index.count() == again.count() == 200 and again.last_build.unchanged == 200
    assert again.complete and again.space == "cosine" and again.hnsw_settings["max_neighbors"] == config.M
    queries = encoder.embed_batch(["apple river", "quartz orbit"], "query")
    assert recall_at_k(again.query(queries, 10)[1], ExactIndex.from_chroma(again).query(queries, 10)[1]) >= 0.95
    with pytest.raises(IndexMismatchError):
        ChromaIndex.for_encoder(config, hash_encoder(name="other"))


@pytest.mark.slow
def test_paged_server_reads_and_writes_leave_no_http_body_for_the_collector(chroma_server: int) -> None:
    # chromadb's HTTP client leaves each request/response in a reference cycle that holds its body; with the
    # collector off, only ChromaIndex's own release can free them, so any left here would pile up page by page.
    import gc

    import httpx

    config = IndexConfig(collection="paged", host="127.0.0.1", port=chroma_server, batch_size=16)
    index = build(tiny_corpus(100), hash_encoder(), config)
    gc.collect()
    gc.disable()
    try:
        index.add_vectors([f"x{i}" for i in range(40)], hash_encoder().embed_batch(["new"] * 40, "document"))
        pages = list(index.iter_vectors(texts=True))
        texts = list(index.iter_texts())
        left = [o for o in gc.get_objects() if isinstance(o, (httpx.Request, httpx.Response))]
    finally:
        gc.enable()
    assert len(pages) == 9 and sum(len(ids) for ids, _, _ in pages) == len(texts) == 140
    assert left == []


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(QkragError, match="cannot reach a Chroma server.*chroma run"):
        ChromaIndex.for_encoder(IndexConfig(host="127.0.0.1", port=free_port()), hash_encoder())


# ------------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_default_model_end_to_end(config: IndexConfig) -> None:
    from qkrag.embed.encoders import make_encoder

    corpus = Corpus.from_texts({
        "cats": "Cats are small domesticated felines that purr and hunt mice.",
        "rust": "Rust is a systems programming language focused on memory safety.",
        "paris": "Paris is the capital of France, home of the Eiffel Tower.",
        "bread": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
    })
    encoder = make_encoder()
    index = build(corpus, encoder, config)
    assert index.dimension == 384 and index.fingerprint == encoder.fingerprint
    hits = DenseRetriever(encoder, index, options=NO_CACHE).search(
        ["which language prevents memory bugs?", "what is the French capital?", "kitten purring"], k=2)
    assert [row[0].id for row in hits] == ["rust", "paris", "cats"]
    assert 0.3 < hits[0][0].score <= 1.0 and hits[0][0].text == corpus.get("rust").content


# ------------------------------------------------------------------------------------------------ one writer, repair


WRITER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.retrieval.test_index import hash_encoder, prefixed_corpus, NO_CACHE
from qkrag.errors import QkragError
from qkrag.retrieval.index import IndexConfig, build_index
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


@pytest.mark.slow  # two fresh interpreters importing chromadb (~10 s on 2 busy cores)
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
    build(corpus, hash_encoder(), config)
    raw = chromadb.PersistentClient(path=str(config.path), settings=chromadb.Settings(anonymized_telemetry=False))
    raw.get_collection(config.collection, embedding_function=None).add(
        ids=["x1", "x2"], embeddings=np.ones((2, 32), np.float32), documents=["other corpus", "other corpus"])
    again = build(corpus, hash_encoder(), config)
    assert again.last_build.rebuilt == "it holds 32 vectors where its completed build stored 30"
    assert again.count() == 30 and set(again.all_ids()) == set(corpus.ids)


def test_a_collection_with_corrupt_hnsw_files_is_rebuilt(config: IndexConfig, tmp_path: Path) -> None:
    """What two processes writing one Chroma folder leave behind: HNSW files Chroma cannot load. The count and the
    texts in SQLite still look fine, so only reading the vectors tells; the next build drops and rebuilds it."""
    from chromadb.api.client import SharedSystemClient

    corpus = tiny_corpus(1500)  # enough for Chroma to persist its HNSW graph to files
    build(corpus, hash_encoder(), config)
    SharedSystemClient.clear_system_cache()  # as a new process would, read the graph from disk, not from memory
    graphs = list(Path(config.path).glob("*/data_level0.bin"))
    assert graphs, "Chroma kept the graph in memory only: nothing to corrupt"
    for graph in graphs:
        os.truncate(graph, graph.stat().st_size // 3)
        (graph.parent / "header.bin").write_bytes(os.urandom(100))
    again = build(corpus, hash_encoder(), config)
    assert again.last_build.rebuilt.startswith("reading it failed")
    assert again.complete and again.count() == 1500 and again.last_build.added == 1500
    query = hash_encoder().embed_batch([corpus.contents[3]], "query")
    assert again.query(query, 1)[1][0][0] == "d3"


# ------------------------------------------------------------------------------------------------ derived collections


def test_source_hash_follows_the_content_not_the_count(config: IndexConfig) -> None:
    corpus = tiny_corpus(20)
    first = build(corpus, hash_encoder(), config).source_hash
    assert build(corpus, hash_encoder(), config).source_hash == first  # a re-run changes nothing
    edited = Corpus.from_texts({d.id: (d.text + " violin" if d.id == "d3" else d.text) for d in corpus})
    assert build(edited, hash_encoder(), config).source_hash != first  # same ids, same count, one text changed
    # A collection qkrag did not build from a corpus: the hash is computed over its ids and vectors.
    other = ChromaIndex.open(IndexConfig(collection="manual-docs", path=config.path), "manual", 2)
    other.add_vectors(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    other.mark_complete()
    before = other.source_hash
    other.add_vectors(["b"], np.array([[0.5, 0.5]]))
    other.mark_complete()
    assert other.source_hash != before
    # Read page by page, never all at once; the same content added in another order, read in other pages, hashes alike.
    same = ChromaIndex.open(IndexConfig(collection="same-docs", path=config.path, batch_size=1), "manual", 2)
    same.add_vectors(["b", "a"], np.array([[0.5, 0.5], [1.0, 0.0]]))
    same.mark_complete()
    same.get_vectors = lambda: pytest.fail("read every vector at once")
    assert same.source_hash == other.source_hash


def test_a_sibling_derived_from_other_content_is_emptied_not_reused(config: IndexConfig) -> None:
    """The projection and bench code call `sibling(name, fingerprint, dim, space)` and reuse it when it is complete
    with the right count: after the documents change (same ids, new texts) that must not serve the old vectors."""
    corpus = tiny_corpus(20)
    raw = build(corpus, hash_encoder(), config)

    def derived(raw: ChromaIndex) -> ChromaIndex:  # what ProjectedRetriever / bench do, unchanged
        sibling = raw.sibling("test-docs-derived", "hash-32|half", 16, "ip")
        if not (sibling.complete and sibling.count() == raw.count()):
            sibling.mark_complete(False)
            ids, vectors = raw.get_vectors()
            texts = raw.stored_texts(ids)
            sibling.add_vectors(ids, vectors[:, :16], [texts[i] for i in ids])
            sibling.mark_complete(True)
        return sibling

    old = derived(raw)
    assert old.is_current(raw.source_hash)
    edited = Corpus.from_texts({d.id: f"violin quartz {d.id}" for d in corpus})  # same ids, same count
    raw = build(edited, hash_encoder(), config)
    stale = raw.sibling("test-docs-derived", "hash-32|half", 16, "ip")
    assert not stale.is_current(raw.source_hash) and stale.count() == 0 and not stale.complete
    fresh = derived(raw)
    assert fresh.is_current(raw.source_hash)
    hit = fresh.search_vectors(hash_encoder().embed_batch(["violin quartz d5"], "query")[:, :16], 1)[0][0]
    assert hit.text == edited.get(hit.id).content  # new texts, not the old ones
    assert derived(raw).is_current(raw.source_hash)  # and a re-run reuses it
    # An explicit source hash works too, for vectors derived from something other than this collection.
    pinned = raw.sibling("test-docs-pinned", "x", 4, "ip", source_hash="h1")
    assert pinned.metadata["qkrag:derived_from"] == "h1" and not pinned.is_current("h1")
    pinned.add_vectors(["a"], np.ones((1, 4)))
    pinned.mark_complete()
    assert pinned.is_current("h1") and not pinned.is_current("h2")
    assert raw.sibling("test-docs-pinned", "x", 4, "ip", source_hash="h2").count() == 0


# ------------------------------------------------------------------------------------------------ hangs


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 whose server reads each request and never answers (a hung server)."""
    with FakeOpenAIServer(mode="slow", slow_seconds=60) as hung:
        yield hung.httpd.server_address[1]


def test_a_chroma_address_that_never_answers_fails_within_the_timeout(silent_port: int) -> None:
    config = IndexConfig(collection="hung-docs", host="127.0.0.1", port=silent_port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(QkragError, match=r"127.0.0.1:\d+: accepts connections but did not answer within 1 s.*Fix"):
        ChromaIndex.for_encoder(config, hash_encoder(), create=False)
    assert time.monotonic() - started < 10


def test_timeouts_default_to_a_minute_and_follow_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("QKRAG_TIMEOUT", raising=False)
    assert IndexConfig().timeout == 60.0
    monkeypatch.setenv("QKRAG_TIMEOUT", "2.5")
    assert IndexConfig().timeout == 2.5 and IndexConfig(timeout=7).timeout == 7
    monkeypatch.setenv("QKRAG_TIMEOUT", "soon")
    with pytest.raises(InputError, match="QKRAG_TIMEOUT.*'soon' is not a positive number"):
        IndexConfig()


@pytest.mark.slow
def test_a_chroma_server_that_stops_answering_midway_fails_within_the_timeout(chroma_server: int) -> None:
    config = IndexConfig(collection="stalled-docs", host="127.0.0.1", port=chroma_server, timeout=2.0)
    index = build(tiny_corpus(50), hash_encoder(), config)
    server = CHROMA_PROCESSES[chroma_server]
    os.kill(server.pid, signal.SIGSTOP)  # still listening, accepting into its backlog, never answering
    try:
        started = time.monotonic()
        with pytest.raises(QkragError, match=r"did not answer query\(\) within 2 s.*Fix"):
            index.query(hash_encoder().embed_batch(["apple"], "query"), 3)
        assert time.monotonic() - started < 15
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_read_collection_reads_everything_and_writes_nothing(tmp_path):
    from qkrag.retrieval.index import connect, read_collection

    encoder = hash_encoder()
    corpus = Corpus.from_texts({"b": "bread rises with yeast", "a": "chains need oil", "c": "cats sit on mats"})
    config = IndexConfig(collection="tiny", path=tmp_path / "chroma", ef_search=123)
    build_index(corpus, encoder, config, NO_CACHE)

    def state():
        return {c.name: (c.metadata, c.count(), c.configuration["hnsw"]) for c in connect(config).list_collections()}

    before = state()
    ids, vectors, texts, space = read_collection(IndexConfig(collection="tiny", path=tmp_path / "chroma"), encoder)
    assert ids == ["a", "b", "c"] and texts == {d.id: d.content for d in corpus} and space == "cosine"
    stored = dict(zip(*ChromaIndex.for_encoder(config, encoder, create=False).get_vectors()))
    np.testing.assert_allclose(vectors, np.stack([stored[i] for i in ids]))
    assert state() == before  # ChromaIndex.open would have applied ef_search=100
    with pytest.raises(InputError, match="does not exist"):
        read_collection(IndexConfig(collection="nope", path=tmp_path / "chroma"), encoder)
    with pytest.raises(InputError, match="no Chroma database"):
        read_collection(IndexConfig(collection="tiny", path=tmp_path / "absent"), encoder)
    assert not (tmp_path / "absent").exists()
    with pytest.raises(IndexMismatchError):
        read_collection(IndexConfig(collection="tiny", path=tmp_path / "chroma"), hash_encoder(dim=8))


def test_a_collection_in_another_space_can_be_read(tmp_path, fake_encoder):
    from qkrag.data import Corpus, Document
    from qkrag.retrieval.index import ChromaIndex, IndexConfig, build_index

    corpus = Corpus([Document(f"d{i}", f"text number {i} about thing {i % 3}") for i in range(6)], source="mem")
    build_index(corpus, fake_encoder, IndexConfig(collection="ip-docs", path=tmp_path / "db", space="ip"),
                progress=False)
    read = ChromaIndex.for_encoder(IndexConfig(collection="ip-docs", path=tmp_path / "db"), fake_encoder,
                                   create=False)
    assert read.space == "ip" and read.count() == 6


def test_indexing_another_corpus_into_a_collection_is_refused_unless_replace(tmp_path, fake_encoder):
    from qkrag.data import Corpus, Document
    from qkrag.errors import InputError
    from qkrag.retrieval.index import IndexConfig, build_index

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
    from qkrag.retrieval.index import IndexConfig, build_index
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


@pytest.mark.parametrize("bad, problem", [
    (lambda v: np.zeros_like(v), "all zero"),
    (lambda v: np.where(np.arange(v.shape[1]) == 0, np.nan, v), "NaN or infinite"),
    (lambda v: [list(row[:-1]) if i == 1 else list(row) for i, row in enumerate(v)], "different lengths"),
])
def test_every_vector_entering_an_index_is_checked(tmp_path, bad, problem):
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    with pytest.raises(QkragError, match=problem):
        ExactIndex(["a", "b", "c"], bad(vectors))
    index = ChromaIndex.open(IndexConfig(collection="checked", path=tmp_path / "db"), "enc", 8)
    with pytest.raises(QkragError, match=problem):
        index.add_vectors(["a", "b", "c"], bad(vectors))
    assert index.count() == 0

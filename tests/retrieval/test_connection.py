"""Reaching Chroma: index settings are checked, a server is reached by URL, and a server that refuses, hangs or stops
answering is one clear error within the timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAIServer, build_quietly, free_port, hash_encoder, tiny_corpus
from qkrag.errors import IndexMismatchError, InputError, QkragError
from qkrag.retrieval.connection import IndexConfig
from qkrag.retrieval.exact import ExactIndex, recall_at_k
from qkrag.retrieval.store import ChromaIndex

VENV_BIN = Path(sys.executable).parent


def test_config_rejects_unknown_space_and_bad_numbers() -> None:
    with pytest.raises(InputError, match="space"):
        IndexConfig(space="dot")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ef_search"):
        IndexConfig(ef_search=0)


def test_timeouts_default_to_a_minute_and_follow_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("QKRAG_TIMEOUT", raising=False)
    assert IndexConfig().timeout == 60.0
    monkeypatch.setenv("QKRAG_TIMEOUT", "2.5")
    assert IndexConfig().timeout == 2.5 and IndexConfig(timeout=7).timeout == 7
    monkeypatch.setenv("QKRAG_TIMEOUT", "soon")
    with pytest.raises(InputError, match="QKRAG_TIMEOUT.*'soon' is not a positive number"):
        IndexConfig()


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(QkragError, match="cannot reach a Chroma server.*chroma run"):
        ChromaIndex.for_encoder(IndexConfig(host="127.0.0.1", port=free_port()), hash_encoder())


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
    index = build_quietly(corpus, encoder, config)
    again = build_quietly(corpus, encoder, config)
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
    index = build_quietly(tiny_corpus(100), hash_encoder(), config)
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


@pytest.mark.slow
def test_a_chroma_server_that_stops_answering_midway_fails_within_the_timeout(chroma_server: int) -> None:
    config = IndexConfig(collection="stalled-docs", host="127.0.0.1", port=chroma_server, timeout=2.0)
    index = build_quietly(tiny_corpus(50), hash_encoder(), config)
    server = CHROMA_PROCESSES[chroma_server]
    os.kill(server.pid, signal.SIGSTOP)  # still listening, accepting into its backlog, never answering
    try:
        started = time.monotonic()
        with pytest.raises(QkragError, match=r"did not answer query\(\) within 2 s.*Fix"):
            index.query(hash_encoder().embed_batch(["apple"], "query"), 3)
        assert time.monotonic() - started < 15
    finally:
        os.kill(server.pid, signal.SIGCONT)

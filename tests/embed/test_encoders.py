import json
from pathlib import Path

import numpy as np
import pytest

from qkrag.cache import DiskCache
from qkrag.embed.encoders import EmbedOptions, OpenAIEncoder, SentenceTransformerEncoder, embed, make_encoder
from qkrag.errors import InputError, QkragError

from tests.fakes import FakeFolderModel, FakeOpenAIServer

SECRET = "sk-embed-SECRET-41c9e07d2a"


@pytest.fixture
def echoing_server():
    """An embeddings endpoint that refuses every request with HTTP 401 and echoes the request headers (the
    Authorization header, key included) in its error body, as some proxies and debug servers do."""
    with FakeOpenAIServer(mode="401") as server:
        yield server


def test_embed_caches_by_content_so_a_rerun_embeds_nothing(fake_encoder, tmp_path):
    cache = DiskCache(tmp_path / "e.sqlite")
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = embed(fake_encoder, texts, "document", EmbedOptions(cache=cache, batch_size=2, progress=False))
    assert fake_encoder.texts_embedded == 3  # the duplicate is embedded once
    again = embed(fake_encoder, texts, "document", EmbedOptions(cache=cache, progress=False))
    assert fake_encoder.texts_embedded == 3
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[0], first[2])


def test_sides_are_cached_apart(fake_encoder, tmp_path):
    cache = DiskCache(tmp_path / "e.sqlite")
    embed(fake_encoder, ["x y"], "document", EmbedOptions(cache=cache, progress=False))
    embed(fake_encoder, ["x y"], "query", EmbedOptions(cache=cache, progress=False))
    assert fake_encoder.texts_embedded == 2


def test_order_is_preserved_whatever_the_batching(fake_encoder):
    texts = [f"word{i} " * (i % 7 + 1) for i in range(50)]
    a = embed(fake_encoder, texts, "document", EmbedOptions(cache=None, batch_size=3, progress=False))
    b = fake_encoder.embed_batch(texts, "document")
    np.testing.assert_allclose(a, b)


def test_empty_text_is_refused(fake_encoder):
    with pytest.raises(InputError, match="text #1.*empty"):
        embed(fake_encoder, ["ok", " "], "query", EmbedOptions(cache=None, progress=False))


def test_bad_side_is_refused(fake_encoder):
    with pytest.raises(InputError, match="'queries' is not a side"):
        embed(fake_encoder, ["ok"], "queries", EmbedOptions(cache=None, progress=False))  # type: ignore[arg-type]


def test_make_encoder_routes_names():
    assert isinstance(make_encoder(), SentenceTransformerEncoder)
    enc = make_encoder("openai:text-embedding-3-small", base_url="http://127.0.0.1:9/v1")
    assert isinstance(enc, OpenAIEncoder) and enc.model_name == "text-embedding-3-small"


def test_prefixes_change_the_fingerprint():
    plain = SentenceTransformerEncoder()
    e5 = SentenceTransformerEncoder(query_prefix="query: ", document_prefix="passage: ")
    assert plain.fingerprint != e5.fingerprint


def test_openai_key_is_not_in_repr(monkeypatch):
    enc = OpenAIEncoder("m", api_key="sk-secret-123", base_url="http://127.0.0.1:9/v1")
    assert "sk-secret" not in repr(enc) and "sk-secret" not in enc.fingerprint


@pytest.mark.slow
def test_default_model_loads_from_the_shipped_package_and_embeds():
    enc = make_encoder()
    vectors = embed(enc, ["a cat on a mat", "a kitten on a rug", "tax law"], "document",
                    EmbedOptions(cache=None, progress=False))
    assert vectors.shape == (3, 384)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]


def test_openai_compatible_embeddings_through_a_loopback_server(tmp_path):
    """A real HTTP server speaking the OpenAI embeddings protocol, driven through the openai client."""
    with FakeOpenAIServer() as server:  # answers each text with [len(text), 1, 0]
        enc = OpenAIEncoder("fake-embed", base_url=server.url, api_key="k")
        out = embed(enc, ["ab", "abcd"], "query", EmbedOptions(cache=None, progress=False))
        np.testing.assert_allclose(out[:, 0], [2.0, 4.0])
        assert enc.dimension == 3 and server.paths == ["/v1/embeddings"] * server.hits


def test_embeddings_error_that_echoes_the_key_is_redacted(echoing_server):
    enc = OpenAIEncoder("m", base_url=echoing_server.url, api_key=SECRET, max_retries=0)
    with pytest.raises(QkragError) as info:
        embed(enc, ["hello"], "document", EmbedOptions(cache=None, progress=False))
    assert echoing_server.auth_headers == [f"Bearer {SECRET}"], "the key must reach the server, else this is no test"
    message = str(info.value)
    assert SECRET not in message and "***" in message
    assert "HTTP 401" in message and "OPENAI_API_KEY" in message and "\n" not in message  # one line, says what to do
    assert info.value.__suppress_context__  # a traceback would not print the unredacted original either


def test_cli_index_with_an_echoing_embeddings_server_prints_no_key(echoing_server, tmp_path, capsys, monkeypatch):
    from qkrag.cli import main

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "a passage"}) + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(corpus), "--model", "openai:m", "--base-url", echoing_server.url,
              "--path", str(tmp_path / "chroma")])
    out = capsys.readouterr()
    assert exit_info.value.code == 2 and echoing_server.auth_headers  # a clear error, after reaching the server
    assert SECRET not in out.out + out.err and "HTTP 401" in out.err


def test_an_embeddings_server_that_never_answers_fails_within_the_timeouts():
    import time

    with FakeOpenAIServer(mode="slow", slow_seconds=60) as hung:  # reads each request and never answers
        enc = OpenAIEncoder("m", base_url=hung.url, api_key=SECRET, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(QkragError, match=r"did not answer within 0.5 s \(3 tries\).*QKRAG_TIMEOUT"):
            embed(enc, ["hello"], "document", EmbedOptions(cache=None, progress=False))
        assert time.monotonic() - started < 10


def test_the_embeddings_timeout_follows_the_environment(monkeypatch):
    monkeypatch.setenv("QKRAG_TIMEOUT", "4")
    assert OpenAIEncoder("m", base_url="http://127.0.0.1:9/v1").timeout == 4.0
    monkeypatch.delenv("QKRAG_TIMEOUT")
    assert OpenAIEncoder("m", base_url="http://127.0.0.1:9/v1").timeout == 60.0


# ------------------------------------------------------------------------------------------------ cache keys


def test_overwritten_local_model_weights_miss_the_cache(tmp_path):
    import os

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.txt").write_text("1.0")
    cache = DiskCache(tmp_path / "e.sqlite")
    options = EmbedOptions(cache=cache, progress=False)
    before = FakeFolderModel(str(folder))
    assert embed(before, ["a text"], "document", options)[0, 0] == 1.0
    (folder / "weights.txt").write_text("2.0")  # same name, same size: only the content and the mtime differ
    os.utime(folder / "weights.txt", ns=(1, 1))
    after = FakeFolderModel(str(folder))
    assert after.fingerprint != before.fingerprint and after.fingerprint.startswith(f"{folder}|weights=")
    assert embed(after, ["a text"], "document", options)[0, 0] == 2.0  # not the old weights' vector from the cache
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("tools write here")
    assert FakeFolderModel(str(folder)).fingerprint == after.fingerprint  # hidden files are not the model
    assert SentenceTransformerEncoder().fingerprint == "sentence-transformers/all-MiniLM-L6-v2"  # unchanged
    assert SentenceTransformerEncoder("BAAI/bge-small-en-v1.5").fingerprint == "BAAI/bge-small-en-v1.5"


def vector_server(value: float) -> FakeOpenAIServer:
    """An embeddings endpoint answering every text with [value, 1, 0]."""
    return FakeOpenAIServer(embed=lambda text: [value, 1.0, 0.0])


def test_embeddings_of_one_server_are_never_served_for_another_with_the_same_model_name(tmp_path):
    one, two = vector_server(1.0), vector_server(2.0)
    try:
        options = EmbedOptions(cache=DiskCache(tmp_path / "e.sqlite"), progress=False)
        first = embed(OpenAIEncoder("same-name", base_url=one.url), ["text"], "query", options)
        second = embed(OpenAIEncoder("same-name", base_url=two.url), ["text"], "query", options)
        assert first[0, 0] == 1.0 and second[0, 0] == 2.0 and two.hits == 1
        again = embed(OpenAIEncoder("same-name", base_url=one.url.replace("http:", "HTTP:") + "/"), ["text"], "query",
                      options)  # the same server spelled differently: still a cache hit
        assert again[0, 0] == 1.0 and one.hits == 1
    finally:
        one.close()
        two.close()


HEAP_PROBE = """
import ctypes, sys
sys.path.insert(0, {src!r})
from qkrag.embed.encoders import OpenAIEncoder
from qkrag.llm.client import LLM, LLMConfig
if {which!r} == "embeddings":
    OpenAIEncoder("m", base_url="http://127.0.0.1:9/v1", api_key={key!r}).client
else:
    LLM(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key={key!r}), cache=False).client
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
found = 0
for _ in range(20):
    request = bytes(bytearray(b"authorization: Bearer " + {key!r}.encode() + b"\\r\\n" + b"x" * 2000))
    del request  # freed, as httpx frees a request's header block once it is sent
    block = libc.malloc(2100)  # what Chroma's HNSW writer gets, and writes to disk uninitialised
    found += {key!r}.encode() in ctypes.string_at(block, 2100)
    libc.free(block)
print(found)
"""


@pytest.mark.skipif(not Path("/lib/x86_64-linux-gnu/libc.so.6").exists() and not Path("/usr/lib/libc.so.6").exists(),
                    reason="glibc only")
@pytest.mark.parametrize("which", ["embeddings", "llm"])
def test_memory_that_held_the_key_is_scrubbed_before_it_is_reused(which):
    """The fault matrix found a planted key in a Chroma length.bin: Chroma writes uninitialised memory, and a freed
    request buffer still held the Authorization header. Once a client with a key exists, freed memory is overwritten."""
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE.format(src=src, which=which, key=SECRET)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"


def test_the_shipped_models_short_name_is_the_same_encoder():
    from qkrag.embed.encoders import make_encoder

    assert make_encoder("all-MiniLM-L6-v2").fingerprint == make_encoder().fingerprint


@pytest.mark.parametrize("vector, problem", [
    (lambda text: [0.0, 0.0, 0.0], "all zero"),
    (lambda text: [float("nan"), 1.0, 0.0], "NaN or infinite"),
    (lambda text: [1e39, 1.0, 0.0], "NaN or infinite"),  # overflows float32: inf
    (lambda text: [1.0] * (2 + len(text) % 2), "different lengths"),
])
def test_degenerate_vectors_from_a_server_are_refused_and_never_cached(tmp_path, vector, problem):
    from qkrag.cache import DiskCache

    cache = DiskCache(tmp_path / "e.sqlite")
    with FakeOpenAIServer(embed=vector) as server:
        enc = OpenAIEncoder("m", base_url=server.url, api_key="k", max_retries=0)
        with pytest.raises(QkragError, match=problem):
            embed(enc, ["ab", "abc"], "document", EmbedOptions(cache=cache, progress=False))
    assert len(cache) == 0  # nothing degenerate is kept for the next run

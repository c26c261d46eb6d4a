"""qkrag.cache: a cache only saves work, so no state of its file or folder may stop a run."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from qkrag.cache import (DiskCache, content_hash, default_cache_dir, default_timeout, pack_vector, server_identity,
                         unpack_vector)
from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.errors import InputError
from tests.fakes import FakeOpenAIServer, last_message


def test_a_file_that_is_not_a_database_is_moved_aside_and_replaced(tmp_path: Path, caplog) -> None:
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not SQLite, just a torn or overwritten file" * 100)
    cache = DiskCache(path)
    cache.put("k", b"v")
    assert cache.get("k") == b"v" and cache.persistent
    assert (tmp_path / "embeddings.sqlite.corrupt").read_bytes().startswith(b"this is not SQLite")
    assert "not a readable database" in caplog.text


def test_a_cache_folder_that_cannot_be_created_falls_back_to_memory(tmp_path: Path, caplog) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    cache = DiskCache(tmp_path / "cache" / "llm.sqlite")
    cache.put_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"} and not cache.persistent
    assert "QKRAG_CACHE_DIR" in caplog.text


def test_a_cache_that_becomes_read_only_keeps_the_run_going(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.sqlite"
    DiskCache(path).put("old", b"1")
    cache = DiskCache(path)
    # What a read-only folder or file does to SQLite (chmod would not stop root, who runs these tests in CI).
    cache._db.close()
    cache._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    assert cache.get("old") == b"1"
    cache.put("new", b"2")  # "attempt to write a readonly database": warned, kept in memory
    assert cache.get("new") == b"2" and not cache.persistent
    assert "writing failed" in caplog.text


def test_damaged_cached_vectors_are_embedded_again(tmp_path: Path, fake_encoder) -> None:
    cache = DiskCache(tmp_path / "e.sqlite")
    options = EmbedOptions(cache=cache, progress=False)
    texts = ["alpha beta", "gamma delta", "epsilon"]
    good = embed(fake_encoder, texts, "document", options)
    keys = [content_hash(fake_encoder.cache_key, "document", t) for t in texts]
    cache.put_many({keys[0]: b"\x00\x01\x02",  # torn: not a whole number of floats
                    keys[1]: pack_vector(np.full(7, 1.0)),  # another length than the encoder's
                    keys[2]: pack_vector(np.full(32, np.nan))})  # not finite
    fake_encoder.texts_embedded = 0
    again = embed(fake_encoder, texts, "document", options)
    np.testing.assert_allclose(again, good)
    assert fake_encoder.texts_embedded == 3
    assert embed(fake_encoder, texts, "document", options).shape == (3, 32) and fake_encoder.texts_embedded == 3


def test_a_damaged_llm_cache_entry_is_asked_again(tmp_path: Path) -> None:
    from qkrag.llm.client import LLM, LLMConfig

    cache = DiskCache(tmp_path / "llm.sqlite")
    with FakeOpenAIServer(chat=lambda body: last_message(body).upper()) as server:
        llm = LLM(LLMConfig(model="m", base_url=server.url, max_retries=0, backoff=0.0), cache=cache)
        assert llm.complete("hello").text == "HELLO"
        [(key,)] = cache._db.execute("SELECT key FROM kv").fetchall()
        cache.put(key, b'{"text": "HELLO", "mod')  # torn JSON
        assert llm.complete("hello").text == "HELLO" and llm.calls_made == 2
        assert llm.complete("hello").cached and llm.calls_made == 2  # the fresh answer replaced it
        llm.complete("world")
        for (key,) in cache._db.execute("SELECT key FROM kv").fetchall():
            cache.put(key, b"\xff\xfe")  # not even text
        assert [c.text for c in llm.complete_many(["world", "hello"], progress=False)] == ["WORLD", "HELLO"]
        assert llm.calls_made == 5 and server.hits == 5


@pytest.mark.parametrize(("url", "expected"), [
    (None, "https://api.openai.com/v1"),
    ("http://LocalHost:8000/v1/", "http://localhost:8000/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("http://host:notaport/v1", "http://host:notaport/v1"),
])
def test_server_identity_normalises_spelling_only(url, expected) -> None:
    assert server_identity(url) == expected


def test_warnings_go_to_the_qkrag_cache_logger(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="qkrag.cache")
    (tmp_path / "x").write_text("file")
    DiskCache(tmp_path / "x" / "c.sqlite")
    assert any(r.name == "qkrag.cache" for r in caplog.records)


def test_content_hash_keys_on_order_of_parts_not_of_dict_keys() -> None:
    assert content_hash("a", {"x": 1, "y": 2}) == content_hash("a", {"y": 2, "x": 1})
    assert content_hash("a", "b") != content_hash("b", "a")
    assert content_hash("ab") != content_hash("a", "b") and len(content_hash("a")) == 64
    assert content_hash(Path("/x")) == content_hash("/x")  # anything else by its str


def test_the_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QKRAG_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("QKRAG_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "qkrag"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "qkrag"


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_timeout_in_the_environment_is_a_clear_error(monkeypatch, value) -> None:
    monkeypatch.setenv("QKRAG_TIMEOUT", value)
    with pytest.raises(InputError, match=rf"QKRAG_TIMEOUT: '{value}' is not a positive number.*Fix: set e.g."):
        default_timeout()


def test_the_timeout_is_the_environment_s_else_the_fallback(monkeypatch) -> None:
    monkeypatch.setenv("QKRAG_TIMEOUT", " 2.5 ")
    assert default_timeout(9) == 2.5
    monkeypatch.setenv("QKRAG_TIMEOUT", "")
    assert default_timeout(9) == 9 and default_timeout() == 60.0


def test_entries_persist_across_reopening_and_vectors_round_trip(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c.sqlite")
    vector = np.array([0.5, -1.25, 3.0], dtype=np.float64)
    cache.put_many({"v": pack_vector(vector), "w": b"x"})
    cache.put("w", b"y")  # a later put replaces
    cache.close()
    again = DiskCache(tmp_path / "c.sqlite")
    assert len(again) == 2 and "v" in again and "nope" not in again and again.get("w") == b"y"
    out = unpack_vector(again.get("v"))
    assert out.dtype == np.float32 and out.tolist() == [0.5, -1.25, 3.0]
    assert again.get_many([]) == {} and again.get("nope") is None

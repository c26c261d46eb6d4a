"""Shared fixtures; the fakes they hand out live in tests/fakes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import (SHARED_DATA, TINY_DOCS, TINY_QRELS, TINY_QUERIES, FakeEncoder, write_beir)


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tiny", TINY_DOCS, TINY_QUERIES, TINY_QRELS)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    """Every test gets its own cache dir, so no test reads another's cached vectors or LLM outputs. Tests on the
    shared benchmark collections keep the user's cache: re-embedding 5,000 documents per test would cost minutes."""
    if request.node.get_closest_marker("shared_data"):
        return
    monkeypatch.setenv("QKRAG_CACHE_DIR", str(tmp_path_factory.mktemp("qkrag-cache")))
    import qkrag.embed.encoders

    monkeypatch.setattr(qkrag.embed.encoders, "_default_cache", None)

"""The trained demo (`tests.integrations.demo.build_trained_demo`), built once for every integration test module, and
`demo_cache`: a test that uses it reads the demo's cache (its embeddings and projection store) instead of a fresh
one, so no test embeds the corpus again."""

from __future__ import annotations

import pytest


def _use_cache(monkeypatch, folder) -> None:
    import qkrag.embed.encoders

    monkeypatch.setenv("QKRAG_CACHE_DIR", str(folder))
    monkeypatch.setattr(qkrag.embed.encoders, "_default_cache", None)


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory):
    from tests.integrations.demo import build_trained_demo

    root = tmp_path_factory.mktemp("trained-demo")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_cache(monkeypatch, root / "cache")
        yield build_trained_demo(root)


@pytest.fixture
def demo_cache(trained_demo, monkeypatch):
    _use_cache(monkeypatch, trained_demo.projection_dir.parent / "cache")
    return trained_demo

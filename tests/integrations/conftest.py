"""The trained demo (`tests.integrations.demo.build_trained_demo`), built once for every integration test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory):
    from tests.integrations.demo import build_trained_demo

    root = tmp_path_factory.mktemp("trained-demo")
    before = os.environ.get("QKRAG_CACHE_DIR")
    os.environ["QKRAG_CACHE_DIR"] = str(root / "cache")  # the projection store and embeddings stay in the test's folder
    try:
        yield build_trained_demo(root)
    finally:
        if before is None:
            os.environ.pop("QKRAG_CACHE_DIR", None)
        else:
            os.environ["QKRAG_CACHE_DIR"] = before

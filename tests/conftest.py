"""Shared fixtures; the fakes they hand out live in tests/fakes.py.

Heavy things a session shares: `shared_llm_server`, the real embedded LLM, started once per session (once per
pytest-xdist worker) for the tests that need a real model but do not test starting one; `real_llm` (clients of it) and
`llm_env` (OPENAI_BASE_URL and friends, so `open_llm` in this process and in a CLI subprocess reaches it) hand it out.

Under pytest-xdist (`scripts/test.sh` runs `-n 2 --dist loadgroup`), `pytest_collection_modifyitems` gives each test a
group: the tests of one file stay on one worker (they may share module-scoped fixtures), every test of the shared
LLM server runs on the worker that holds it, and the tests on ../shared/data run on one worker, one after the other,
over one cache. The longest groups are sent first (`send_order`), so that none starts last and leaves the other worker
idle at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import (SHARED_DATA, TINY_DOCS, TINY_QRELS, TINY_QUERIES, FakeEncoder, write_beir)

LLM_GROUP = "embedded-llm"
SHARED_DATA_GROUP = "shared-data"


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


# ------------------------------------------------------------------------------------------------ the real local LLM


@pytest.fixture(scope="session")
def llm_model_cache(tmp_path_factory) -> Path:
    """A cache folder holding the shipped default model, joined from its packages and checked against its pinned hash
    once per session (half a gigabyte to copy and hash): pass it as `cache_dir`, or as QKRAG_CACHE_DIR to a child
    process, and the model is found verified. Skips where the [llm] extra (runtime and model) is not installed."""
    pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install 'qkrag[llm]')")
    from qkrag.llm.local import model_file

    folder = tmp_path_factory.mktemp("llm-model")
    model_file(cache_dir=folder)
    return folder


@pytest.fixture(scope="session")
def shared_llm_server(llm_model_cache: Path):
    """The embedded LLM (xllamacpp serving the shipped default model), started once per session and stopped at its
    end."""
    from qkrag.llm.local import LocalLLMServer

    with LocalLLMServer(cache_dir=llm_model_cache) as server:
        yield server


@pytest.fixture
def real_llm(shared_llm_server, tmp_path: Path) -> Iterator:
    """`real_llm(**overrides)`: a client of the shared embedded server (LLMConfig `overrides` on top of the embedded
    server's config), all of one test on one cache file that starts empty, so each test's first answers are real
    requests. Closed after the test; closing one leaves the server up."""
    from dataclasses import replace

    from qkrag.llm.client import LLM

    made: list[LLM] = []

    def make(**overrides) -> LLM:
        llm = LLM(replace(shared_llm_server.config(), **overrides), cache=tmp_path / "real-llm.sqlite")
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


@pytest.fixture
def llm_env(shared_llm_server, monkeypatch):
    """Points `open_llm` at the shared server through the environment (OPENAI_BASE_URL, QKRAG_LLM_MODEL, no key),
    for this process and for the CLI subprocesses a test starts; QKRAG_TIMEOUT gets the embedded server's timeout
    unless it is set. Returns the server."""
    monkeypatch.setenv("OPENAI_BASE_URL", shared_llm_server.base_url)
    monkeypatch.setenv("QKRAG_LLM_MODEL", shared_llm_server.model.name)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if not os.environ.get("QKRAG_TIMEOUT", "").strip():
        monkeypatch.setenv("QKRAG_TIMEOUT", str(shared_llm_server.config().timeout))
    return shared_llm_server


# ------------------------------------------------------------------------------------------------ pytest-xdist


def group_of(item: pytest.Item) -> str:
    """The pytest-xdist group of a test: its own `xdist_group` mark; else the shared LLM server's group when it uses
    that server; else one group for the tests on the shared benchmark collections (they fill one cache of real-model
    vectors: on one worker, the first embeds and the next read); else its file."""
    mark = item.get_closest_marker("xdist_group")
    if mark:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    if "shared_llm_server" in item.fixturenames:
        return LLM_GROUP
    if item.get_closest_marker("shared_data"):
        return SHARED_DATA_GROUP
    return item.nodeid.split("::")[0]


def send_order(items: list[pytest.Item]) -> dict[str, tuple[int, int]]:
    """The sort key of each group, longest work first: the shared LLM server's group; then groups holding a test that
    starts an embedded LLM of its own (mark `llm`: real generation takes minutes on one core, so it should run beside
    the shared server's group, not after it), the smallest first (a group of one generating notebook before a file
    of many quick tests); then groups holding a slow test; then the rest. Collection order otherwise."""
    rank: dict[str, int] = {}
    size: dict[str, int] = {}
    for item in items:
        group = group_of(item)
        mine = (0 if group == LLM_GROUP else 1 if item.get_closest_marker("llm")
                else 2 if item.get_closest_marker("slow") else 3)
        rank[group] = min(rank.get(group, mine), mine)
        size[group] = size.get(group, 0) + 1
    return {group: (r, size[group] if r == 1 else 0) for group, r in rank.items()}


def tag_with_group(item: pytest.Item, group: str) -> None:
    """Append "@group" to the test's id, which is how pytest-xdist's loadgroup scheduler learns the group. xdist's
    own hook writes it to a field pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386: the groups are then
    silently ignored), so it is done here on pytests that keep the id structured; older ones are left to xdist."""
    try:
        from _pytest.nodeid import NodeId
    except ImportError:
        return
    if isinstance(getattr(item, "_id", None), NodeId) and "@" not in item.nodeid:
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("loadgroup", default=False):
        return  # set by pytest-xdist in its workers under --dist loadgroup; any other run keeps pytest's order
    rank = send_order(items)
    items.sort(key=lambda item: rank[group_of(item)])
    for item in items:
        group = group_of(item)
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
        tag_with_group(item, group)

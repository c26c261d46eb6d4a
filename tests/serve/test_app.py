"""The web app: JSON answers, and every error a one-line message the page can show, never a traceback."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the [serve] extra (starlette, uvicorn) is not installed")

from starlette.testclient import TestClient  # noqa: E402

from qkrag.errors import InputError  # noqa: E402
from qkrag.projection.model import QKProjection  # noqa: E402
from qkrag.serve import Served, make_app, open_served  # noqa: E402
from tests.serve.test_workspace import DOCS, QRELS, QUERIES  # noqa: E402
from tests.fakes import write_beir  # noqa: E402

LOCAL = "http://127.0.0.1:8765"  # the Host a browser on this machine sends


@pytest.fixture
def client(tmp_path, fake_encoder):
    folder = write_beir(tmp_path / "tiny", DOCS, QUERIES, QRELS)
    proj = QKProjection.identity(fake_encoder.dimension, fake_encoder.fingerprint, scale=5.0).save(tmp_path / "p")
    served = open_served([folder], encoder=fake_encoder, projection=proj)
    with TestClient(make_app(served), raise_server_exceptions=False, base_url=LOCAL) as c:
        yield c


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script src=\"/static/app.js\">" in page.text
    assert client.get("/static/app.js").status_code == 200
    sources = client.get("/api/sources").json()
    assert [s["name"] for s in sources["sources"]] == ["tiny"]
    assert {q["id"] for q in sources["sources"][0]["judged"]} == set(QUERIES)


def test_query_answers_four_columns(client):
    body = client.get("/api/query", params={"q": "bread dough", "relevant": "bread", "k": 2}).json()
    assert [c["name"] for c in body["columns"]] == ["cosine", "projection", "hybrid", "bm25"]
    assert all(len(c["hits"]) <= 2 for c in body["columns"])
    assert body["relevant"] == ["bread"] and body["columns"][1]["ndcg@10"] is not None
    judged = client.get("/api/query", params={"query_id": "q3"}).json()
    assert judged["query"] == QUERIES["q3"]


@pytest.mark.parametrize("params, status, words", [
    ({"q": ""}, 400, "query: has no text. Fix: type a query"),
    ({"q": "   "}, 400, "has no text"),
    ({"q": "bread", "source": "nope"}, 404, "collection 'nope': is not served here. Fix: pick one of ['tiny']"),
    ({"q": "bread", "k": "many"}, 400, "k: 'many' is not a whole number"),
    ({"q": "bread", "k": "0"}, 400, "out of range"),
    ({"query_id": "q99"}, 400, "is not a judged query"),
])
def test_bad_requests_get_one_line_messages(client, params, status, words):
    response = client.get("/api/query", params=params)
    assert response.status_code == status
    message = response.json()["error"]
    assert words in message and "\n" not in message and "Traceback" not in message


def test_views_not_started_say_how_to_start_them(client):
    aspects = client.get("/api/aspects")
    assert aspects.status_code == 400 and "--aspects FILE" in aspects.json()["error"]
    pairs = client.get("/api/pairs")
    assert pairs.status_code == 400 and "--pairs FOLDER" in pairs.json()["error"]


def test_an_unexpected_failure_is_a_message_not_a_traceback(client, monkeypatch):
    import qkrag.serve.app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(app_module, "run_query", broken)
    response = client.get("/api/query", params={"q": "bread"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error while answering /api/query: RuntimeError: disk on fire "
                                        "(the server log has the details)"}


def test_collection_view_and_a_source_that_failed_to_load(tmp_path, fake_encoder):
    good = write_beir(tmp_path / "tiny", DOCS, QUERIES, QRELS)
    served = open_served([good, tmp_path / "missing"], encoder=fake_encoder)
    with TestClient(make_app(served), raise_server_exceptions=False, base_url=LOCAL) as c:
        sources = c.get("/api/sources").json()["sources"]
        assert [s["name"] for s in sources] == ["tiny", "missing"] and "missing: no such folder" in sources[1]["error"]
        report = c.get("/api/collection", params={"source": "tiny"}).json()
        assert report["n_queries"] == 3 and "comparison" not in report  # no projection, nothing to compare
        failed = c.get("/api/collection", params={"source": "missing"})
        assert failed.status_code == 400 and "no such folder" in failed.json()["error"]


def test_serving_nothing_is_refused(fake_encoder):
    with pytest.raises(InputError, match="nothing to show"):
        open_served([], encoder=fake_encoder)
    assert isinstance(Served({}), Served)


def test_cli_serve_with_nothing_to_show_is_one_line(capsys):
    from qkrag.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: qkrag serve: was given nothing to show") and err.count("\n") == 1


def test_cli_serve_binds_loopback_by_default():
    import inspect

    from qkrag.cli import serve

    assert inspect.signature(serve).parameters["bind"].default == "127.0.0.1"


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
    ("evil.example.com", False), ("evil.example.com:8765", False), ("127.0.0.1:9999", False),
    ("127.0.0.1.evil.example.com:8765", False), ("", False),
])
def test_a_request_for_another_host_name_is_refused(client, host, ok):
    answer = client.get("/api/sources", headers={"Host": host})
    assert (answer.status_code == 200) == ok
    if not ok:
        assert answer.status_code == 421 and "is not this server" in answer.json()["error"]


def test_queries_never_write_the_embedding_cache(client, monkeypatch, tmp_path):
    from qkrag.cache import DiskCache
    from qkrag.embed import encoders

    cache = DiskCache(tmp_path / "e.sqlite")
    monkeypatch.setattr(encoders, "_default_cache", cache)
    for i in range(5):
        assert client.get("/api/query", params={"q": f"a query never asked before {i}"}).status_code == 200
    assert len(cache) == 0

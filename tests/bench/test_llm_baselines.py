"""The LLM baseline rows: doc2query over generated pairs and HyDE through the LLM client, in a bench run with the
fake encoder, ICT pairs (no LLM) and the fake OpenAI-compatible server for HyDE."""

import json

import pytest

from qkrag.bench import METHODS, Bench, BenchConfig, run_bench
from qkrag.bench.llm_baselines import coverage_note, seconds_per_passage
from qkrag.errors import InputError

from tests.fakes import FakeOpenAIServer, last_message, write_beir

TOPICS = ["kettle limescale", "bread yeast", "rain clouds", "tyre pressure", "paint drying", "ice melting"]


@pytest.fixture
def folder(tmp_path):
    docs = {f"d{i}": f"Note {i} on {TOPICS[i % 6]}. The {TOPICS[i % 6]} detail {i} matters for homes." for i in
            range(30)}
    queries = {f"q{i}": f"why does {TOPICS[i]} matter" for i in range(6)}
    return write_beir(tmp_path / "homes", docs, queries, {f"q{i}": [f"d{i}"] for i in range(6)})


def test_hyde_is_opt_in_and_doc2query_runs_by_default(folder, tmp_path):
    assert "hyde" not in METHODS and {"doc2query", "doc2query_dense"} <= set(METHODS)
    with pytest.raises(InputError, match="'hyde'"):  # the refusal lists it among the choices
        Bench(BenchConfig(data=folder, out=tmp_path / "b", methods=("cosine", "colbert")))
    plan = Bench(BenchConfig(data=folder, out=tmp_path / "b", methods=("cosine", "hyde"))).plan()
    assert "HyDE: 6 LLM calls, one per test query" in plan


def test_bench_rows_for_hyde_and_doc2query(folder, tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    with FakeOpenAIServer(chat=lambda body: "A passage: " + last_message(body).split("Question:")[1]) as server:
        config = BenchConfig(data=folder, out=tmp_path / "b", generator="ict", sample=10, progress=False,
                             llm_base_url=server.url, llm_model="fake-model",
                             methods=("cosine", "doc2query", "doc2query_dense", "hyde"))
        bench = run_bench(config)
        assert server.hits == 6  # one HyDE answer per test query (the warm-up's is reused from the cache)
    rows = {r.method: r for r in bench.rows}
    assert list(rows) == ["cosine", "doc2query", "doc2query_dense", "hyde"]  # bm25 ran only as doc2query's base
    for method, base in (("doc2query", "bm25"), ("doc2query_dense", "cosine")):
        x = rows[method].extra
        assert x["audit_base"] == base and x["n_seen"] + x["n_novel"] == 6 and x["llm_calls_per_query"] == 0
        assert "10 of 30 passages expanded (10 sampled of 30 eligible); the other 20 eligible need 0 more LLM calls" in rows[method].notes
    hyde = rows["hyde"]
    assert hyde.extra["llm_calls_per_query"] == 1.0 and hyde.extra["hyde"]["sent"] == 6
    assert "1.00 LLM calls per query (6 sent, 1 cached, 0 unusable" in hyde.notes and "n_seen" not in hyde.extra
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [r["method"] for r in report["rows"]] == list(rows)
    assert "LLM calls/query |" in (tmp_path / "b" / "bench.md").read_text()


def test_coverage_cost_uses_the_measured_rate_or_says_it_is_an_estimate():
    generation = {"llm": {"calls_made": 100}, "seconds": {"llm_stage": 250.0}, "counts": {"passages": 50}}
    measured = seconds_per_passage(generation, 4.0)
    assert measured == (5.0, "measured this run over 50 passages")
    assert seconds_per_passage({"llm": {"calls_made": 0}, "counts": {"passages": 50}}, 4.0) == \
        (4.0, "estimated: this run's generation came from the cache")
    assert coverage_note(56, 442, 1, measured, {"passages": 60, "skipped_no_answer": 282}) == (
        "56 of 442 passages expanded (60 sampled of 160 eligible (282 question-form passages are never generated "
        "for)); the other 100 eligible need 100 more LLM calls (~0.1 h at 5.0 s/passage, measured this run over 50 "
        "passages)")

"""The main job, end to end with the real parts: the shipped encoder, Chroma on disk, BM25, training, evaluation."""

import json

import pytest

from qkrag.bench import METHODS, Bench, BenchConfig, run_bench
from qkrag.errors import InputError
from qkrag.pairs.store import load_pairs
from qkrag.projection.recipes import RECIPES


def test_unknown_method_is_refused(tiny_beir, tmp_path):
    with pytest.raises(InputError, match=r"\['colbert'\] are not benchmark methods"):
        Bench(BenchConfig(data=tiny_beir, out=tmp_path, methods=("cosine", "colbert")))


def test_unknown_or_no_recipe_is_refused(tiny_beir, tmp_path):
    with pytest.raises(InputError, match=r"recipe 'lowrank': is not a training recipe.*use auto or one of full"):
        Bench(BenchConfig(data=tiny_beir, out=tmp_path, recipes=("auto", "lowrank")))
    with pytest.raises(InputError, match="recipes: names no recipe"):
        Bench(BenchConfig(data=tiny_beir, out=tmp_path, recipes=()))


def test_unknown_generator_is_refused_before_any_work(tiny_beir, tmp_path):
    with pytest.raises(InputError, match=r"generator 'gpt': is not a pair generator.*use one of llm, ict, llm\+ict"):
        Bench(BenchConfig(data=tiny_beir, out=tmp_path, generator="gpt"))


def test_llm_and_ict_pairs_train_together_and_doc2query_reads_only_the_llms(tmp_path, monkeypatch, fake_encoder):
    """--generator llm+ict: the LLM's pairs on `sample` passages and ICT's on `ict_sample`, concatenated with
    distinct query ids; the header counts both; doc2query expands passages with the LLM's queries only."""
    import qkrag.embed.encoders
    import qkrag.retrieval.doc2query
    from tests.fakes import FakeOpenAIServer, pair_answer, write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    expanded = {}
    real_expand = qkrag.retrieval.doc2query.expand_corpus
    monkeypatch.setattr(qkrag.retrieval.doc2query, "expand_corpus",
                        lambda corpus, queries: expanded.update(queries) or real_expand(corpus, queries))
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}. It says more about item {i} here."
            for i in range(40)}
    folder = write_beir(tmp_path / "forty", docs, {"q1": "topic 3 detail"}, {"q1": ["d3"]})
    with FakeOpenAIServer(chat=pair_answer) as server:
        bench = Bench(BenchConfig(data=folder, out=tmp_path / "b", generator="llm+ict", sample=12, ict_sample=30,
                                  candidates=2, progress=False, llm_base_url=server.url, llm_model="fake-model",
                                  methods=("cosine", "doc2query")))
        bench.run()
    llm_ids = set(load_pairs(tmp_path / "b" / "pairs-llm")["query_id"])
    ict = load_pairs(tmp_path / "b" / "pairs-ict")
    assert 0 < len(llm_ids) and len(set(ict["positive_id"])) == 30  # ICT on its own sample
    assert bench.info["generation_ict"]["counts"]["pairs"] == len(ict)
    assert f"{len(llm_ids)} (LLM) + {len(ict)} (ICT, from 30 passages)" in bench.header()
    assert expanded and all(not q.startswith("ict-") for qs in expanded.values() for q in qs)
    assert sum(map(len, expanded.values())) == len(llm_ids)  # the LLM's queries, none of ICT's sentences


def test_the_mixed_pairs_keep_both_generators_under_distinct_query_ids(tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders
    from tests.fakes import FakeOpenAIServer, pair_answer, write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}. It says more about item {i} here."
            for i in range(40)}
    folder = write_beir(tmp_path / "forty", docs, {"q1": "topic 3 detail"}, {"q1": ["d3"]})
    with FakeOpenAIServer(chat=pair_answer) as server:
        bench = Bench(BenchConfig(data=folder, out=tmp_path / "b", generator="llm+ict", sample=12, candidates=2,
                                  progress=False, llm_base_url=server.url, llm_model="fake-model"))
        bench.encoder = fake_encoder
        dataset = bench._generate(fake_encoder)
    ids = dataset["query_id"]
    assert len(set(ids)) == len(ids)  # both generators number a passage's queries from 0: no id is shared
    assert {g == "ict" for g in dataset["generator"]} == {True, False}
    assert sum(i.startswith("ict-") for i in ids) == sum(g == "ict" for g in dataset["generator"]) == 40


@pytest.mark.slow
def test_bench_on_the_demo_collection_with_real_parts(tmp_path):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    config = BenchConfig(data=demo, out=tmp_path / "bench", generator="ict", sample=60, progress=False,
                         methods=("bm25", "cosine", "centered_cosine", "qk_synthetic", "qk_human"))
    bench = run_bench(config)
    rows = {r.method: r for r in bench.rows}
    assert set(rows) == {"bm25", "cosine", "centered_cosine", "qk_synthetic", "qk_human"}
    # The demo collection's published behaviour (data/demo/README.md): raw cosine 0.817, BM25 0.673.
    assert rows["cosine"].result["ndcg@10"] == pytest.approx(0.817, abs=0.005)
    assert rows["bm25"].result["ndcg@10"] == pytest.approx(0.673, abs=0.01)
    for method in ("qk_synthetic", "qk_human"):
        row = rows[method]
        assert row.ece is not None and 0 <= row.ece <= 1
        # the identity is a model-selection candidate, so a projection never falls far below raw cosine
        assert row.result["ndcg@10"] >= rows["cosine"].result["ndcg@10"] - 0.03
    # the synthetic map is chosen on the train split's judged queries (validation data, never test); qk_human
    # trains on them, and the ~6 it could hold out are too few to select on, so it is judged by 5-fold CV
    assert "judged queries of the train split" in rows["qk_synthetic"].notes
    assert "5-fold CV over" in rows["qk_human"].notes
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [r["method"] for r in report["rows"]] == [m for m in METHODS if m in rows]
    assert (tmp_path / "bench" / "bench.png").stat().st_size > 0


def test_question_share_is_reported_where_documents_ask_questions(tmp_path):
    from tests.fakes import write_beir

    docs = {f"a{i}": f"Fact number {i}: the {w} is made of {w} stone and weighs {i} tons."
            for i, w in enumerate(["red", "blue", "green", "grey", "white", "black"])}
    docs.update({f"p{i}": f"Why is the {w} one so heavy?" for i, w in enumerate(["red", "blue", "green", "grey",
                                                                                 "white", "black"])})
    folder = write_beir(tmp_path / "mixed", docs, {"q1": "what is the red one made of"}, {"q1": ["a0"]})
    bench = Bench(BenchConfig(data=folder, out=tmp_path / "out", methods=("cosine",), progress=False))
    assert bench.question_docs is not None and sum(bench.question_docs.values()) == 6


def test_a_bench_that_fails_late_keeps_the_rows_it_finished(tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders
    from tests.fakes import write_beir

    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}." for i in range(30)}
    folder = write_beir(tmp_path / "thirty", docs, {"q1": "topic 3 detail"}, {"q1": ["d3"]})

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)

    def boom(self, encoder):
        raise RuntimeError("the LLM died")

    monkeypatch.setattr(Bench, "_generate", boom)
    config = BenchConfig(data=folder, out=tmp_path / "b", generator="ict", sample=30, progress=False,
                         methods=("bm25", "cosine", "qk_synthetic"))
    with pytest.raises(RuntimeError, match="LLM died"):
        run_bench(config)
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["cosine", "bm25"]
    assert "| cosine |" in (tmp_path / "b" / "bench.md").read_text()
    # every row's per-query scores, for paired tests between any two rows
    per_query = json.loads((tmp_path / "b" / "per_query.json").read_text())
    assert sorted(per_query) == ["bm25", "cosine"] and set(per_query["cosine"]["ndcg@10"]) == {"q1"}


def test_a_sample_too_small_for_validation_fails_before_any_work(tiny_beir, tmp_path):
    with pytest.raises(InputError, match="too few to hold out validation pairs"):
        Bench(BenchConfig(data=tiny_beir, out=tmp_path / "b", sample=5, progress=False))
    plan = Bench(BenchConfig(data=tiny_beir, out=tmp_path / "b", methods=("bm25", "cosine"))).plan()
    assert "no LLM stage" in plan


def test_bench_report_carries_its_context_and_plots(tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders
    from tests.fakes import write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}." for i in range(30)}
    folder = write_beir(tmp_path / "thirty", docs, {f"q{i}": f"topic {i} detail" for i in range(5)},
                        {f"q{i}": [f"d{i}"] for i in range(5)})
    run_bench(BenchConfig(data=folder, out=tmp_path / "b", methods=("bm25", "cosine"), progress=False))
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "- data:" in md and "- encoder:" in md and "- qkrag:" in md and "- date:" in md
    assert (tmp_path / "b" / "bench-delta.png").stat().st_size > 0


def test_an_ece_above_the_threshold_is_flagged_beside_the_figure(tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders
    from tests.fakes import write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}." for i in range(30)}
    folder = write_beir(tmp_path / "thirty", docs, {f"q{i}": f"topic {i} detail" for i in range(5)},
                        {f"q{i}": [f"d{i}"] for i in range(5)})
    bench = run_bench(BenchConfig(data=folder, out=tmp_path / "b", methods=("cosine", "bm25"), progress=False))
    bench.rows[0].ece, bench.rows[1].ece = 0.64, 0.05  # as a σ fitted on one positive per query scores elsewhere
    table = bench.table()
    assert "| 0.640 (> 0.1: uncalibrated here) |" in table and "| 0.050 |" in table
    assert "ECE 0.640 > 0.1: σ is not calibrated for this collection's relevance rates" in table
    assert "qkrag calibrate" in bench.rows[0].to_dict()["ece_warning"] and "ece_warning" not in bench.rows[1].to_dict()


def _configs_tried(tmp_path, monkeypatch, fake_encoder, train_split: bool = False, **settings) -> list:
    """The TrainConfigs bench hands to model selection for qk_synthetic on 40 ICT pairs (training itself is cut
    short): what `settings` of BenchConfig reach. `train_split`: the collection has judged train queries."""
    import qkrag.embed.encoders
    import qkrag.projection.select
    from tests.fakes import write_beir, write_qrels

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    seen = []

    def record(pairs, configs, **kwargs):
        seen.extend(configs.values())
        raise RuntimeError("recorded")

    monkeypatch.setattr(qkrag.projection.select, "train_best", record)
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}. It says more about item {i}."
            for i in range(40)}
    queries = {"q1": "topic 3 detail", **{f"t{i}": f"item {i}" for i in range(5)}}
    folder = write_beir(tmp_path / "forty", docs, queries, {"q1": ["d3"]})
    if train_split:
        write_qrels(folder, {f"t{i}": [f"d{i}"] for i in range(5)}, "train")
    config = BenchConfig(data=folder, out=tmp_path / "b", generator="ict", sample=40, progress=False,
                         methods=("cosine", "qk_synthetic"), **settings)
    with pytest.raises(RuntimeError, match="recorded"):
        run_bench(config)
    return seen


def test_projection_training_runs_under_the_bench_epoch_cap(tmp_path, monkeypatch, fake_encoder):
    """Every loss's full-recipe TrainConfig gets BenchConfig.epochs: with few synthetic pairs an epoch is a few steps, so the cap
    must leave cross-validation room to pick a later epoch."""
    assert BenchConfig(data=tmp_path).epochs >= 30
    seen = _configs_tried(tmp_path, monkeypatch, fake_encoder, losses=("infonce",), epochs=17,
                          recipes=("full", "low_rank"))
    # the full recipe runs under the bench's cap; low_rank (one batch an epoch on small data) keeps its own
    assert [c.epochs for c in seen] == [17, RECIPES["low_rank"]["epochs"]]
    assert [c.residual_rank for c in seen] == [None, RECIPES["low_rank"]["residual_rank"]]


def test_auto_offers_low_rank_only_where_selection_sees_judged_queries(tmp_path, monkeypatch, fake_encoder):
    """Held-out synthetic pairs reward the generator's way of asking; only judged queries may choose the low-rank
    recipe, which has nothing holding it near the start."""
    synthetic = _configs_tried(tmp_path / "a", monkeypatch, fake_encoder, losses=("infonce",))
    assert [c.residual_rank for c in synthetic] == [None]
    judged = _configs_tried(tmp_path / "b", monkeypatch, fake_encoder, train_split=True, losses=("infonce",))
    rank = RECIPES["low_rank"]["residual_rank"]
    assert [(c.residual_rank, c.query_negatives) for c in judged] == [(None, False), (rank, False), (rank, True)]


def test_a_retriever_registered_after_the_bench_is_imported_gets_a_row(tmp_path, monkeypatch, fake_encoder):
    import qkrag.embed.encoders
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.factory import RETRIEVERS, RetrieverKind
    from tests.fakes import write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    monkeypatch.setitem(RETRIEVERS, "lexical", RetrieverKind(lambda r: (BM25Retriever(r.corpus), {}), "BM25 again"))
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}." for i in range(30)}
    folder = write_beir(tmp_path / "thirty", docs, {f"q{i}": f"topic {i} detail" for i in range(5)},
                        {f"q{i}": [f"d{i}"] for i in range(5)})
    bench = run_bench(BenchConfig(data=folder, out=tmp_path / "b", methods=("cosine", "bm25", "lexical"),
                                  progress=False))
    rows = {r.method: r for r in bench.rows}
    assert list(rows) == ["cosine", "bm25", "lexical"]
    assert rows["lexical"].result["ndcg@10"] == pytest.approx(rows["bm25"].result["ndcg@10"])
    with pytest.raises(InputError, match=r"\['soft'\] are not losses\. Fix: choose one or more of infonce, distill"):
        Bench(BenchConfig(data=folder, out=tmp_path / "c", methods=("cosine",), losses=("soft",)))


def test_bench_residual_rank_reaches_every_loss(tmp_path, monkeypatch, fake_encoder):
    """BenchConfig.residual_rank trains the full recipe's Q = Q0 + A·Bᵀ for every loss tried, not the whole maps."""
    seen = _configs_tried(tmp_path, monkeypatch, fake_encoder, losses=("infonce", "distill"), recipes=("full",),
                          residual_rank=8)
    assert [c.residual_rank for c in seen] == [8, 8]


def test_the_fine_tune_row_learns_against_one_negative_per_pair_when_asked(tmp_path, monkeypatch, fake_encoder):
    """--finetune-hard-negatives: each pair's first mined negative, or a seeded random other passage where the
    generation mined none, so every pair has one and none is its own positive."""
    import qkrag.embed.encoders
    import qkrag.embed.finetune
    from tests.fakes import write_beir

    monkeypatch.setattr(qkrag.embed.encoders, "make_encoder", lambda *a, **k: fake_encoder)
    seen = {}

    def record(queries, positives, *args, negatives=None, **kwargs):
        seen.update(positives=positives, negatives=negatives)
        raise RuntimeError("recorded")

    monkeypatch.setattr(qkrag.embed.finetune, "finetune_encoder", record)
    docs = {f"d{i}": f"Passage {i} about topic {i % 7} with detail {i * 3}. It says more about item {i}."
            for i in range(40)}
    folder = write_beir(tmp_path / "forty", docs, {"q1": "topic 3 detail"}, {"q1": ["d3"]})
    config = BenchConfig(data=folder, out=tmp_path / "b", generator="ict", sample=40, progress=False,
                         methods=("cosine", "finetune"), finetune_hard_negatives=True)
    with pytest.raises(RuntimeError, match="recorded"):
        run_bench(config)
    assert seen["negatives"] is not None and len(seen["negatives"]) == len(seen["positives"]) > 0
    assert all(n != p for n, p in zip(seen["negatives"], seen["positives"]))
    assert set(seen["negatives"]) <= set(docs.values())

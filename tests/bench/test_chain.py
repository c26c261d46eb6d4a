"""The evaluation chain: scoring a ranking, its paired difference and audit, and `evaluate_folder` (`qkrag eval`)."""

import pytest

from qkrag.errors import InputError
from qkrag.bench.chain import evaluate_folder, write_trec_run


def test_a_baseline_gives_the_paired_difference(tiny_beir, fake_encoder):
    ev = evaluate_folder(tiny_beir, retriever="exact", encoder=fake_encoder, baseline="bm25", k=5)
    assert ev.base is not None and ev.info["baseline"] == "bm25"
    assert ev.extra["delta_ndcg@10"] == pytest.approx(ev.result["ndcg@10"] - ev.base["ndcg@10"], abs=1e-9)
    assert 0 <= ev.extra["p_ndcg@10"] <= 1
    plain = evaluate_folder(tiny_beir, retriever="exact", encoder=fake_encoder, k=5)
    assert plain.base is None and "delta_ndcg@10" not in plain.extra
    with pytest.raises(InputError, match="not a baseline"):
        evaluate_folder(tiny_beir, encoder=fake_encoder, baseline="colbert")


def test_trec_run_file_is_ranked_and_parseable(tmp_path):
    path = write_trec_run(tmp_path / "run.txt", {"q1": {"d2": 0.1, "d1": 0.9}, "q2": {"d3": 0.5}}, "qkrag")
    lines = [line.split() for line in path.read_text().splitlines()]
    assert lines == [["q1", "Q0", "d1", "1", "0.900000", "qkrag"], ["q1", "Q0", "d2", "2", "0.100000", "qkrag"],
                     ["q2", "Q0", "d3", "1", "0.500000", "qkrag"]]
    with pytest.raises(InputError, match="holds whitespace"):
        write_trec_run(tmp_path / "r2.txt", {}, "two words")


def test_score_drops_a_query_s_own_id_only_where_queries_are_documents():
    from qkrag.bench.chain import score
    from qkrag.data import Collection, Corpus
    from qkrag.ranking import Hit

    corpus = Corpus.from_texts({"q1": "how do plants grow", "d1": "Plants grow from light.", "d2": "Cats sit."})
    hits = [[Hit("q1", 0.9, probability=0.9), Hit("d1", 0.5, probability=0.7), Hit("d2", 0.1, probability=0.2)]]
    same = score(Collection(corpus, {"q1": "how do plants grow"}, {"q1": {"d1": 1}}), hits, "x", ["mrr@10"])
    assert same.result["mrr@10"] == 1.0  # the query found itself first: not counted
    other = score(Collection(corpus, {"q1": "an unrelated question"}, {"q1": {"d1": 1}}), hits, "x", ["mrr@10"])
    assert other.result["mrr@10"] == 0.5  # an id that collides by accident is a real hit
    assert same.run == {"q1": {"q1": 0.9, "d1": 0.5, "d2": 0.1}}
    assert same.calibration is not None and same.ece() is not None
    plain = score(Collection(corpus, {"q1": "x"}, {"q1": {"d1": 1}}), [[Hit("d1", 0.5)]], "cosine")
    assert plain.calibration is None and plain.ece() is None



def test_a_projection_is_compared_and_audited_against_its_base(tiny_beir, fake_encoder, tmp_path):
    from qkrag.bench.chain import audit, paired
    from qkrag.data import load_beir
    from qkrag.projection.model import QKProjection

    projection = QKProjection.identity(fake_encoder.dimension, fake_encoder.fingerprint)
    projection.training_positive_ids_ = ["d1"]  # q1's answer: q1 is seen, q2 and q3 novel
    projection.save(tmp_path / "p")
    ev = evaluate_folder(tiny_beir, encoder=fake_encoder, projection=tmp_path / "p", k=5)
    assert ev.info["baseline"] == "exact without the projection" and 0 <= ev.extra["ece"] <= 1
    c = paired(ev.result, ev.base)
    assert ev.extra["delta_ndcg@10"] == c.difference and ev.extra["p_ndcg@10"] == c.p_value
    assert (ev.extra["n_seen"], ev.extra["n_novel"]) == (1, 2)
    assert {k: v for k, v in ev.extra.items() if k.endswith(("_seen", "_novel"))} == {
        k: v for k, v in audit(ev.result, ev.base, load_beir(tiny_beir).qrels, ["d1"]).items()
        if k.endswith(("_seen", "_novel"))}
    projection.training_positive_ids_ = None
    projection.save(tmp_path / "old")
    old = evaluate_folder(tiny_beir, encoder=fake_encoder, projection=tmp_path / "old", k=5)
    assert "not available" in old.extra["leakage_audit"] and "n_seen" not in old.extra



def test_a_retriever_registered_after_import_is_a_baseline(tiny_beir, fake_encoder, monkeypatch):
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.factory import RETRIEVERS, RetrieverKind

    monkeypatch.setitem(RETRIEVERS, "lexical", RetrieverKind(lambda r: (BM25Retriever(r.corpus), {}), "BM25 again"))
    ev = evaluate_folder(tiny_beir, retriever="exact", encoder=fake_encoder, baseline="lexical", k=5)
    assert ev.base is not None and ev.info["baseline"] == "lexical"

"""The numbers `qkrag serve` shows come from the library: each is checked against a direct library call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkrag.data import load_beir
from qkrag.errors import InputError
from qkrag.evaluate.metrics import evaluate_retriever, evaluate_run
from qkrag.projection.model import QKProjection
from qkrag.retrieval.projected import ProjectedRetriever
from qkrag.ranking import to_run
from qkrag.retrieval.index import ExactIndex
from qkrag.serve.workspace import COLUMNS, collection_report, load_folder, load_pairs_view, run_query
from tests.fakes import write_beir

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    "bread": "Bread rises because yeast produces carbon dioxide gas in the dough.",
    "post": "Why does my bread dough not rise? Anyone know why?",
    "bike": "Bicycle chains need oil every few hundred kilometres.",
    "plant": "Plants make sugar from sunlight, water and carbon dioxide.",
    "cat": "The cat sat on the warm mat by the fire.",
}
QUERIES = {"q1": "why does bread dough rise", "q2": "how do plants make sugar", "q3": "oil for a bicycle chain"}
QRELS = {"q1": ["bread"], "q2": ["plant"], "q3": ["bike"]}


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "tiny", DOCS, QUERIES, QRELS)


@pytest.fixture
def projection(tmp_path, fake_encoder):
    """A trained-looking projection for the fake encoder: identity with a scale and bias, so probabilities differ
    from cosines."""
    model = QKProjection.identity(fake_encoder.dimension, fake_encoder.fingerprint, scale=5.0, bias=-2.0)
    return model.save(tmp_path / "proj")


def test_query_shows_four_columns_with_probability_cosine_rank_and_marks(folder, projection, fake_encoder):
    source = load_folder(folder, fake_encoder, projection)
    assert not source.error and not source.projection_error
    result = run_query(source, "why does my bread dough rise", relevant=["bread"], k=3)
    assert [c["name"] for c in result["columns"]] == list(COLUMNS)
    cosine = {h["id"]: h for h in result["columns"][0]["hits"]}
    for column in result["columns"]:
        assert 1 <= len(column["hits"]) <= 3
        for rank, hit in enumerate(column["hits"], 1):
            assert hit["rank"] == rank
            assert 0 < hit["probability"] < 1 and hit["cosine"] is not None
            assert hit["relevant"] == (hit["id"] == "bread")
            assert hit["question_form"] == (hit["id"] == "post")
            assert hit["rank_change"] == hit["cosine_rank"] - rank
            if hit["id"] in cosine:
                assert hit["cosine"] == pytest.approx(cosine[hit["id"]]["score"])
    # the projection column is the library's ProjectedRetriever, scored by the library's evaluate_run
    collection = load_beir(folder)
    raw = ExactIndex(collection.corpus.ids, source.raw.vectors, "cosine", fingerprint=fake_encoder.fingerprint)
    own = ProjectedRetriever(fake_encoder, QKProjection.load(projection), raw).search(["why does my bread dough rise"],
                                                                                      5)[0]
    shown = result["columns"][1]
    assert [h["id"] for h in shown["hits"]] == [h.id for h in own[:3]]
    assert [h["probability"] for h in shown["hits"]] == pytest.approx([h.probability for h in own[:3]])
    expected = evaluate_run({"typed": {"bread": 1}}, to_run(["typed"], [own]), ["ndcg@10"])["ndcg@10"]
    assert shown["ndcg@10"] == pytest.approx(expected)


def test_a_judged_query_uses_its_text_and_judgments(folder, fake_encoder):
    source = load_folder(folder, fake_encoder)
    result = run_query(source, None, query_id="q2")
    assert result["query"] == QUERIES["q2"] and result["relevant"] == ["plant"]
    assert all(c["ndcg@10"] is not None for c in result["columns"] if "hits" in c)


def test_no_projection_leaves_its_column_with_a_message_and_hybrid_on_cosine(folder, fake_encoder):
    result = run_query(load_folder(folder, fake_encoder), "bread")
    column = {c["name"]: c for c in result["columns"]}
    assert "--projection" in column["projection"]["error"]
    assert column["hybrid"]["hits"] and column["hybrid"]["hits"][0]["probability"] is None


def test_a_projection_for_another_encoder_is_a_message_not_a_failure(folder, tmp_path, fake_encoder):
    other = QKProjection.identity(8, "another-encoder").save(tmp_path / "other")
    source = load_folder(folder, fake_encoder, other)
    assert "another-encoder" in source.projection_error and "train a projection for this encoder" in \
        source.projection_error
    column = {c["name"]: c for c in run_query(source, "bread")["columns"]}
    assert column["projection"]["error"] == source.projection_error
    assert column["cosine"]["hits"] and column["bm25"]["hits"]


@pytest.mark.parametrize("text", ["", "   ", None])
def test_a_query_with_no_text_is_refused_with_the_fix(folder, fake_encoder, text):
    with pytest.raises(InputError, match="has no text.*type a query"):
        run_query(load_folder(folder, fake_encoder), text)


def test_unknown_ids_and_folders_are_clear_errors(folder, tmp_path, fake_encoder):
    source = load_folder(folder, fake_encoder)
    with pytest.raises(InputError, match="not a judged query"):
        run_query(source, None, query_id="q9")
    with pytest.raises(InputError, match="not documents"):
        run_query(source, "bread", relevant=["nope"])
    missing = load_folder(tmp_path / "nowhere", fake_encoder)
    assert "no such folder" in missing.error
    with pytest.raises(InputError, match="could not be loaded"):
        run_query(missing, "bread")


def test_collection_report_is_the_library_evaluation(folder, projection, fake_encoder):
    source = load_folder(folder, fake_encoder, projection)
    report = collection_report(source)
    collection = load_beir(folder)
    raw = ExactIndex(collection.corpus.ids, source.raw.vectors, "cosine", fingerprint=fake_encoder.fingerprint)
    from qkrag.retrieval.index import DenseRetriever

    direct = evaluate_retriever(DenseRetriever(fake_encoder, raw), collection, metrics=["ndcg@10"])
    assert {r["id"]: r["cosine"] for r in report["per_query"]} == pytest.approx(direct.per_query["ndcg@10"])
    assert report["means"]["cosine"] == pytest.approx(direct["ndcg@10"])
    c = report["comparison"]
    assert c["gains"] + c["losses"] + c["ties"] == len(QUERIES) and 0 < c["p_value"] <= 1
    cal = report["calibration"]
    assert sum(b["count"] for b in cal["bins"]) == cal["n"]
    hist = report["histograms"]["cosine"]
    assert sum(hist["relevant"]) == hist["n_relevant"] == 3  # every relevant document is within reach
    assert collection_report(source) is report  # computed once


def test_pairs_view_samples_rows_with_their_filters(tmp_path, fake_encoder):
    from qkrag.data import load_corpus
    from qkrag.pairs.generate import generate_pairs
    from qkrag.pairs.config import GenerateConfig

    corpus = load_corpus(ROOT / "data" / "demo")
    out = tmp_path / "pairs"
    generate_pairs(corpus, fake_encoder, None, GenerateConfig(generator="ict", sample=20), out,
                   doc_ids=corpus.ids[:20])
    view = load_pairs_view(out, n=5)
    assert view["shown"] == min(5, view["n_pairs"]) and view["n_pairs"] > 0
    pair = view["pairs"][0]
    assert pair["base_rank"] >= 1 and isinstance(pair["question_form"], bool)
    assert [f["filter"] for f in pair["filters"]] == ["words", "passage copy", "title copy", "round-trip rank"]
    assert load_pairs_view(out, n=5) == view  # seeded
    with pytest.raises(InputError, match="no pairs folder there"):
        load_pairs_view(tmp_path / "empty")


def test_aspects_view_maps_and_neighbours_for_each_label(fake_encoder):
    from qkrag.analysis.aspects import nearest_neighbours, pca_2d
    from qkrag.embed.encoders import embed
    from qkrag.serve.workspace import load_aspects

    view = load_aspects(ROOT / "data" / "cities" / "cities.jsonl", fake_encoder, k=3)
    assert view["aspects"] == ["raw", "climate", "cuisine", "size"]
    n = len(view["documents"])
    assert all(len(view["maps"][a]) == n and len(view["maps"][a][0]) == 2 for a in view["aspects"])
    raw = embed(fake_encoder, [f"{d['title']} {d['text']}".strip() for d in view["documents"]], "document")
    np.testing.assert_allclose(view["maps"]["raw"], pca_2d(raw), atol=1e-5)
    assert view["neighbours"]["raw"] == nearest_neighbours(raw, [d["id"] for d in view["documents"]], 3)


def test_aspects_file_without_labels_is_refused(tmp_path, fake_encoder):
    from qkrag.serve.workspace import load_aspects

    path = tmp_path / "plain.jsonl"
    path.write_text('{"_id": "a", "text": "one"}\n')
    with pytest.raises(InputError, match="no label fields"):
        load_aspects(path, fake_encoder)


def test_a_chroma_collection_is_served_without_writing_to_it(tmp_path, fake_encoder):
    from qkrag.data import load_corpus
    from qkrag.retrieval.index import IndexConfig, build_index, connect
    from qkrag.serve.workspace import load_index

    corpus = load_corpus(write_beir(tmp_path / "c", DOCS, QUERIES, QRELS))
    config = IndexConfig(collection="tiny", path=tmp_path / "chroma", ef_search=123)
    build_index(corpus, fake_encoder, config)

    def state():
        return {c.name: (c.metadata, c.count(), c.configuration["hnsw"]) for c in connect(config).list_collections()}

    before = state()
    proj = QKProjection.identity(fake_encoder.dimension, fake_encoder.fingerprint).save(tmp_path / "p")
    source = load_index(IndexConfig(collection="tiny", path=tmp_path / "chroma"), fake_encoder, proj)  # other ef
    assert not source.error and not source.projection_error
    result = run_query(source, "bread dough")
    assert all(c["hits"] for c in result["columns"])
    assert state() == before  # no projected sibling collection, no setting changed
    missing = load_index(IndexConfig(collection="nope", path=tmp_path / "chroma"), fake_encoder)
    assert "'nope'" in missing.error and "does not exist" in missing.error
    with pytest.raises(InputError, match="no judged queries"):
        collection_report(source)


def test_a_collection_fuses_by_the_rule_index_recorded(tmp_path, fake_encoder):
    from qkrag.data import load_corpus
    from qkrag.retrieval.hybrid import FusionChoice, FusionConfig, record_fusion
    from qkrag.retrieval.index import DenseRetriever, IndexConfig, build_index
    from qkrag.serve.workspace import load_index

    corpus = load_corpus(write_beir(tmp_path / "c", DOCS, QUERIES, QRELS))
    config = IndexConfig(collection="tiny", path=tmp_path / "chroma")
    built = build_index(corpus, fake_encoder, config)
    unrecorded = load_index(config, fake_encoder)
    assert unrecorded.fusion == FusionConfig("rrf") and "none recorded" in unrecorded.fusion_note
    rule = FusionChoice(FusionConfig("convex", weight=0.3), "train split", 40, 0.5)
    record_fusion(DenseRetriever(fake_encoder, built), rule)
    source = load_index(config, fake_encoder)
    assert source.fusion == rule.config and source.fusion_note == "train split (40 queries, nDCG@10 0.500)"

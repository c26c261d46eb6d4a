"""Hybrid BM25 + dense retrieval: fusion math by hand, choosing the fusion, BM25 on disk, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qkrag.cli as cli
import qkrag.retrieval.hybrid as hybrid
from qkrag.data import Corpus
from qkrag.errors import InputError
from qkrag.ranking import Hit
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.retrieval.hybrid import (DEFAULT_GRID, FusionConfig, HybridRetriever, bm25_folder, choose_fusion, fuse,
                                    fusion_from_options, open_bm25)
from qkrag.retrieval.index import IndexConfig

from tests.fakes import FakeEncoder, write_beir, write_qrels


def hits(*pairs) -> list[Hit]:
    return [Hit(doc, score) for doc, score in pairs]


def ranked(row: list[Hit]) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in row]


# ---------------------------------------------------------------------------------------------------------- config


def test_config_labels_and_validation():
    assert FusionConfig().label() == "rrf(k=60)"
    assert FusionConfig("convex", weight=0.7).label() == "convex(w=0.7, zscore)"
    assert FusionConfig("convex", weight=0.3, normalization="minmax", depth=50).label() == \
        "convex(w=0.3, minmax, depth=50)"
    for bad in ({"method": "sum"}, {"weight": 1.5}, {"weight": -0.1}, {"rrf_k": -1}, {"depth": 0},
                {"normalization": "l2"}):
        with pytest.raises(InputError, match="FusionConfig.*Fix:"):
            FusionConfig(**bad)


def test_default_grid_is_rrf_then_both_normalisations():
    labels = [c.label() for c in DEFAULT_GRID]
    assert labels[0] == "rrf(k=60)" and len(labels) == 19 == len(set(labels))
    assert [c.weight for c in DEFAULT_GRID[1:10]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert {c.normalization for c in DEFAULT_GRID[1:10]} == {"zscore"}
    assert {c.normalization for c in DEFAULT_GRID[10:]} == {"minmax"}


def test_fusion_from_options():
    assert fusion_from_options("auto") is None
    assert fusion_from_options("rrf") == FusionConfig("rrf")
    assert fusion_from_options("convex") == FusionConfig("convex", weight=0.5)
    assert fusion_from_options("auto", 0.7) == FusionConfig("convex", weight=0.7)
    with pytest.raises(InputError, match="RRF has no weight"):
        fusion_from_options("rrf", 0.3)
    with pytest.raises(InputError, match="not a fusion rule"):
        fusion_from_options("max")


# ---------------------------------------------------------------------------------------------------------- fusion


def test_rrf_by_hand():
    dense = [hits(("a", 0.9), ("b", 0.8))]
    lexical = [hits(("b", 5.0), ("c", 3.0))]
    [row] = fuse(dense, lexical, FusionConfig("rrf", rrf_k=60), k=10)
    # b: rank 2 dense + rank 1 lexical; a: rank 1 dense only; c: rank 2 lexical only (its missing arm adds 0)
    assert ranked(row) == [("b", 1 / 62 + 1 / 61), ("a", 1 / 61), ("c", 1 / 62)]


def test_convex_minmax_by_hand_with_missing_arms_and_ties():
    dense = [hits(("d", 3.0), ("b", 2.0), ("a", 1.0))]  # normalised: d 1, b 0.5, a 0
    lexical = [hits(("a", 9.0), ("c", 5.0), ("d", 1.0))]  # normalised: a 1, c 0.5, d 0
    [row] = fuse(dense, lexical, FusionConfig("convex", weight=0.5, normalization="minmax"), k=10)
    # b is missing from lexical and c from dense: each gets that arm's lowest normalised score (0 here).
    # d and a tie at 0.5, b and c at 0.25: ties go by id, not by the order the arms listed them.
    assert ranked(row) == [("a", 0.5), ("d", 0.5), ("b", 0.25), ("c", 0.25)]


def test_convex_zscore_by_hand_missing_doc_gets_the_arms_lowest_score():
    dense = [hits(("a", 3.0), ("b", 1.0))]  # z: a +1, b -1
    lexical = [hits(("b", 4.0), ("c", 2.0))]  # z: b +1, c -1
    [row] = fuse(dense, lexical, FusionConfig("convex", weight=0.75), k=10)
    # a = .75·1 + .25·min(lexical)=-1 -> .5;  b = .75·-1 + .25·1 -> -.5;  c = .75·min(dense)=-1 + .25·-1 -> -1.
    # (Scoring a missing document 0 instead would put c above b.)
    assert ranked(row) == [("a", 0.5), ("b", -0.5), ("c", -1.0)]


def test_an_arm_without_hits_leaves_the_other_arms_order():
    dense = [hits(("x", 0.9), ("y", 0.5), ("z", 0.1))]
    for config in (FusionConfig("rrf"), FusionConfig("convex", weight=0.3), FusionConfig("convex", weight=0.3,
                                                                                          normalization="minmax")):
        assert [h.id for h in fuse(dense, [[]], config, k=10)[0]] == ["x", "y", "z"]
        assert [h.id for h in fuse([[]], dense, config, k=10)[0]] == ["x", "y", "z"]
    assert fuse([[]], [[]], FusionConfig(), k=5) == [[]]


def test_depth_and_k_cut_the_rankings():
    dense = [hits(("a", 3.0), ("b", 2.0), ("c", 1.0))]
    lexical = [hits(("d", 3.0), ("e", 2.0))]
    [row] = fuse(dense, lexical, FusionConfig(depth=1), k=10)
    assert {h.id for h in row} == {"a", "d"}  # only each arm's top 1 is fused
    assert len(fuse(dense, lexical, FusionConfig(), k=2)[0]) == 2


def test_fused_hits_carry_text_and_the_dense_arms_probability():
    dense = [[Hit("a", 2.0, None, 0.9), Hit("b", 1.0, "b dense", 0.4)]]
    lexical = [[Hit("c", 3.0, "c text"), Hit("a", 1.0, "a text")]]
    row = {h.id: h for h in fuse(dense, lexical, FusionConfig(), k=10)[0]}
    assert row["a"].probability == 0.9 and row["a"].text == "a text"  # text from the arm that has it
    assert row["b"].probability == 0.4 and row["b"].text == "b dense"
    assert row["c"].probability is None  # the dense arm never scored c: a fused score is no probability


def test_fuse_refuses_mismatched_arms():
    with pytest.raises(InputError, match="1 dense rankings but 2 lexical"):
        fuse([[]], [[], []], FusionConfig(), k=10)
    with pytest.raises(InputError, match="k=0"):
        fuse([[]], [[]], FusionConfig(), k=0)


class _Fixed:
    """A retriever that returns fixed rankings and records the depth it was asked for."""

    def __init__(self, rows):
        self.rows, self.asked = rows, []

    def search(self, queries, k=10):
        self.asked.append(k)
        return [list(self.rows[q][:k]) for q in queries]


def test_hybrid_retriever_searches_each_arm_at_depth_and_fuses():
    dense = _Fixed({"q": hits(("a", 0.9), ("b", 0.8))})
    lexical = _Fixed({"q": hits(("b", 5.0), ("c", 3.0))})
    retriever = HybridRetriever(dense, lexical, FusionConfig(depth=7))
    assert [h.id for h in retriever.search(["q"], k=2)[0]] == ["b", "a"]
    assert dense.asked == lexical.asked == [7]
    with pytest.raises(InputError, match="no search"):
        HybridRetriever(object(), lexical)


# ---------------------------------------------------------------------------------------------------------- choosing


def _two_query_case():
    """q1's relevant r1 needs the lexical arm (dense weight <= 0.8); q2's r2 needs the dense arm (weight >= 0.8).

    Min-max, with x/y normalised to 1 or 0 as shown: q1: r1 = .85w + (1 - w) beats x = w iff w < 1/1.15 = 0.87;
    q2: r2 = w beats y = .6w + (1 - w) iff w > 1/1.4 = 0.714. Only w = 0.8 ranks both first.
    """
    dense = [hits(("x", 1.0), ("r1", 0.85), ("z", 0.0)), hits(("r2", 1.0), ("y", 0.6), ("z", 0.0))]
    lexical = [hits(("r1", 1.0), ("z", 0.5), ("x", 0.0)), hits(("y", 1.0), ("z", 0.5), ("r2", 0.0))]
    return dense, lexical, ["q1", "q2"], {"q1": {"r1": 1}, "q2": {"r2": 1}}


def test_choose_fusion_picks_the_weight_that_ranks_both_relevant_documents_first():
    dense, lexical, qids, qrels = _two_query_case()
    grid = [c for c in DEFAULT_GRID if c.normalization == "minmax" or c.method == "rrf"]
    best, scores = choose_fusion(dense, lexical, qids, qrels, grid)
    assert best == FusionConfig("convex", weight=0.8, normalization="minmax")
    assert scores["convex(w=0.8, minmax)"] == 1.0 and list(scores) == [c.label() for c in grid]
    assert max(v for label, v in scores.items() if label != "convex(w=0.8, minmax)") < 1.0


def test_choose_fusion_breaks_ties_towards_the_earlier_grid_point_and_checks_input():
    dense, lexical, qids, qrels = _two_query_case()
    tied = [FusionConfig("convex", weight=0.8, normalization="minmax", depth=50),
            FusionConfig("convex", weight=0.8, normalization="minmax")]
    assert choose_fusion(dense, lexical, qids, qrels, tied)[0] is tied[0]
    assert choose_fusion(dense, lexical, qids, qrels, tied[::-1])[0] is tied[1]
    with pytest.raises(InputError, match="names a setting twice"):
        choose_fusion(dense, lexical, qids, qrels, [tied[1], tied[1]])
    with pytest.raises(InputError, match="none of the query ids are judged"):
        choose_fusion(dense, lexical, qids, {"other": {"d": 1}})
    with pytest.raises(InputError, match="one ranking per query id"):
        choose_fusion(dense, lexical, ["q1"], qrels)


# ---------------------------------------------------------------------------------------------------------- BM25 on disk

DOCS = {f"d{i}": f"Topic{i % 7} passage number {i} is about subject{i % 5} and theme{i % 3}. It covers matter{i % 11}."
        for i in range(30)}
QUERIES = ["topic3 subject1", "matter7 theme2", "passage number 12", "the of and"]


def test_open_bm25_loads_a_match_and_rebuilds_a_mismatch(tmp_path, monkeypatch):
    corpus = Corpus.from_texts(DOCS)
    first = open_bm25(corpus, tmp_path / "bm25")
    built = []
    real_init = BM25Retriever.__init__
    monkeypatch.setattr(BM25Retriever, "__init__", lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    again = open_bm25(corpus, tmp_path / "bm25")
    assert built == [] and again.search(QUERIES) == first.search(QUERIES)
    changed = Corpus.from_texts({**DOCS, "d99": "a brand new passage about topic3"})
    fresh = open_bm25(changed, tmp_path / "bm25")
    assert built == [1] and BM25Retriever.load(tmp_path / "bm25", changed).search(QUERIES) == fresh.search(QUERIES)


def test_bm25_folder_beside_the_collection():
    assert bm25_folder(IndexConfig(collection="sci", path="/x/chroma")) == Path("/x/chroma/bm25/sci")
    assert bm25_folder(IndexConfig(collection="sci", host="db.local", port=9000)) == \
        Path(".qkrag/bm25/db.local-9000-sci")


# ---------------------------------------------------------------------------------------------------------- CLI

TRAIN_Q = {f"t{i}": f"subject{i % 5} theme{i % 3} question {i}" for i in range(40)}  # >= MIN_FUSION_QUERIES
TEST_Q = {f"q{i}": f"topic{i % 7} subject{i % 5}" for i in range(8)}


@pytest.fixture
def beir(tmp_path):
    folder = write_beir(tmp_path / "mini", DOCS, {**TRAIN_Q, **TEST_Q},
                        {q: [f"d{(i * 7) % 30}"] for i, q in enumerate(TEST_Q)}, "test")
    return write_qrels(folder, {q: [f"d{(i * 3) % 30}"] for i, q in enumerate(TRAIN_Q)}, "train")


@pytest.fixture
def fake_model(monkeypatch):
    encoder = FakeEncoder(dim=16)
    monkeypatch.setattr(cli, "_encoder", lambda *a, **k: encoder)
    return encoder


def run(capsys, *args) -> tuple[int, str, str]:
    code = 0
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_hybrid_chooses_fusion_on_train_queries_only(capsys, beir, fake_model, monkeypatch):
    seen = []
    real = hybrid.choose_fusion
    monkeypatch.setattr(hybrid, "choose_fusion", lambda d, lex, qids, *a, **k: seen.append(list(qids))
                        or real(d, lex, qids, *a, **k))
    code, out, err = run(capsys, "eval", beir, "--retriever", "hybrid", "--split", "test", "--json")
    assert code == 0, err
    result = json.loads(out)
    exact = json.loads(run(capsys, "eval", beir, "--retriever", "exact", "--json")[1])
    assert set(exact) - {"retriever"} <= set(result) and result["retriever"] == "hybrid"
    assert result["fusion_chosen_on"].startswith("train split (40 queries, nDCG@10 ")
    assert result["fusion"] in {c.label() for c in DEFAULT_GRID}
    assert seen == [sorted(TRAIN_Q)]  # the train queries were searched to choose, never the test ones


def test_cli_eval_hybrid_fixed_or_default_fusion(capsys, beir, fake_model):
    code, out, _ = run(capsys, "eval", beir, "--retriever", "hybrid", "--fusion", "rrf", "--json")
    assert code == 0 and (json.loads(out)["fusion"], json.loads(out)["fusion_chosen_on"]) == ("rrf(k=60)", "given")
    code, out, _ = run(capsys, "eval", beir, "--retriever", "hybrid", "--fusion-weight", "0.3", "--json")
    assert code == 0 and json.loads(out)["fusion"] == "convex(w=0.3, zscore)"
    code, out, _ = run(capsys, "eval", beir, "--retriever", "hybrid", "--split", "train", "--json")
    result = json.loads(out)
    assert code == 0 and result["fusion"] == "rrf(k=60)" and result["fusion_chosen_on"].startswith("default")
    code, _, err = run(capsys, "eval", beir, "--retriever", "exact", "--fusion", "rrf")
    assert code == 2 and "--retriever hybrid" in err


def test_cli_search_hybrid_needs_the_persisted_bm25(capsys, beir, fake_model, tmp_path):
    db = tmp_path / "chroma"
    assert run(capsys, "index", beir, "--path", db, "-c", "mini")[0] == 0
    code, _, err = run(capsys, "search", "topic3 subject1", "--path", db, "-c", "mini", "--hybrid")
    assert code == 2 and "has no BM25 index" in err and "qkrag index DATA --hybrid" in err and "Traceback" not in err
    code, out, _ = run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid", "--json")
    assert code == 0 and json.loads(out)["bm25"] == str(db / "bm25" / "mini")
    code, out, _ = run(capsys, "search", "topic3 subject1", "--path", db, "-c", "mini", "--hybrid", "-k", "3",
                       "--json")
    assert code == 0 and len(json.loads(out)[0]["hits"]) == 3
    code, out, _ = run(capsys, "search", "topic3 subject1", "--path", db, "-c", "mini", "--hybrid",
                       "--fusion-weight", "0.6", "--json")
    assert code == 0 and json.loads(out)[0]["hits"]


def test_cli_search_hybrid_refuses_a_bm25_of_other_documents(capsys, beir, fake_model, tmp_path):
    db = tmp_path / "chroma"
    assert run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid")[0] == 0
    # the collection changes (one document more) but its BM25 index is not rebuilt
    with (beir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "an extra passage about topic3"}) + "\n")
    assert run(capsys, "index", beir, "--path", db, "-c", "mini")[0] == 0
    code, _, err = run(capsys, "search", "topic3", "--path", db, "-c", "mini", "--hybrid")
    assert code == 2 and "other documents" in err and "--hybrid" in err


@pytest.mark.slow
def test_cli_eval_hybrid_on_the_demo_data_with_the_real_encoder(capsys):
    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    code, out, err = run(capsys, "eval", demo, "--retriever", "hybrid", "--split", "test", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["fusion_chosen_on"].startswith("train split") and 0.0 < result["ndcg@10"] <= 1.0
    exact = json.loads(run(capsys, "eval", demo, "--retriever", "exact", "--split", "test", "--json")[1])
    assert result["ndcg@10"] >= exact["ndcg@10"] - 0.05  # fusion should not fall far below its own dense arm


def test_collection_bm25_is_keyed_by_the_collection_and_streams_its_texts(capsys, beir, fake_model, tmp_path,
                                                                          monkeypatch):
    from qkrag.retrieval import hybrid
    from qkrag.retrieval.bm25 import saved_source
    from qkrag.retrieval.index import ChromaIndex

    db = tmp_path / "chroma"
    assert run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid")[0] == 0
    index = ChromaIndex.for_encoder(IndexConfig(collection="mini", path=db), fake_model)
    assert saved_source(db / "bm25" / "mini") == index.source_hash
    # current: served from disk (memory-mapped), neither the texts nor a rebuild are read
    with monkeypatch.context() as patch:
        patch.setattr(hybrid, "collection_corpus", lambda *a: pytest.fail("read the whole collection"))
        patch.setattr(hybrid, "build_bm25", lambda *a, **k: pytest.fail("rebuilt a current index"))
        lexical = hybrid.collection_bm25(index)
        hit = lexical.search(["topic3 subject1"], k=1)[0][0]
        assert hit.text == index.stored_texts([hit.id])[hit.id]  # texts looked up in the collection
    # the collection changes: `index --hybrid` rebuilds from the stored texts, and the new document is found
    with (beir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "zebra crossing"}) + "\n")
    code, _, err = run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid")
    assert code == 0, err
    index = ChromaIndex.for_encoder(IndexConfig(collection="mini", path=db), fake_model)
    assert saved_source(db / "bm25" / "mini") == index.source_hash
    assert hybrid.collection_bm25(index).search(["zebra"], k=1)[0][0].id == "extra"


# ---------------------------------------------------------------------------------------------------------- one rule


@pytest.fixture
def lexical_beir(tmp_path):
    """Train queries that only BM25 answers (each names its passage's number): a convex rule beats RRF on them."""
    train = {f"n{j}": f"passage number {j}" for j in range(30)}
    folder = write_beir(tmp_path / "lexical", DOCS, {**train, **TEST_Q},
                        {q: [f"d{(i * 7) % 30}"] for i, q in enumerate(TEST_Q)}, "test")
    return write_qrels(folder, {q: [f"d{j}"] for j, q in enumerate(train)}, "train")


def test_index_hybrid_records_the_rule_eval_chooses_and_search_ranks_like_eval(capsys, lexical_beir, fake_model,
                                                                               tmp_path):
    beir, db, run_file = lexical_beir, tmp_path / "chroma", tmp_path / "eval.run"
    code, out, err = run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid", "--json")
    assert code == 0, err
    recorded = json.loads(out)["fusion"]
    code, out, err = run(capsys, "eval", beir, "--retriever", "hybrid", "-k", "10", "--run-file", run_file, "--json")
    assert code == 0, err
    evaluated = json.loads(out)
    assert recorded == f"{evaluated['fusion']}, chosen on: {evaluated['fusion_chosen_on']}"
    assert evaluated["fusion"] != "rrf(k=60)"  # a convex rule was chosen: RRF everywhere would pass trivially
    eval_top: dict[str, list[str]] = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, *_ = line.split()
        eval_top.setdefault(qid, []).append(doc)
    for qid, text in TEST_Q.items():
        code, out, err = run(capsys, "search", text, "--path", db, "-c", "mini", "--hybrid", "-k", "10", "--json")
        assert code == 0 and f"fusion: {recorded}" in err
        assert [h["id"] for h in json.loads(out)[0]["hits"]] == eval_top[qid][:10], qid


def test_recorded_rule_is_dropped_when_the_collection_changes_and_said_when_given(capsys, beir, fake_model, tmp_path):
    db = tmp_path / "chroma"
    assert run(capsys, "index", beir, "--path", db, "-c", "mini", "--hybrid")[0] == 0
    code, _, err = run(capsys, "search", "topic3", "--path", db, "-c", "mini", "--hybrid", "--fusion", "rrf")
    assert code == 0 and "fusion: rrf(k=60), chosen on: given" in err
    with (beir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "an extra passage about topic3"}) + "\n")
    # the BM25 index is rebuilt, but no rule is chosen (no --hybrid): the old one no longer describes the collection
    assert run(capsys, "index", beir, "--path", db, "-c", "mini")[0] == 0
    from qkrag.retrieval.index import ChromaIndex

    index = ChromaIndex.for_encoder(IndexConfig(collection="mini", path=db), fake_model, create=False)
    hybrid.collection_bm25(index, build=True)
    code, _, err = run(capsys, "search", "topic3", "--path", db, "-c", "mini", "--hybrid")
    assert code == 0 and "fusion: rrf(k=60), chosen on: default: none recorded" in err


def test_index_hybrid_chooses_on_held_out_pairs_without_a_train_split(capsys, fake_model, tmp_path):
    folder = write_beir(tmp_path / "notrain", DOCS, TEST_Q, {q: [f"d{(i * 7) % 30}"] for i, q in enumerate(TEST_Q)},
                        "test")
    code, _, err = run(capsys, "generate", folder, "--generator", "ict", "--out", tmp_path / "pairs")
    assert code == 0, err
    code, out, err = run(capsys, "index", folder, "--path", tmp_path / "db", "--hybrid", "--pairs", tmp_path / "pairs",
                         "--json")
    assert code == 0, err  # 30 documents: a 10% held-out share has too few queries to choose on, and says so
    assert "queries are too few" in json.loads(out)["fusion"] and "held-out synthetic pairs" in json.loads(out)["fusion"]
    code, _, err = run(capsys, "index", folder, "--path", tmp_path / "db", "--pairs", tmp_path / "pairs")
    assert code == 2 and "--pairs" in err and "--hybrid" in err


def test_select_fusion_needs_enough_queries_and_never_sees_others():
    class Fixed:
        def __init__(self, rows):
            self.rows, self.asked = rows, []

        def search(self, queries, k=10):
            self.asked += queries
            return [self.rows[q] for q in queries]

    qids = [f"q{i}" for i in range(hybrid.MIN_FUSION_QUERIES)]
    # dense ranks the relevant "a" second, lexical first but with a small margin: convex with low w wins over RRF
    dense = Fixed({q: hits(("b", 0.9), ("a", 0.89), ("c", 0.1)) for q in qids})
    lexical = Fixed({q: hits(("a", 9.0), ("c", 8.9), ("b", 0.1)) for q in qids})
    qrels = {q: {"a": 1} for q in qids}
    choice = hybrid.select_fusion(dense, lexical, (qids, qids, qrels), "train split")
    assert choice.chosen_on == "train split" and choice.queries == len(qids) and choice.score == 1.0
    assert sorted(set(dense.asked)) == sorted(qids)
    few = hybrid.select_fusion(dense, lexical, (qids[:5], qids[:5], qrels), "train split")
    assert few.config == FusionConfig("rrf") and "5 train split queries are too few" in few.chosen_on
    assert hybrid.FusionChoice.from_json(choice.to_json()) == choice

"""The pairs folder as `datasets` and sentence-transformers see it: `load_from_disk(folder)` opens it, with the
negatives' texts, in the columns sentence-transformers trainers take."""

from __future__ import annotations

import datasets

from qkrag.pairs.generate import GenerateConfig, generate_pairs
from qkrag.pairs.store import load_pairs, training_view
from tests.fakes import FakeEncoder
from tests.pairs.test_generate import FAST, make_corpus


def test_load_from_disk_opens_a_pairs_folder_with_negative_texts(tmp_path):
    corpus = make_corpus()
    config = GenerateConfig(**FAST, generator="ict", false_negative_ratio=0.99)  # the fake encoder: keep negatives
    generate_pairs(corpus, FakeEncoder(64), None, config, tmp_path / "pairs")
    view = datasets.load_from_disk(str(tmp_path / "pairs"))
    pairs = load_pairs(tmp_path / "pairs")
    assert view.column_names == ["anchor", "positive", "negative_1", "negative_2"]  # FAST asks for 2 negatives
    assert len(view) == len(pairs) > 0
    texts = dict(zip(corpus.ids, corpus.contents))
    for row, pair in zip(view, pairs):
        assert row["anchor"] == pair["query"] and row["positive"] == pair["positive_text"]
        assert [row["negative_1"], row["negative_2"]] == [texts[i] for i in pair["negative_ids"][:2]]
    # a second run into the folder replaces the view, it does not pile shards up
    generate_pairs(corpus, FakeEncoder(64), None, config, tmp_path / "pairs")
    assert len(datasets.load_from_disk(str(tmp_path / "pairs"))) == len(pairs)


def test_training_view_keeps_as_many_negatives_as_every_row_has():
    rows = [{"query": "q1", "positive_text": "p1", "negative_ids": ["a", "b", "c"]},
            {"query": "q2", "positive_text": "p2", "negative_ids": ["b", "missing"]}]
    view = training_view(rows, {"a": "A", "b": "B", "c": "C"})
    assert view.column_names == ["anchor", "positive", "negative_1"]
    assert view["negative_1"] == ["A", "B"]
    assert training_view(rows[:1], {}).column_names == ["anchor", "positive"]


def test_sentence_transformers_trainer_columns():
    """What sentence-transformers' MultipleNegativesRankingLoss takes: string columns, no id or score columns."""
    view = training_view([{"query": "q", "positive_text": "p", "negative_ids": ["a"]}], {"a": "A"})
    assert all(f.dtype == "string" for f in view.features.values())
    assert not {"label", "score"} & set(view.column_names)

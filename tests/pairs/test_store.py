"""The pairs folder's one owner: what a finished generation looks like, what reading it refuses, and how `datasets`
and sentence-transformers see it (`load_from_disk(folder)`, with the negatives' texts)."""

import json

import datasets
import pytest

from qkrag.errors import IndexMismatchError, InputError
from qkrag.pairs.generate import GenerateConfig, generate_pairs
from qkrag.pairs.store import (PAIRS, SCHEMA, STATS, check_encoder, is_pairs_folder, load_pairs, read_stats,
                               recorded_corpus, summary_lines, training_view, write_pairs)
from tests.fakes import FakeEncoder, make_corpus
from tests.pairs.test_generate import FAST


def _row(i: int) -> dict:
    values = {"string": f"s{i}", "int64": i, "float32": 0.5, "bool": False}
    return {name: ([f"n{i}"] if isinstance(kind, list) else values[kind]) for name, kind in SCHEMA.items()}


def _stats(n: int, **extra) -> dict:
    return {"counts": {"pairs": n, "passages": n, "candidates": n}, "encoder": "enc-a", "corpus": "/data/corpus",
            "generator": "ict", "kept_fraction": 1.0, "config": {"roundtrip_k": 100},
            "pair_ranks": {"rank1": 0.5, "top10": 0.9, "median_rank": 1}, "form": {"mean_words": 5.0,
            "question_share": 0.0, "ngram_copy": 0.1}, **extra}


def test_a_written_folder_reads_back_with_the_schema(tmp_path):
    write_pairs(tmp_path / "p", [_row(0), _row(1)], _stats(2), progress=False)
    dataset = load_pairs(tmp_path / "p")
    assert len(dataset) == 2 and list(dataset.column_names) == list(SCHEMA)
    assert is_pairs_folder(tmp_path / "p") and read_stats(tmp_path / "p")["counts"]["pairs"] == 2


def test_a_run_that_kept_nothing_still_writes_a_readable_folder(tmp_path):
    write_pairs(tmp_path / "p", [], _stats(0, no_pairs="no pairs kept: every candidate was a copy"), progress=False)
    assert len(load_pairs(tmp_path / "p")) == 0
    assert ("why", "no pairs kept: every candidate was a copy") in summary_lines(read_stats(tmp_path / "p"), "p")


def test_rows_and_stats_that_disagree_are_refused(tmp_path):
    write_pairs(tmp_path / "p", [_row(0), _row(1)], _stats(2), progress=False)
    stats = json.loads((tmp_path / "p" / STATS).read_text())
    stats["counts"]["pairs"] = 5
    (tmp_path / "p" / STATS).write_text(json.dumps(stats))
    with pytest.raises(InputError, match="has 2 rows but stats.json says 5"):
        load_pairs(tmp_path / "p")


def test_unfinished_broken_and_missing_folders_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_stats(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / PAIRS).write_bytes(b"")
    with pytest.raises(InputError, match="is an incomplete pairs folder.*rerun `qkrag generate"):
        read_stats(tmp_path / "half")
    with pytest.raises(InputError, match="is an incomplete pairs folder"):
        load_pairs(tmp_path / "half")
    (tmp_path / "half" / STATS).write_text("{broken")
    with pytest.raises(InputError, match="is not a readable stats file"):
        read_stats(tmp_path / "half")


def test_the_recorded_corpus_and_encoder_are_checked(tmp_path):
    write_pairs(tmp_path / "p", [_row(0)], _stats(1), progress=False)
    assert recorded_corpus(tmp_path / "p") == "/data/corpus"
    assert str(recorded_corpus(tmp_path / "p", tmp_path / "other.jsonl")).endswith("other.jsonl")
    check_encoder(tmp_path / "p", "enc-a")
    with pytest.raises(IndexMismatchError, match="generated with encoder 'enc-a'"):
        check_encoder(tmp_path / "p", "enc-b")


def test_a_beir_folder_is_not_a_pairs_folder(tiny_beir):
    assert not is_pairs_folder(tiny_beir)


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

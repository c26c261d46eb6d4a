"""The pairs folder's one owner: what a finished generation looks like, and what reading it refuses."""

import json

import pytest

from qkrag.errors import IndexMismatchError, InputError
from qkrag.pairs.store import (PAIRS, SCHEMA, STATS, check_encoder, is_pairs_folder, load_pairs, read_stats,
                               recorded_corpus, summary_lines, write_pairs)


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
    with pytest.raises(InputError, match="holds no finished generation"):
        read_stats(tmp_path / "half")
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

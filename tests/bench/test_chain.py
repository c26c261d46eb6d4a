"""evaluate_folder: a retriever's figures on a BEIR folder, and what they mean next to a base."""

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

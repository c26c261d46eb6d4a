"""The main job's report: the table renders every row's figures, audit cells and notes from `Row`s alone."""

from __future__ import annotations

from qkrag.bench.report import Row, audit_cell, table
from qkrag.evaluate.metrics import EvalResult


def result(ndcg: float) -> EvalResult:
    per_query = {"ndcg@10": {"q1": ndcg, "q2": ndcg}, "recall@100": {"q1": 1.0, "q2": 1.0},
                 "mrr@10": {"q1": ndcg, "q2": ndcg}}
    return EvalResult(per_query, {m: (ndcg - 0.1, ndcg + 0.1) for m in per_query})


def test_table_renders_rows_audit_and_notes():
    trained = Row("qk_synthetic", result(0.6), train_seconds=3.25, latency_ms=1.5, ece=0.04, notes="trained",
                  comparison={"delta": 0.2, "p_value": 0.001},
                  extra={"n_seen": 3, "ndcg@10_seen": 0.7, "delta_ndcg@10_seen": 0.1, "p_ndcg@10_seen": 0.2,
                         "n_novel": 5, "ndcg@10_novel": None, "question_share@5": 0.25, "audit_base": "cosine"})
    base = Row("cosine", result(0.4), extra={"question_share@5": 0.5})
    md = table([base, trained], questions=True)
    lines = md.splitlines()
    assert "questions in top 5" in lines[0] and lines[0].count("|") == lines[1].count("|")
    assert lines[3].startswith("| qk_synthetic | 0.600 [0.500, 0.700] | 1.000 | 0.600 | +0.200 (0.001) | — | "
                               "0.700 (+0.100, p 0.2, n=3) | — (n=5) | 0.250 | 0.040 | 3.2 | 1.50 |")
    assert "- **qk_synthetic**: trained (audit base: cosine)" in md
    assert "questions in top 5" not in table([base], questions=False)


def test_audit_cell_is_a_dash_for_untrained_rows():
    assert audit_cell({}, "seen") == "—"


def test_llm_calls_per_query_get_a_column_when_a_row_reports_them():
    hyde = Row("hyde", result(0.5), latency_ms=1800.0, extra={"llm_calls_per_query": 1.0})
    plain = Row("cosine", result(0.4))
    lines = table([plain, hyde], questions=False).splitlines()
    assert lines[0].endswith("| ms/query | LLM calls/query |") and lines[0].count("|") == lines[1].count("|")
    assert lines[2].endswith("| 0 |") and lines[3].endswith("| 1800.00 | 1 |")
    assert "LLM calls/query" not in table([plain], questions=False)

"""qkrag.evaluate.report: the results table and the results plot."""

from __future__ import annotations

from qkrag.evaluate.report import plot_results, results_table

from tests.fakes import random_result


def test_results_table_and_plot(tmp_path) -> None:
    results = {"bm25": random_result(50, 0), "dense": random_result(50, 1, shift=0.3)}
    table = results_table(results)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| system | ndcg@10 [95% CI]") and len(lines) == 4
    lo, hi = results["bm25"].ci["ndcg@10"]
    assert f"{results['bm25'].primary:.3f} [{lo:.3f}, {hi:.3f}]" in lines[2]
    plot_results(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

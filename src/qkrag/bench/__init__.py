"""The main job and the evaluation chain: `job` runs every stage on one collection against the baselines users would
pick instead; `chain` scores one retriever on a folder, as `qkrag eval` and the web page do."""

from qkrag.bench.job import METHODS, Bench, BenchConfig, Row, run_bench

__all__ = ["METHODS", "Bench", "BenchConfig", "Row", "run_bench"]

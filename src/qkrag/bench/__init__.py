"""The main job and the evaluation chain: `job` runs every stage on one collection against the baselines users would
pick instead; `chain` is how a ranking is scored, compared with its base and audited, for the main job's rows,
`qkrag eval` (`evaluate_folder`) and the web page's collection view."""

from qkrag.bench.job import METHODS, Bench, BenchConfig, Row, run_bench

__all__ = ["METHODS", "Bench", "BenchConfig", "Row", "run_bench"]

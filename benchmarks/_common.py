"""Helpers shared by the benchmark scripts: machine info, and writing JSON + a markdown table side by side."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qkrag.atomic import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def load_result(name: str) -> dict | None:
    """results/<name>.json, or None when that benchmark has not been run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def bench_command(args: Sequence[str | Path], out: Path) -> list[str]:
    """`qkrag bench ARGS --out OUT --json` as `run_bench` runs it (and a report names it)."""
    return ["qkrag", "bench", *map(str, args), "--out", str(out), "--json"]


def run_bench(args: Sequence[str | Path], out: Path) -> tuple[dict, list[str]]:
    """`bench_command(args, out)` through the real CLI of this interpreter's environment: its bench.json and the
    command as run."""
    cmd = bench_command(args, out)
    subprocess.run([str(Path(sys.executable).with_name("qkrag")), *cmd[1:]], stdout=subprocess.DEVNULL, check=True,
                   env={**os.environ, "TQDM_MININTERVAL": "30"})
    return json.loads((out / "bench.json").read_text()), cmd


def paired_ndcg(a: dict[str, float], b: dict[str, float]) -> dict:
    """Two rows' per-query nDCG@10 (bench's per_query.json) on the same queries: the mean paired difference, its
    bootstrap CI and the sign-flip p-value."""
    import numpy as np
    from qkrag.evaluate.stats import bootstrap_ci, sign_flip_p_value

    diff = np.array([a[q] - b[q] for q in a])
    return {"delta": float(diff.mean()), "ci": list(bootstrap_ci(diff)), "p": sign_flip_p_value(diff)}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, result: dict, markdown_body: str) -> None:
    """Write results/<name>.json and results/<name>.md (with the command and the machine)."""
    result = {"command": command(), "machine": machine(), **result}
    write_json(RESULTS / f"{name}.json", result)
    header = f"# {name}\n\nCommand: `{result['command']}`  \nMachine: {result['machine']['cpus']} CPUs, " \
             f"torch {result['machine']['torch']}, {result['machine']['date']}\n\n"
    write_text(RESULTS / f"{name}.md", header + markdown_body.rstrip() + "\n")

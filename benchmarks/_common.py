"""Helpers shared by the benchmark scripts: machine info, and writing JSON + a markdown table side by side."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
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

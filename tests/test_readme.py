"""The README's Python quickstart must run as written (real model, real Chroma), and its two commands must be the
ones CI runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/demo.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert 'torch==2.13.0' in (ROOT / "scripts" / "setup.sh").read_text()


@pytest.mark.slow
def test_python_quickstart_runs(tmp_path, monkeypatch):
    block = re.search(r"## Quickstart: Python\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README lost its Python quickstart"
    monkeypatch.chdir(tmp_path)  # it writes .qkrag/ and runs/ relative to the working directory
    code = block.group(1).replace('"data/demo"', repr(str(ROOT / "data" / "demo")))
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "demo-proj" / "config.json").exists()

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


@pytest.mark.slow
@pytest.mark.llm
def test_cli_quickstart_runs_and_each_step_says_what_it_did(tmp_path):
    """Every line of the command-line quickstart, as written (the embedded LLM included), except the closing
    `qkrag bench` (tests/test_bench.py runs it with real parts); each prints something a newcomer can read."""
    import shutil
    import subprocess
    import sys

    block = re.search(r"## Quickstart: command line\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README lost its command-line quickstart"
    shutil.copytree(ROOT / "data" / "demo", tmp_path / "data" / "demo")
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    commands = [c for c in commands if c.startswith("qkrag ") and not c.startswith("qkrag bench")]
    assert len(commands) >= 10
    for command in commands:
        argv = [sys.executable, "-m", "qkrag.cli", "--quiet", *__import__("shlex").split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        assert done.stdout.strip(), f"{command} printed nothing"
        if command.startswith("qkrag train"):  # the reason a projection was kept or not, in words
            assert re.search(r"selected: (trained|identity|start kept|pca)", done.stdout), done.stdout

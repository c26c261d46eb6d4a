"""Every shell and Python block of README.md and docs/*.md runs as written, or says why not.

A block is run unless the line above its fence is `<!-- illustrative: REASON -->` (installs, servers, the minutes-long
main job). The blocks of one document run in order in one folder: a copy of the repository's `data/`, with the
venv's `qkrag` first on PATH, so later blocks use what earlier ones wrote (a trained projection, an index), as a
reader following the page would. Each document is one slow test; `run_document` is shared with tests/test_readme.py,
which also checks the numbers the README's quickstarts print.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash": "shell", "sh": "shell", "python": "python"}
ILLUSTRATIVE = re.compile(r"^<!--\s*illustrative:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = "@@qkrag-doc-command@@"  # printed before each shell command, to split a block's output by command


@dataclass
class Block:
    document: Path
    line: int
    language: str  # "shell" or "python"
    code: str
    illustrative: str | None  # the reason, when the block is marked illustrative

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


@dataclass
class Ran:
    block: Block
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    ended: float  # time.time() when the block ended

    def commands(self) -> list[tuple[str, str, float]]:
        """A shell block's output split by command: (command, its stdout, its seconds), in order (assignments
        included; the last command's seconds run to the end of the block)."""
        parts = [part.split("\n", 1) for part in self.stdout.split(MARKER + " ")[1:]]
        starts = [float(head.split(" ", 1)[0]) for head, *_ in parts] + [self.ended]
        return [(head.split(" ", 1)[1], rest[0] if rest else "", starts[i + 1] - starts[i])
                for i, (head, *rest) in enumerate(parts)]


def blocks(document: Path) -> list[Block]:
    """The shell and Python blocks of a markdown file, in order, each with its illustrative mark (if any)."""
    lines = document.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = ILLUSTRATIVE.match(above)
        if fence.group(1) in LANGUAGES:
            out.append(Block(document, i + 1, LANGUAGES[fence.group(1)], "\n".join(lines[i + 1:end]) + "\n",
                             mark.group(1) if mark else None))
        i = end + 1
    return out


def runnable(document: Path) -> list[Block]:
    return [b for b in blocks(document) if b.illustrative is None]


def environment() -> dict[str, str]:
    """The test's Python and its `qkrag` first on PATH; this checkout's sources first on the import path."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "qkrag").exists():
        pytest.skip(f"no qkrag command beside {sys.executable}: install the checkout (scripts/setup.sh)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "QKRAG_QUIET": "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return env


def run_document(document: Path, folder: Path, timeout: float = 1800) -> list[Ran]:
    """Run the document's runnable blocks in order in `folder` (a copy of `data/` is put there first), with an empty
    cache of their own (embeddings and LLM outputs are computed, as on a first run)."""
    if not (folder / "data").exists():
        shutil.copytree(ROOT / "data", folder / "data")
    env, out = {**environment(), "QKRAG_CACHE_DIR": str(folder / ".cache")}, []
    for block in runnable(document):
        if block.language == "shell":
            trap = f"trap 'printf \"\\n{MARKER} %s %s\\n\" \"$EPOCHREALTIME\" \"$BASH_COMMAND\"' DEBUG"
            script = f"set -euo pipefail\n{trap}\n{block.code}"
            argv = ["bash", "-c", script]
        else:
            argv = [sys.executable, "-c", block.code]
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        out.append(Ran(block, done.returncode, done.stdout, done.stderr, time.perf_counter() - t0, time.time()))
        assert done.returncode == 0, f"{block.where} failed:\n{block.code}\n--- stderr:\n{done.stderr[-3000:]}"
    return out


# ---------------------------------------------------------------------------------------------------------- fast


def test_blocks_are_found_and_marks_give_a_reason():
    readme = blocks(ROOT / "README.md")
    assert {b.language for b in readme} == {"shell", "python"} and runnable(ROOT / "README.md")
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if line.strip().startswith("<!-- illustrative"):
                assert ILLUSTRATIVE.match(line.strip()) and ILLUSTRATIVE.match(line.strip()).group(1), \
                    f"{document.name}:{number}: say why, e.g. <!-- illustrative: starts a server -->"
                following = next((x for x in lines[number:] if x.strip()), "")
                assert FENCE.match(following) and FENCE.match(following).group(1) in LANGUAGES, \
                    f"{document.name}:{number}: an illustrative mark must sit right above a bash/sh/python block"


def test_every_block_parses():
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.language == "python":
                compile(block.code, block.where, "exec")
            else:
                done = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
                assert done.returncode == 0, f"{block.where}: {done.stderr}"


def outputs(block: Block) -> list[str]:
    """The folders a block writes: `--out X`, `.save("X")`, and Chroma paths it names."""
    found = re.findall(r"--out[ =](\S+)", block.code) + re.findall(r"""\.save\(["']([^"']+)["']\)""", block.code)
    return found + re.findall(r"""path=["']([^"']+)["']""", block.code)


def test_no_block_overwrites_another_blocks_output():
    seen: dict[str, str] = {}
    for document in DOCUMENTS:
        for block in runnable(document):
            for folder in outputs(block):
                assert folder not in seen, f"{block.where} writes {folder}, as {seen[folder]} does: pick another name"
                seen[folder] = block.where


def test_no_block_installs_qkrag_from_a_registry_and_documented_extras_exist():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        code = " ".join(b.code for b in blocks(document)) + " ".join(re.findall(r"`([^`]+)`", text))
        assert not re.search(r"pip install [\"']?qkrag", code), f"{document.name}: qkrag is not on PyPI"
        for group in re.findall(r"""pip install -e ["']?\.\[([\w,-]+)\]""", text):
            assert set(group.split(",")) <= extras, f"{document.name}: .[{group}] is not an extra of pyproject.toml"


# ---------------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if d.name != "README.md" and runnable(d)],
                         ids=lambda d: d.name)
def test_document_runs_as_written(document, tmp_path):
    for ran in run_document(document, tmp_path):
        assert ran.stdout.strip() or ran.block.language == "python", f"{ran.block.where} printed nothing"

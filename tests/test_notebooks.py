"""Every notebook under notebooks/ runs top to bottom, once, without an error.

Notebooks are parametrised from the folder, so a new one is tested without touching this file. The kernel is this
interpreter (not whatever `python` a global kernelspec names), its cwd is notebooks/ as in Jupyter, and src/ is put
on PYTHONPATH so `import qkrag` works before the package is pip-installed. Figures go to QKRAG_FIGURE_DIR, a temp
folder, so a test run never rewrites the committed ones."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def notebook_param(path: Path):
    """One notebook as a test parameter: a pytest-xdist group of its own (notebooks share nothing, so two workers may
    run two at once), and the `llm` mark when it starts the embedded LLM."""
    marks = [pytest.mark.xdist_group(f"notebook-{path.stem}")]
    if "qkrag.llm.local" in path.read_text(encoding="utf-8"):
        marks.append(pytest.mark.llm)
    return pytest.param(path, marks=marks, id=path.name)


NOTEBOOKS = [notebook_param(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "qkrag-test"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "qkrag-test", "language": "python"}))
    km = KernelManager(kernel_name="qkrag-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("QKRAG_FIGURE_DIR", str(tmp_path / "figures"))

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the failing cell and traceback, on the first error

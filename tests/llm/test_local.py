"""qkrag.llm.local: shipped-model assembly, server lifecycle (with stand-in servers), and one real end-to-end run."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from qkrag.errors import InputError, LLMError
from qkrag.llm import local as localllm
from qkrag.llm import prompts
from qkrag.llm.client import LLM
from qkrag.llm.local import LocalLLMServer, ShippedModel
from tests.fakes import StandInRuntime


def _refused(base_url: str) -> bool:
    """Whether nothing listens at `base_url` any more."""
    try:
        urllib.request.urlopen(base_url + "/models", timeout=5).close()
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
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
        sha256=hashlib.sha256(whole).hexdigest(), size=len(whole),
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


def test_missing_runtime_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # what find_spec reports for an absent package
    with pytest.raises(LLMError, match=r"xllamacpp.*Fix: pip install 'qkrag\[llm\]' \(a prebuilt wheel"):
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
# Server lifecycle, with a stand-in runtime (the real one is in the end-to-end tests below)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """LocalLLMServer with the stand-in runtime and no model file; returns the list of runtimes it opened."""
    opened = []

    def open_runtime(self, model_path):
        opened.append(model_path)
        return StandInRuntime(model_path)

    monkeypatch.setattr(localllm, "check_runtime", lambda: None)
    monkeypatch.setattr(localllm, "model_file", lambda name, cache_dir=None: tmp_path / f"{name}.gguf")
    monkeypatch.setattr(LocalLLMServer, "open_runtime", open_runtime)
    return opened


def test_server_starts_answers_and_stops(stand_in, tmp_path):
    with LocalLLMServer() as server:
        url = server.base_url
        assert server.running and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        llm = LLM(server.config(), cache=False)
        assert llm.complete("hi").text == "stand-in says hi"
        assert server.config().concurrency == 1 and server.config().cache_scope == ""
        llm.close()
    assert not server.running and _refused(url)
    assert stand_in == [tmp_path / f"{localllm.DEFAULT_MODEL}.gguf"]


def test_server_stops_on_exception(stand_in):
    with pytest.raises(RuntimeError, match="boom"), LocalLLMServer() as server:
        url = server.base_url
        raise RuntimeError("boom")
    assert _refused(url)


def test_default_llm_close_stops_server(stand_in, tmp_path):
    llm = localllm.default_llm(cache=tmp_path / "llm.sqlite", max_tokens=32)
    assert llm.config.max_tokens == 32 and llm.complete("x").text == "stand-in says hi"
    url = llm.config.base_url
    llm.close()
    assert _refused(url)


def test_a_model_the_runtime_cannot_load_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(localllm, "model_file", lambda name, cache_dir=None: tmp_path / "broken.gguf")

    def refuse(self, model_path):
        raise RuntimeError("Failed to init server, please check the input params.")

    monkeypatch.setattr(LocalLLMServer, "open_runtime", refuse)
    monkeypatch.setattr(localllm, "check_runtime", lambda: None)
    server = LocalLLMServer()
    with pytest.raises(LLMError, match=r"(?s)broken.gguf.*could not load it: Failed to init.*Fix: check free memory"):
        server.start()
    assert not server.running


def test_slots_set_the_concurrency(stand_in):
    with LocalLLMServer(slots=3) as server:
        assert server.config().concurrency == 3
    with pytest.raises(InputError, match="slots"):
        LocalLLMServer(slots=0)


def test_open_llm_picks_a_shipped_model_by_name(stand_in, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with localllm.open_llm(model="smollm2-135m-instruct-q4_1") as llm:
        assert llm.config.model == "smollm2-135m-instruct-q4_1"
    with pytest.raises(LLMError, match=r"no such shipped model.*qwen2.5-coder-1.5b"):
        localllm.open_llm(model="gpt-5")


# ---------------------------------------------------------------------------------------------------------------------
# End to end: the real runtime (xllamacpp) and the shipped model
# ---------------------------------------------------------------------------------------------------------------------

needs_runtime = pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None,
                                   reason="xllamacpp is not installed: pip install 'qkrag[llm]'")


@pytest.mark.slow
@pytest.mark.llm
@needs_runtime
def test_shipped_default_model_is_what_it_claims(llm_model_cache):
    meta = localllm.read_gguf_metadata(localllm.model_file(cache_dir=llm_model_cache))
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.basename"] == "Qwen2.5-Coder" and meta["general.size_label"] == "0.5B"
    assert meta["general.file_type"] == 15  # Q4_K_M
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


@pytest.mark.slow
@pytest.mark.llm
@needs_runtime
def test_real_local_server_end_to_end(tmp_path, llm_model_cache):
    abstract = (
        "Vitamin D supplementation and fracture risk. In a randomized trial of 2,686 adults aged 65 to 85, "
        "100,000 IU of vitamin D3 every four months for five years reduced the rate of first fracture by 22% "
        "compared with placebo, with no effect on mortality."
    )
    prompt = prompts.render("query_zero_shot", text=abstract, n=3)
    server = LocalLLMServer(cache_dir=llm_model_cache)
    with localllm.default_llm(cache=tmp_path / "llm.sqlite", server=server, max_tokens=96) as llm:
        url = llm.config.base_url
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
    assert _refused(url)


@pytest.mark.slow
@pytest.mark.llm
@needs_runtime
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL semantics")
def test_no_server_outlives_a_killed_qkrag(llm_model_cache):
    """SIGKILL skips every finaliser; the server lives in the process, so it must go with it, port and all."""
    parent = textwrap.dedent(
        """
        import time
        from qkrag.llm.local import LocalLLMServer
        server = LocalLLMServer().start()
        print(server.base_url, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "QKRAG_CACHE_DIR": str(llm_model_cache)})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not _refused(url)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _refused(url), "the server outlived qkrag"
    finally:
        proc.kill()


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


def test_timeouts_are_settable_and_default_from_the_environment(monkeypatch, stand_in):
    monkeypatch.delenv("QKRAG_TIMEOUT", raising=False)
    monkeypatch.setenv("QKRAG_LLM_MODEL", "m")
    server = LocalLLMServer().start()
    assert server.config().timeout == 120.0  # the embedded CPU model is slow; a remote server gets 60 s
    assert localllm.open_llm("http://127.0.0.1:9/v1").config.timeout == 60.0
    assert localllm.open_llm("http://127.0.0.1:9/v1", timeout=3).config.timeout == 3
    monkeypatch.setenv("QKRAG_TIMEOUT", "7")
    assert server.config().timeout == 7.0 and localllm.open_llm("http://127.0.0.1:9/v1").config.timeout == 7.0
    seen = {}
    monkeypatch.setattr(localllm, "default_llm", lambda **k: seen.update(k))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    localllm.open_llm(timeout=4)
    assert seen == {"model": localllm.DEFAULT_MODEL, "timeout": 4}
    server.stop()


def test_the_embedded_server_config_keys_the_cache_on_the_model_not_its_port(stand_in):
    with LocalLLMServer() as server:
        assert server.config().cache_scope == ""

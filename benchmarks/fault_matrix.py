"""The fault matrix: faults and bad input thrown at the real `qkrag` CLI, each run in a fresh process, on loopback only.

    python benchmarks/fault_matrix.py            # writes results/fault_matrix.{json,md}

Every row is one fault: the command, its exit code, the first line it printed on stderr, and a verdict:
- clear error: exit code 2 and a one-line `error: ...` naming the problem and the fix, within the time limit;
- correct resume: the command (or its re-run) completed and the result checks out (counts, ids, searchable);
- traceback: a Python traceback reached the user;
- hang: it ran past its time limit (the harness kills it);
- silent loss: it exited 0 but the result is wrong (mixed corpora, stale vectors, an output it should not have written).
A fake API key is planted in every command's environment; afterwards every output, cache, index and log file under the
work folder is grepped for it (`leaks` must be 0). Fake servers (embeddings, a silent socket) run in this process on
127.0.0.1; nothing leaves the machine. Embeddings come from a loopback server of hashed word vectors, so the matrix
needs no model and runs in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"  # this tree's sources, not an installed copy; --src runs another tree's (a before/after check)
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, save  # noqa: E402

PLANTED = f"sk-qkrag-PLANTED-{secrets.token_hex(8)}"
WORDS = "apple river stone cloud engine violin forest copper lantern harbor meadow falcon quartz orbit".split()


# ------------------------------------------------------------------------------------------------ loopback servers


class FakeServer:
    """An OpenAI-compatible JSON server on a free loopback port: every POST is counted and answered by `respond`
    (body, request headers) -> (status, payload, extra headers)."""

    def __init__(self):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                outer.hits += 1
                code, payload, headers = outer.respond(body, self.headers)
                raw = json.dumps(payload).encode()
                self.send_response(code)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(raw)),
                                   **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed on purpose (the SIGKILL rows)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, body: dict, headers) -> tuple[int, dict, dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Embeddings(FakeServer):
    """An OpenAI-compatible /v1/embeddings server of hashed bag-of-words vectors (32-d). `mode`: "ok", "echo401"
    (refuses, echoing the request headers and so the key), or "slow" (sleeps `delay` s per request). `offset` shifts
    every vector, so two servers with one model name give different vectors."""

    def __init__(self, mode: str = "ok", offset: float = 0.0, delay: float = 0.0):
        self.mode, self.offset, self.delay = mode, offset, delay
        super().__init__()

    def respond(self, body: dict, headers) -> tuple[int, dict, dict[str, str]]:
        if self.mode == "echo401":
            echoed = "\n".join(f"{k.lower()}: {v}" for k, v in headers.items())
            return 401, {"error": {"message": f"bad key; you sent:\n{echoed}", "type": "auth"}}, {}
        time.sleep(self.delay)
        data = [{"object": "embedding", "index": i, "embedding": self.vector(t).tolist()}
                for i, t in enumerate(body.get("input", []))]  # NaN goes out as JSON's NaN, as it would
        return 200, {"object": "list", "data": data, "model": body.get("model", "m"),
                     "usage": {"prompt_tokens": 1, "total_tokens": 1}}, {}

    def vector(self, text: str) -> np.ndarray:
        if self.mode == "zero":
            return np.zeros(32)
        if self.mode == "nan":
            return np.full(32, np.nan)
        if self.mode == "ragged":
            return np.ones(31 + len(text) % 2)
        if self.mode == "huge":
            return np.full(32, 1e39)  # beyond float32: infinite once stored
        out = np.full(32, self.offset, dtype=np.float64)
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            out += np.random.default_rng(seed).normal(size=32)
        return out


class Chat(FakeServer):
    """An OpenAI-compatible /v1/chat/completions server. `mode`: "429" (always rate-limited, `Retry-After: 3600`),
    "echo" (answers with the request's Authorization header in its text, key included), "refuse" (a refusal)."""

    def __init__(self, mode: str):
        self.mode = mode
        super().__init__()

    def respond(self, body: dict, headers) -> tuple[int, dict, dict[str, str]]:
        if self.mode == "429":
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "3600"}
        text = (f"A plain rewrite. Authorization: {headers.get('Authorization')}" if self.mode == "echo"
                else "I'm sorry, but I can't help with that request.")
        return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}, {}


class Silent:
    """A port that accepts connections and never answers: a hung server."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        for conn in self.held:
            conn.close()
        self.listener.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ running the CLI


@dataclass
class Run:
    argv: list[str]
    code: int | None  # None: killed at the time limit
    out: str
    err: str
    seconds: float


@dataclass
class Matrix:
    work: Path
    limit: float
    rows: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QKRAG_"))}
        env.update(OPENAI_API_KEY=PLANTED, QKRAG_CACHE_DIR=str(self.work / "cache"), HF_HOME=str(self.work / "hf"),
                   HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONPATH=str(SRC))
        env.update(extra)
        return env

    def start(self, argv: list[str], **env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "qkrag.cli", *argv], cwd=self.work, env=self.env(**env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, proc: subprocess.Popen, argv: list[str], started: float, limit: float | None = None) -> Run:
        try:
            out, err = proc.communicate(timeout=limit or self.limit)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = None
        self.outputs += [out, err]
        return Run(argv, code, out, err, time.monotonic() - started)

    def run(self, argv: list[str], limit: float | None = None, **env: str) -> Run:
        started = time.monotonic()
        return self.finish(self.start(argv, **env), argv, started, limit)

    def record(self, fault: str, run: Run, expect: str, check: Callable[[], bool] | None = None) -> None:
        """`expect`: "error" (a clear error is right) or "success" (`check` says whether the result is right)."""
        # The error line when there is one (warnings logged before it, e.g. LLM retries, are not the message); for a
        # command that succeeded, its first line of output (stderr holds progress bars).
        errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
        lines = [line for line in run.out.splitlines() + run.err.splitlines() if line.strip()]
        first = errors[0] if errors else lines[0].strip() if lines else ""
        if run.code is None:
            verdict = "hang"
        elif "Traceback (most recent call last)" in run.err:
            verdict = "traceback"
        elif expect == "error":
            clear = run.code == 2 and first.startswith("error: ") and "Fix:" in first
            verdict = "clear error" if clear else "silent loss" if run.code == 0 else "unclear error"
        elif run.code == 0:
            verdict = "correct resume" if check is None or check() else "silent loss"
        else:
            verdict = "clear error" if first.startswith("error: ") else "unclear error"
        def tidy(text: str) -> str:  # the temporary work folder's path says nothing; a leaked key is marked, not kept
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a non-UTF-8 argument stays readable
            return text.replace(str(self.work), "WORK").replace(PLANTED, "<LEAKED PLANTED KEY>")

        self.rows.append({"fault": fault, "command": tidy("qkrag " + " ".join(run.argv)), "exit code": run.code,
                          "seconds": round(run.seconds, 1), "first line of the message": tidy(first)[:200],
                          "verdict": verdict, "expected": "clear error" if expect == "error" else "correct resume"})
        print(f"{verdict:>15}  {fault}  ({run.seconds:.1f} s)", flush=True)


# ------------------------------------------------------------------------------------------------ inputs


def corpus(path: Path, prefix: str, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"_id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS, 4)) + f" w{i}"}) + "\n")
    return path


INSPECT = """
import json, sys
import chromadb
client = chromadb.PersistentClient(path=sys.argv[1], settings=chromadb.Settings(anonymized_telemetry=False))
col = client.get_collection(sys.argv[2], embedding_function=None)
got = col.get(ids=[sys.argv[3]] if len(sys.argv) > 3 else None, include=["embeddings"] if len(sys.argv) > 3 else [])
print(json.dumps({"ids": got["ids"], "complete": bool((col.metadata or {}).get("qkrag:complete")),
                  "count": col.count(), "vector": [round(float(x), 4) for x in got["embeddings"][0]]
                  if len(sys.argv) > 3 else None}))
"""


def inspect(work: Path, path: str, name: str, doc_id: str | None = None) -> dict:
    """A collection's ids, complete flag, count (and one stored vector), read in a fresh process without the key.
    Not in this process: reading makes Chroma flush its log into HNSW files, with uninitialised memory in them, and
    this process holds the planted key (its fake servers received it), so a read here could plant it on disk."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    out = subprocess.run([sys.executable, "-c", INSPECT, str(work / path), name, *([doc_id] if doc_id else [])],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out)


def fresh_ids(work: Path, path: str, name: str) -> tuple[set[str], bool, int]:
    got = inspect(work, path, name)
    return set(got["ids"]), got["complete"], got["count"]


def stored_vector(work: Path, path: str, name: str, doc_id: str) -> list[float]:
    return inspect(work, path, name, doc_id)["vector"]


def ids_of(path: Path) -> set[str]:
    return {json.loads(line)["_id"] for line in path.read_text().splitlines() if line.strip()}


# ------------------------------------------------------------------------------------------------ the faults


def secrets_and_servers(m: Matrix, docs: Path, emb: Embeddings) -> None:
    echo = Embeddings("echo401")
    try:
        run = m.run(["index", str(docs), "-c", "echo-docs", "--path", "db", "--model", "openai:m",
                     "--embed-base-url", echo.url])
        m.record("embeddings server answers 401 echoing the request headers (key included)", run, "error")
    finally:
        echo.close()
    silent = Silent()
    try:
        run = m.run(["search", "apple", "-c", "docs", "--host", "127.0.0.1", "--port", str(silent.port)],
                    QKRAG_TIMEOUT="3")
        m.record("Chroma address accepts connections and never answers (QKRAG_TIMEOUT=3)", run, "error")
    finally:
        silent.close()
    run = m.run(["search", "apple", "-c", "docs", "--host", "127.0.0.1", "--port", str(closed_port())])
    m.record("Chroma server unreachable (port closed)", run, "error")
    other = Embeddings(offset=5.0)
    try:
        first = m.run(["index", str(docs), "-c", "server-a", "--path", "db", "--model", "openai:same",
                       "--embed-base-url", emb.url, "--json"])
        run = m.run(["index", str(docs), "-c", "server-b", "--path", "db", "--model", "openai:same",
                     "--embed-base-url", other.url, "--json"])
        m.record("two embeddings servers, one model name: the second's vectors must not come from the cache",
                 run, "success", lambda: first.code == 0 and stored_vector(m.work, "db", "server-a", "d0")
                 != stored_vector(m.work, "db", "server-b", "d0"))
    finally:
        other.close()


def llm_faults(m: Matrix, docs: Path, emb: Embeddings) -> None:
    out = m.work / "rewritten.jsonl"
    down = f"http://127.0.0.1:{closed_port()}/v1"
    run = m.run(["rewrite", str(docs), "--out", str(out), "--llm-base-url", down], QKRAG_LLM_MODEL="m")
    m.record("LLM down: rewrite", run, "error")
    if out.exists():  # it wrote the originals as "rewritten": the silent loss of issue 12
        m.rows[-1]["verdict"] = "silent loss"
    silent = Silent()
    try:
        run = m.run(["rewrite", str(docs), "--out", str(out), "--llm-base-url", f"http://127.0.0.1:{silent.port}/v1"],
                    QKRAG_LLM_MODEL="m", QKRAG_TIMEOUT="2")
        m.record("LLM accepts connections and never answers: rewrite (QKRAG_TIMEOUT=2)", run, "error")
    finally:
        silent.close()
    run = m.run(["index", str(docs), "-c", "rw-docs", "--path", "db", "--model", "openai:m", "--embed-base-url", emb.url,
                 "--rewrite", "--llm-base-url", down], QKRAG_LLM_MODEL="m")
    m.record("LLM down: index --rewrite", run, "error")


def input_faults(m: Matrix) -> None:
    latin1 = m.work / "latin1.jsonl"
    latin1.write_bytes(b'{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": "caf\xe9 au lait"}\n')
    m.record("corpus file is not UTF-8 (latin-1)", m.run(["index", str(latin1), "--path", "db"]), "error")
    parquet = m.work / "docs.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "text": ["first doc", "second doc"]}), parquet)
    parquet.write_bytes(parquet.read_bytes()[:40])
    m.record("corrupt (truncated) parquet corpus", m.run(["index", str(parquet), "--path", "db"]), "error")
    bad = m.work / "bad.jsonl"
    bad.write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": \n')
    m.record("malformed JSONL line", m.run(["index", str(bad), "--path", "db"]), "error")


def cache_faults(m: Matrix, docs: Path, emb: Embeddings) -> None:
    model = ["--model", "openai:m", "--embed-base-url", emb.url, "--json"]
    blocker = m.work / "cache-is-a-file"
    blocker.write_text("a file where the cache folder should be")
    run = m.run(["index", str(docs), "-c", "cache-file", "--path", "db", *model], QKRAG_CACHE_DIR=str(blocker))
    m.record("cache folder is a file (cannot be created)", run, "success",
             lambda: fresh_ids(m.work, "db", "cache-file")[2] == 20)
    damaged = m.work / "cache-damaged"  # its own cache folder: the rows after this one must not inherit the damage
    damaged.mkdir()
    (damaged / "embeddings.sqlite").write_bytes(b"not a database " * 200)
    run = m.run(["index", str(docs), "-c", "cache-corrupt", "--path", "db", *model], QKRAG_CACHE_DIR=str(damaged))
    m.record("embedding cache file is corrupt (not a database)", run, "success",
             lambda: fresh_ids(m.work, "db", "cache-corrupt")[2] == 20)



def kill_midway(m: Matrix, emb: Embeddings, argv: list[str], delay: float, requests: int) -> None:
    """Start `argv` with the embeddings server slowed to `delay` s a request, SIGKILL it once `requests` more
    requests arrived (or it ended), then restore the server's speed."""
    emb.delay, hits = delay, emb.hits
    proc = m.start(argv)
    while emb.hits < hits + requests and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    emb.delay = 0.0


def index_faults(m: Matrix, emb: Embeddings) -> None:
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    a, b = corpus(m.work / "a.jsonl", "a", 2000, 1), corpus(m.work / "b.jsonl", "b", 2000, 2)
    emb.delay = 1.0  # 8 requests of 256 texts: the first build takes ~8 s, so the second starts in the middle of it
    started = time.monotonic()
    argv_a = ["index", str(a), "-c", "shared", "--path", "db2", *model]
    argv_b = ["index", str(b), "-c", "shared", "--path", "db2", "--replace", *model]  # another corpus: on purpose
    hits = emb.hits
    first = m.start(argv_a)
    while emb.hits < hits + 1 and first.poll() is None:  # the first has loaded, holds the lock and is embedding
        time.sleep(0.05)
    second = m.start(argv_b)
    run_a, run_b = m.finish(first, argv_a, started), m.finish(second, argv_b, started)
    emb.delay = 0.0

    def one_corpus() -> bool:
        ids, complete, count = fresh_ids(m.work, "db2", "shared")
        return complete and count == len(ids) and ids in (ids_of(a), ids_of(b)) and run_a.code in (0, 2)

    m.record("two `qkrag index` runs into one collection at once (second shown)", run_b, "success", one_corpus)
    big = corpus(m.work / "big.jsonl", "d", 3000)
    argv = ["index", str(big), "-c", "big", "--path", "db3", *model]
    kill_midway(m, emb, argv, delay=0.2, requests=5)
    run = m.run(argv)
    m.record("index SIGKILLed midway, then re-run", run, "success",
             lambda: fresh_ids(m.work, "db3", "big")[1:] == (True, 3000))
    for graph in (m.work / "db3").glob("*/data_level0.bin"):  # what two writers on one folder leave behind
        os.truncate(graph, graph.stat().st_size // 3)
        (graph.parent / "header.bin").write_bytes(os.urandom(100))
    run = m.run(argv + ["--json"])
    m.record("Chroma HNSW files corrupt (truncated): re-run index", run, "success",
             lambda: "reading it failed" in run.out and fresh_ids(m.work, "db3", "big")[1:] == (True, 3000))
    search = m.run(["search", "apple river", "-c", "big", "--path", "db3", *model])
    m.record("search after the rebuild", search, "success", lambda: "d" in search.out)


def pipeline_faults(m: Matrix, docs: Path, emb: Embeddings) -> None:
    """The faults of generate, train, bench and eval: wrong folders, wrong encoders, too little data, bad flags."""
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    beir = m.work / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(docs.read_text())
    ids = sorted(ids_of(docs))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"w{i} apple"}) + "\n"
                                                for i in range(10)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{ids[i]}\t1\n" for i in range(10)))
    down = f"http://127.0.0.1:{closed_port()}/v1"
    m.record("LLM down: generate", m.run(["generate", str(docs), "--out", "pairs-down", "--llm-base-url", down,
                                          *model], QKRAG_LLM_MODEL="m"), "error")
    proj = m.work / "proj"
    proj.mkdir()
    (proj / "model.safetensors").write_bytes(b"weights")
    m.record("generate --out into a folder holding a projection",
             m.run(["generate", str(docs), "--generator", "ict", "--out", str(proj), *model]), "error")
    m.record("train on a folder that does not exist", m.run(["train", "no-such-pairs", "--out", "p1", *model]), "error")
    run = m.run(["generate", str(beir), "--generator", "ict", "--out", "pairs-ict", *model])
    m.record("generate (ICT) with an encoder: its pairs folder is written", run, "success",
             lambda: (m.work / "pairs-ict" / "stats.json").exists())
    other = ["--model", "openai:other", "--embed-base-url", emb.url]
    m.record("train with another encoder than the generation's",
             m.run(["train", "pairs-ict", "--out", "p2", *other]), "error")
    (m.work / "pairs-broken").mkdir()
    (m.work / "pairs-broken" / "stats.json").write_text("{broken")
    m.record("train on a pairs folder with a broken stats.json",
             m.run(["train", "pairs-broken", "--out", "p3", *model]), "error")
    no_queries = m.work / "beir-no-queries"
    (no_queries / "qrels").mkdir(parents=True)
    (no_queries / "corpus.jsonl").write_text(docs.read_text())
    (no_queries / "qrels" / "test.tsv").write_text((beir / "qrels" / "test.tsv").read_text())
    m.record("eval a BEIR folder without queries.jsonl", m.run(["eval", str(no_queries), *model]), "error")
    m.record("eval with an unknown --baseline", m.run(["eval", str(beir), "--baseline", "colbert", *model]), "error")
    m.record("a query argument that is not UTF-8",
             m.run(["search", b"caf\xe9".decode("utf-8", "surrogateescape"), "-c", "docs", "--path", "db", *model]),
             "error")
    m.record("bench with a sample too small to hold out validation pairs",
             m.run(["bench", str(beir), "--sample", "5", "--out", "bench-small", *model]), "error")
    m.record("index another corpus into a collection that holds one",
             m.run(["index", str(m.work / "a.jsonl"), "-c", "big", "--path", "db3", *model]), "error")


# ------------------------------------------------------------------------------------------------ second round


def refused_cleanly(m: Matrix, fault: str, argv: list[str], db: str) -> None:
    """A bad input: a clear error, and no Chroma folder made for it (a half-made folder is a silent loss)."""
    m.record(fault, m.run([*argv, "--path", db]), "error")
    if (m.work / db).exists():
        m.rows[-1]["verdict"] = "silent loss"


def bad_rows(m: Matrix, emb: Embeddings) -> None:
    """Rows that are not (id: text, text: text): refused naming the row, coerced or skipped only when asked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    files = {"extra.csv": "_id,text\nd1,fine\nd2,hello, world\n", "quote.csv": '_id,text\nd1,"hello\nd2,world\nd3,x\n',
             "surrogate.jsonl": '{"_id": "a", "text": "x\\ud800y"}\n', "emptyid.jsonl": '{"_id": "", "text": "x"}\n'}
    for name, text in files.items():
        (m.work / name).write_text(text)
    for name, column, values in (("bytes.parquet", "text", [b"bytes one", b"two"]), ("int.parquet", "text", [1, 2]),
                                 ("listid.parquet", "_id", [["a"], ["b"]])):
        pq.write_table(pa.table({"_id": ["a", "b"], "text": ["x", "y"], column: values}), m.work / name)
    faults = [("CSV row with more fields than the header", "extra.csv"),
              ("CSV quote never closed (would swallow later rows)", "quote.csv"),
              ("JSONL text with a lone surrogate escape", "surrogate.jsonl"), ("JSONL row with an empty id", "emptyid.jsonl"),
              ("parquet text column of bytes", "bytes.parquet"), ("parquet text column of ints", "int.parquet"),
              ("parquet id column of lists", "listid.parquet"), ("missing .jsonl corpus", "nosuch.jsonl"),
              ("missing .csv corpus", "nosuch.csv"), ("missing .parquet corpus (never a hub name)", "nosuch.parquet"),
              ("missing folder ./corpus-dir (never a hub name)", "./corpus-dir")]
    for i, (fault, name) in enumerate(faults):
        refused_cleanly(m, fault, ["index", name, "-c", "bad-rows", *model], f"db-bad{i}")
    big = m.work / "long.csv"
    big.write_text("_id,text\nd1," + "apple " * 30_000 + "\nd2,river\n")
    run = m.run(["index", str(big), "-c", "long-field", "--path", "db-long", *model, "--json"])
    m.record("CSV field over 131,072 characters: indexed whole", run, "success",
             lambda: fresh_ids(m.work, "db-long", "long-field")[1:] == (True, 2))
    run = m.run(["index", "bytes.parquet", "-c", "coerced", "--path", "db-coerce", "--bad-rows", "coerce", *model,
                 "--json"])
    m.record("parquet bytes with --bad-rows coerce (asked for): decoded", run, "success",
             lambda: fresh_ids(m.work, "db-coerce", "coerced")[1:] == (True, 2))
    (m.work / "mixed.jsonl").write_text('{"_id": "a", "text": "apple"}\n{"_id": "b", "text": 7}\n')
    run = m.run(["index", "mixed.jsonl", "-c", "skipped", "--path", "db-skip", "--bad-rows", "skip", *model, "--json"])
    m.record("a non-text row with --bad-rows skip (asked for): left out and counted", run, "success",
             lambda: '"bad_rows_skipped": 1' in run.out and fresh_ids(m.work, "db-skip", "skipped")[0] == {"a"})


def degenerate_vectors(m: Matrix, docs: Path) -> None:
    """An embeddings server answering vectors that cannot be indexed: refused, nothing cached or half-indexed."""
    for mode, what in (("zero", "all-zero"), ("nan", "NaN"), ("huge", "infinite (beyond float32)"),
                       ("ragged", "ragged (two lengths)")):
        server = Embeddings(mode)
        try:
            run = m.run(["index", str(docs), "-c", f"vec-{mode}", "--path", "db", "--model", f"openai:{mode}",
                         "--embed-base-url", server.url])
            m.record(f"embeddings server answers {what} vectors", run, "error")
        finally:
            server.close()


def judgments(m: Matrix, docs: Path, emb: Embeddings) -> None:
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    ids = sorted(ids_of(docs))
    for name, lines, expect in (("qrels-conflict", f"q0\t{ids[0]}\t1\nq0\t{ids[0]}\t0\n", "error"),
                                ("qrels-twice", f"q0\t{ids[0]}\t1\nq0\t{ids[0]}\t1\n", "success")):
        folder = m.work / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(docs.read_text())
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "apple river"}) + "\n")
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
        run = m.run(["eval", str(folder), *model, "--json"])
        m.record("two qrels lines judge one pair differently" if expect == "error" else
                 "the same qrels line twice (harmless)", run, expect,
                 None if expect == "error" else lambda: json.loads(run.out)["queries"] == 1)


PROJECTION = """
import sys
from qkrag.projection.model import QKProjection
QKProjection.identity(32, "openai:m", scale=5.0).save(sys.argv[1])
"""


def half_built(m: Matrix, emb: Embeddings) -> None:
    """`qkrag index` SIGKILLed midway: every reader refuses the half-built collection; a search writes nothing."""
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    env = {k: v for k, v in m.env().items() if k != "OPENAI_API_KEY"}
    subprocess.run([sys.executable, "-c", PROJECTION, str(m.work / "proj-id")], env=env, check=True)
    beir = m.work / "beir-half"
    (beir / "qrels").mkdir(parents=True)
    corpus(beir / "corpus.jsonl", "h", 3000, 3)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"w{i} apple"}) + "\n"
                                                for i in range(5)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\th{i}\t1\n" for i in range(5)))
    argv = ["index", str(beir), "-c", "half", "--path", "db-half", *model]
    kill_midway(m, emb, argv, delay=0.3, requests=4)
    where = ["-c", "half", "--path", "db-half", *model]
    m.record("index killed midway: search", m.run(["search", "apple", *where]), "error")
    m.record("index killed midway: search --projection (must not build or search a projected collection)",
             m.run(["search", "apple", *where, "--projection", "proj-id"]), "error")
    m.record("index killed midway: eval --retriever chroma", m.run(["eval", str(beir), "--retriever", "chroma", *where]),
             "error")
    m.record("index killed midway: serve", m.run(["serve", *where, "--http-port", "0"]), "error")
    run = m.run(argv)
    m.record("index killed midway, then re-run", run, "success",
             lambda: fresh_ids(m.work, "db-half", "half")[1:] == (True, 3000))
    run = m.run(["search", "apple", *where, "--projection", "proj-id", "--json"])
    m.record("search --projection on the finished index: answers, writes no projected collection", run, "success",
             lambda: len(json.loads(run.out)[0]["hits"]) == 10 and not any("-proj-" in name for name in collections(m, "db-half")))


TAMPER = """
import json, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file, save_file
folder, how = Path(sys.argv[1]), sys.argv[2]
config, weights = json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")
if how == "config-list":
    (folder / "config.json").write_text("[1, 2]")
elif how == "future-format":
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))
elif how == "nan-weights":
    weights["Q"][0, 0] = np.nan
    save_file(weights, folder / "model.safetensors")
elif how == "k-shape":
    weights["K"] = weights["K"][:, :-1].copy()
    save_file(weights, folder / "model.safetensors")
elif how == "half-swapped":  # a kill between two writes: another run's rank-8 weights beside this config
    save_file({k: (v[:8].copy() if v.ndim == 2 else v) for k, v in weights.items()}, folder / "model.safetensors")
"""


def projection_files(m: Matrix, emb: Embeddings) -> None:
    """Training that diverges, and projection folders that are tampered with, from a future version, or half
    replaced: one clear error each, never NaN served or a traceback."""
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    beir = m.work / "beir-train"
    (beir / "qrels").mkdir(parents=True)
    corpus(beir / "corpus.jsonl", "t", 40, 5)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"w{i} apple"}) + "\n"
                                                for i in range(12)))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\tt{i}\t1\n"
                                                                                      for i in range(12)))
    (beir / "qrels" / "test.tsv").write_text((beir / "qrels" / "train.tsv").read_text())
    for lr in ("1e30", "1000", "1e38"):
        m.record(f"train with a learning rate of {lr}",
                 m.run(["train", str(beir), "--split", "train", "--lr", lr, "--out", f"proj-lr{lr}", *model]), "error")
    env = {k: v for k, v in m.env().items() if k != "OPENAI_API_KEY"}
    for how, what in (("config-list", "config.json is a list"), ("future-format", "a future format version"),
                      ("nan-weights", "a NaN in Q"), ("k-shape", "K of the wrong shape"),
                      ("half-swapped", "weights of another rank beside the config (a kill between two writes)")):
        folder = m.work / f"proj-{how}"
        subprocess.run([sys.executable, "-c", PROJECTION, str(folder)], env=env, check=True)
        subprocess.run([sys.executable, "-c", TAMPER, str(folder), how], env=env, check=True)
        m.record(f"projection folder: {what}: eval", m.run(["eval", str(beir), "--projection", str(folder), *model]),
                 "error")


COLLECTIONS = """
import json, sys
import chromadb
client = chromadb.PersistentClient(path=sys.argv[1], settings=chromadb.Settings(anonymized_telemetry=False))
print(json.dumps([c if isinstance(c, str) else c.name for c in client.list_collections()]))
"""


def collections(m: Matrix, path: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return json.loads(subprocess.run([sys.executable, "-c", COLLECTIONS, str(m.work / path)], capture_output=True,
                                     text=True, env=env, check=True).stdout)


def waits_and_secrets(m: Matrix, docs: Path, emb: Embeddings) -> None:
    """A server that asks to wait an hour; keys in URLs and echoed back by an LLM; a refusing LLM."""
    out = m.work / "rewritten-429.jsonl"
    limited = Chat("429")
    try:
        run = m.run(["--timeout", "5", "rewrite", str(docs), "--out", str(out), "--llm-base-url", limited.url],
                    QKRAG_LLM_MODEL="m")
        m.record("LLM answers 429 with Retry-After: 3600 (--timeout 5): rewrite", run, "error")
        run = m.run(["rewrite", str(docs), "--out", str(out), "--llm-base-url", limited.url], QKRAG_LLM_MODEL="m",
                    QKRAG_TIMEOUT="5")
        m.record("LLM answers 429 with Retry-After: 3600 (QKRAG_TIMEOUT=5): rewrite", run, "error")
    finally:
        limited.close()
    echo = Chat("echo")
    try:
        out = m.work / "rewritten-echo.jsonl"
        run = m.run(["rewrite", str(docs), "--out", str(out), "--llm-base-url", echo.url], QKRAG_LLM_MODEL="m")
        m.record("LLM echoes the Authorization header in its answers: rewrite (journal, cache, output grepped)", run,
                 "success", lambda: out.exists() and len(out.read_text().splitlines()) == 20
                 and "Authorization: Bearer" in out.read_text() and PLANTED not in out.read_text())  # echoed, scrubbed
    finally:
        echo.close()
    refuse = Chat("refuse")
    try:
        run = m.run(["rewrite", str(docs), "--out", str(m.work / "r.jsonl"), "--llm-base-url", refuse.url,
                     "--llm-model", "m"])
        m.record("LLM refuses every document: rewrite --llm-model m (the fix names --skip-failed)", run, "error")
        if "--skip-failed" not in run.err:
            m.rows[-1]["verdict"] = "unclear error"
    finally:
        refuse.close()
    down = closed_port()
    run = m.run(["index", str(docs), "-c", "url-key", "--path", "db", "--model", "openai:m", "--embed-base-url",
                 f"http://127.0.0.1:{down}/v1?api_key={PLANTED}"])
    m.record("the key inside --embed-base-url (?api_key=...), server down", run, "error")
    run = m.run(["search", "apple", "-c", "docs", "--host", f"user:{PLANTED}@127.0.0.1", "--port", str(down)])
    m.record("the key inside --host (user:KEY@host), server down", run, "error")


def serve_guards(m: Matrix, emb: Embeddings) -> None:
    """`qkrag serve` over a finished collection: a foreign Host header is refused; queries never write the cache."""
    import sqlite3
    import urllib.error
    import urllib.request

    argv = ["serve", "-c", "server-a", "--path", "db", "--model", "openai:same", "--embed-base-url", emb.url,
            "--http-port", "0"]
    started = time.monotonic()
    proc = m.start(argv)
    line = proc.stdout.readline()
    url = line.split("open ", 1)[-1].split(" ", 1)[0] if "open http" in line else ""
    results = {}

    def get(path: str, host: str | None = None) -> int:
        request = urllib.request.Request(url.rstrip("/") + path, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as err:
            return err.code

    def rows() -> int:
        with sqlite3.connect(f"file:{m.work / 'cache' / 'embeddings.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    if url:
        results["evil"] = get("/api/sources", "evil.example.com")
        results["evil-port"] = get("/api/sources", f"evil.example.com:{url.rsplit(':', 1)[-1].strip('/')}")
        results["own"] = get("/api/sources")
        before = rows()
        results["queries"] = [get(f"/api/query?q=fresh+query+{i}") for i in range(10)]
        results["cache rows added"] = rows() - before
    proc.terminate()
    run = m.finish(proc, argv, started)
    run.code = 0 if url and run.code in (0, -signal.SIGTERM, None) else run.code
    run.out = json.dumps(results)
    m.record("serve: a request with a foreign Host header (DNS rebinding)", run, "success",
             lambda: results.get("evil") == 421 and results.get("evil-port") == 421 and results.get("own") == 200)
    m.record("serve: 10 distinct queries through the GET API", run, "success",
             lambda: results.get("queries") == [200] * 10 and results.get("cache rows added") == 0)


def leftovers_and_locks(m: Matrix, emb: Embeddings) -> None:
    """A killed `index --hybrid` leaves a BM25 temporary folder; two generations share one folder."""
    model = ["--model", "openai:m", "--embed-base-url", emb.url]
    big = m.work / "big.jsonl"
    argv = ["index", str(big), "-c", "hyb", "--path", "db-hyb", "--hybrid", *model]
    proc = m.start(argv)
    bm25 = m.work / "db-hyb" / "bm25"
    killed = False
    while proc.poll() is None:  # killed as soon as the BM25 build has its temporary folder
        if bm25.is_dir() and any(p.name.endswith(".tmp") for p in bm25.iterdir()):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.communicate()
    run = m.run(argv)
    m.record(f"index --hybrid {'killed during' if killed else 'finished before a kill in'} its BM25 build, then "
             "re-run: no bm25/.*.tmp left", run, "success",
             lambda: not [p for p in bm25.iterdir() if p.name.startswith(".")])
    emb.delay = 0.5
    beir = m.work / "beir"
    first_argv = ["generate", str(beir), "--generator", "ict", "--out", "pairs-two", *model]
    fresh = {"QKRAG_CACHE_DIR": str(m.work / "cache-generate")}  # nothing cached: the first run has work to do
    started = time.monotonic()
    first, hits = m.start(first_argv, **fresh), emb.hits
    while emb.hits == hits and first.poll() is None:
        time.sleep(0.05)
    second = m.run(first_argv, **fresh)
    run_first = m.finish(first, first_argv, started)
    emb.delay = 0.0
    m.record("two `generate` runs into one folder at once (second shown): refused, not both working", second, "error")
    if run_first.code != 0:
        m.rows[-1]["verdict"] = "silent loss"


# ------------------------------------------------------------------------------------------------ report

NOT_HERE = """Faults not in this matrix, and where they are checked instead: stale derived collections (projected,
centred, whitened) after the documents change,
`tests/retrieval/test_store.py::test_a_sibling_derived_from_other_content_is_emptied_not_reused`; a collection whose
vectors do not match its texts,
`tests/retrieval/test_build.py::test_a_collection_whose_vectors_do_not_match_its_texts_is_rebuilt`; an overwritten
local model folder, `tests/embed/test_encoders.py::test_overwritten_local_model_weights_miss_the_cache`; a Chroma
server that stops answering midway (SIGSTOP),
`tests/retrieval/test_connection.py::test_a_chroma_server_that_stops_answering_midway_fails_within_the_timeout`;
generate killed midway and resumed to exactly the pairs of an uninterrupted run, `tests/pairs/test_generate.py`;
`qkrag index` killed at several moments, then search (with and without --projection), eval and serve,
`tests/test_cli.py::test_a_killed_index_gives_every_reader_the_incomplete_error_or_the_whole_result`.
"""


def leaks(m: Matrix) -> list[str]:
    """Where the planted key appears: command outputs, and every file under the work folder."""
    found = [f"output #{i}" for i, text in enumerate(m.outputs) if PLANTED in text]
    for path in m.work.rglob("*"):
        if path.is_file() and PLANTED.encode() in path.read_bytes():
            found.append(str(path.relative_to(m.work)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before a command counts as a hang")
    parser.add_argument("--src", type=Path, help="run the CLI from this source folder (default: this tree's src)")
    parser.add_argument("--out", default="fault_matrix", help="results name (results/<out>.json and .md)")
    parser.add_argument("--note", default="", help="a line put first in the markdown (e.g. which sources ran)")
    args = parser.parse_args()
    global SRC
    SRC = (args.src or SRC).resolve()
    with tempfile.TemporaryDirectory(prefix="qkrag-faults-") as tmp:
        m = Matrix(Path(tmp), args.limit)
        docs = corpus(m.work / "docs.jsonl", "d", 20)
        emb = Embeddings()
        try:
            secrets_and_servers(m, docs, emb)
            llm_faults(m, docs, emb)
            input_faults(m)
            cache_faults(m, docs, emb)
            index_faults(m, emb)
            pipeline_faults(m, docs, emb)
            bad_rows(m, emb)
            degenerate_vectors(m, docs)
            judgments(m, docs, emb)
            half_built(m, emb)
            waits_and_secrets(m, docs, emb)
            serve_guards(m, emb)
            leftovers_and_locks(m, emb)
            projection_files(m, emb)
        finally:
            emb.close()
        leaked = leaks(m)
    report(m, leaked, args.out, args.note)


def report(m: Matrix, leaked: list[str], out: str, note: str) -> None:
    """results/<out>.json (summary and rows) and results/<out>.md (the table)."""
    verdicts = {v: sum(r["verdict"] == v for r in m.rows) for v in
                ("clear error", "correct resume", "traceback", "hang", "silent loss", "unclear error")}
    summary = {"rows": len(m.rows), **verdicts, "leaks": len(leaked), "leaked_in": leaked,
               "as_expected": sum(r["verdict"] == r["expected"] for r in m.rows)}
    columns = ["fault", "command", "exit code", "seconds", "first line of the message", "verdict"]
    shown = [{**r, "seconds": f"{r['seconds']:.1f}"} for r in m.rows]
    body = (f"{note}\n\n" if note else "") + (
        f"{summary['as_expected']} of {len(m.rows)} rows as expected; tracebacks {verdicts['traceback']}, "
        f"hangs {verdicts['hang']}, silent losses {verdicts['silent loss']}, leaks of the planted key "
        f"{len(leaked)} (grepped over every output and every file under the work folder).\n\n"
        + markdown_table(shown, columns) + "\n\n" + NOT_HERE)
    save(out, {"summary": summary, "rows": m.rows, "src": str(SRC), "note": note}, body)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

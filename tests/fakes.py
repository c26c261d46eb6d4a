"""The fakes every test shares, in one place (write no other): the fake encoders (FakeEncoder, and FakeFolderModel
for the real class's folder fingerprint), the one fake OpenAI-compatible server (FakeOpenAIServer: chat completions,
embeddings, models, scripted faults), a free loopback port, tiny BEIR folders written on the fly, and where the
optional shared data lives."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from qkrag.embed.encoders import Encoder, SentenceTransformerEncoder

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class FakeEncoder(Encoder):
    """The tests' encoder: a bag of hashed words, deterministic and instant; texts sharing words get similar vectors.
    `calls`/`texts_embedded` count its work; `delay` seconds per batch makes a build slow enough to kill midway; `log`
    (a file) gets one line per batch with the batch's size, for work done in another process. `spread=True` gives
    each word a fixed random direction instead of a signed coordinate (summed, not normalised): dense vectors with
    no ties, for tests comparing rankings of many near-identical texts."""

    def __init__(self, dim: int = 32, name: str = "fake-encoder", delay: float = 0.0, log: str | None = None,
                 spread: bool = False):
        self.name = name
        self._dim = dim
        self.delay, self.log, self.spread = delay, log, spread
        self.calls = 0
        self.texts_embedded = 0

    @property
    def dimension(self) -> int:
        return self._dim

    def embed_batch(self, texts, side):
        self.calls += 1
        self.texts_embedded += len(texts)
        if self.delay:
            time.sleep(self.delay)
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{len(texts)}\n")
        if self.spread:
            return np.stack([sum(self._direction(w) for w in t.lower().split()) for t in texts]).astype(np.float32)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self._dim] += 1.0 if (h >> 64) % 2 else -1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out

    def _direction(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).normal(size=self._dim)


class FakeFolderModel(SentenceTransformerEncoder):
    """A sentence-transformers "model" in a local folder whose vectors ([scale] * 3) come from the folder's
    weights.txt, so a test can overwrite the weights and see what the real class's fingerprint makes of it."""

    @property
    def dimension(self) -> int:
        return 3

    def warm_up(self) -> None:
        pass  # nothing to load

    def embed_batch(self, texts, side):
        scale = float((Path(self.model_name) / "weights.txt").read_text())
        return np.full((len(texts), 3), scale, np.float32)


class FakeOpenAIServer:
    """The one fake OpenAI-compatible server: POST /v1/chat/completions and POST /v1/embeddings on 127.0.0.1, in a
    daemon thread; `url` is its /v1 base. Every request's body, path and Authorization header is recorded.

    What it answers is configurable:
    - `chat(body) -> str`: the text of a completion (default: "answer to: <last message> (t=<temperature>)");
    - `embed(text) -> list[float]`: one text's vector (default: [len(text), 1, 0]);
    - `mode`: the behaviour of every request, and `script`: the behaviours of the next requests (then `mode`).
      Behaviours: ok, empty, refusal, garbled (completion texts); badjson (a torn body); 500; 401 and echo500
      (errors whose body echoes the request headers, key included, as a careless proxy does); slow (sleeps
      `slow_seconds`, then answers ok; a large `slow_seconds` makes a hung server).
    GET (any path; /v1/models is the one that means something) lists one model ("fake-model"). A chat prompt containing "ALWAYS_REFUSE" is refused every time. `delay` sleeps before every answer;
    `active`/`max_active` count requests in flight."""

    TEXTS = {"empty": "", "refusal": "I'm sorry, but I can't help with that request.",
             "garbled": "\ufffd\ufffd #### $$$ 1234 ---- ((((( \ufffd"}

    def __init__(self, chat=None, embed=None, mode: str = "ok", delay: float = 0.0, slow_seconds: float = 3.0,
                 port: int = 0):
        self.chat = chat or (lambda body: f"answer to: {last_message(body)} (t={body.get('temperature')})")
        self.embed = embed or (lambda text: [float(len(text)), 1.0, 0.0])
        self.mode, self.delay, self.slow_seconds = mode, delay, slow_seconds
        self.script: deque[str] = deque()
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.auth_headers: list[str] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True  # a request left hanging never blocks close()
        self.httpd.handle_error = lambda request, address: None  # a client that gave up: a broken pipe, no news
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802
                if server.mode == "slow":  # a hung server hangs on every path
                    server._closed.wait(server.slow_seconds)
                reply_json(self, 200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.paths.append(self.path)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    behaviour = server.script.popleft() if server.script else server.mode
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    server._respond(self, behaviour, body)
                finally:
                    with server._lock:
                        server.active -= 1

        return Handler

    def _respond(self, handler, behaviour: str, body: dict) -> None:
        if behaviour == "slow":
            self._closed.wait(self.slow_seconds)  # close() ends the wait: no thread outlives its test for long
            behaviour = "ok"
        if behaviour in ("500", "echo500", "401"):
            headers = "\n".join(f"{k.lower()}: {v}" for k, v in handler.headers.items()) if behaviour != "500" else ""
            return reply_json(handler, 401 if behaviour == "401" else 500,
                              {"error": {"message": f"server fault; you sent:\n{headers}", "type": "x"}})
        if behaviour == "badjson":
            return reply_raw(handler, 200, b'{"id": "x", "choices": [{"mess')
        if handler.path.rstrip("/").endswith("/embeddings"):
            texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
            data = [{"object": "embedding", "index": i, "embedding": self.embed(t)} for i, t in enumerate(texts)]
            return reply_json(handler, 200, {"object": "list", "data": data, "model": body["model"],
                                             "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if "ALWAYS_REFUSE" in last_message(body):
            behaviour = "refusal"
        text = self.chat(body) if behaviour == "ok" else self.TEXTS[behaviour]
        return reply_json(handler, 200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


def free_port() -> int:
    """A loopback port nothing listens on (now): for servers started later, or addresses that must refuse."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_message(body: dict) -> str:
    """The last message's text of a chat request body."""
    return body["messages"][-1]["content"]


def reply_json(handler, status: int, payload: dict) -> None:
    """Answer a request on `handler` (a BaseHTTPRequestHandler) with `payload` as JSON."""
    reply_raw(handler, status, json.dumps(payload).encode())


def reply_raw(handler, status: int, raw: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def write_beir(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: dict[str, list[str]],
               split: str = "test") -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i, t in docs.items():
            f.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for i, t in queries.items():
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    return write_qrels(folder, qrels, split)


def write_qrels(folder: Path, qrels: dict[str, list[str]], split: str) -> Path:
    """qrels/<split>.tsv of a BEIR folder: every listed (query, document) judged relevant (1)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "qrels" / f"{split}.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, ds in qrels.items():
            for d in ds:
                f.write(f"{q}\t{d}\t1\n")
    return folder


TINY_DOCS = {
    "d1": "The cat sat on the warm mat by the fire.",
    "d2": "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "d3": "Bicycle chains need oil every few hundred kilometres.",
    "d4": "Bread rises because yeast produces carbon dioxide gas.",
    "d5": "A heat pump moves heat instead of making it.",
}


TINY_QUERIES = {"q1": "where did the cat sit", "q2": "how do plants make sugar from sunlight", "q3": "why does bread rise"}


TINY_QRELS = {"q1": ["d1"], "q2": ["d2"], "q3": ["d4"]}


class StandInRuntime:
    """What xllamacpp.Server is to `qkrag.llm.local.LocalLLMServer`: an OpenAI-compatible server on a free port of
    127.0.0.1 (`listening_address`), started on construction, stopped when the object is dropped. Every chat answer
    is `reply`. Put it in place with `monkeypatch.setattr(LocalLLMServer, "open_runtime", ...)`."""

    reply = "stand-in says hi"

    def __init__(self, model_path: Path):
        reply = self.reply
        # held, not inherited: the server's handler refers to the server, and that cycle would keep it up until gc
        self.server = FakeOpenAIServer(chat=lambda body: reply)
        self.model_path = model_path
        self.listening_address = self.server.url.removesuffix("/v1")

    def __del__(self):
        self.server.close()

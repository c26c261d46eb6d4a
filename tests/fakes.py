"""The fakes every test shares, in one place: a fast deterministic encoder, a loopback HTTP server base, tiny BEIR
folders written on the fly, and where the optional shared data lives."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np

from qkrag.embed.encoders import Encoder

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class FakeEncoder(Encoder):
    """Bag of hashed words: deterministic, instant, and texts sharing words get similar vectors."""

    def __init__(self, dim: int = 32, name: str = "fake-encoder"):
        self.name = name
        self._dim = dim
        self.calls = 0
        self.texts_embedded = 0

    @property
    def dimension(self) -> int:
        return self._dim

    def embed_batch(self, texts, side):
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self._dim] += 1.0 if (h >> 64) % 2 else -1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out


class LoopbackHTTP:
    """Base of the tests' fake HTTP servers (OpenAI-compatible stubs): serves a handler class on 127.0.0.1 in a
    daemon thread; `url` is its /v1 base. Subclasses build their handler and call `_serve`."""

    def _serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True  # a request left hanging never blocks close()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def reply_json(handler, status: int, payload: dict) -> None:
        """Answer a request on `handler` (a BaseHTTPRequestHandler) with `payload` as JSON."""
        raw = json.dumps(payload).encode()
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


class StandInRuntime(LoopbackHTTP):
    """What xllamacpp.Server is to `qkrag.llm.local.LocalLLMServer`: an OpenAI-compatible server on a free port of
    127.0.0.1 (`listening_address`), started on construction, stopped when the object is dropped. Every chat answer
    is `reply`. Put it in place with `monkeypatch.setattr(LocalLLMServer, "open_runtime", ...)`."""

    reply = "stand-in says hi"

    def __init__(self, model_path: Path):
        from http.server import BaseHTTPRequestHandler

        self.model_path = model_path
        reply, send = self.reply, LoopbackHTTP.reply_json  # not `self`: a cycle would keep the server up until gc

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                send(self, 200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                send(self, 200, {
                    "id": "1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})

        self._serve(Handler)
        self.listening_address = self.url.removesuffix("/v1")

    def __del__(self):
        self.close()

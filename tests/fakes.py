"""The fakes every test shares, in one place (write no other): the fake encoders (FakeEncoder, and FakeFolderModel
for the real class's folder fingerprint), the one fake OpenAI-compatible server (FakeOpenAIServer: chat completions,
embeddings, models, scripted faults), a free loopback port, tiny BEIR folders written on the fly, where the
optional shared data lives, a tiny topic corpus (make_corpus), the index tests' encoder, corpus and build
(hash_encoder, tiny_corpus, build_quietly), a random evaluation result of chosen quality
(random_result), the query-writing fake LLM of generation (pair_answer), and the tidy fake LLM the rewriting tests share (fake_answer, with the fixtures `server` and
`make_llm` that a test module imports)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from qkrag.data import Corpus, Document
from qkrag.embed.encoders import EmbedOptions, Encoder, SentenceTransformerEncoder
from qkrag.evaluate.metrics import EvalResult, evaluate_run
from qkrag.llm.client import LLM, LLMConfig

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
            if not out[i].any():  # words that cancel out: a real encoder never answers a zero vector (it is refused)
                out[i, int(hashlib.md5(text.encode()).hexdigest(), 16) % self._dim] = 1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out

    def _direction(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).normal(size=self._dim)



def hash_encoder(dim: int = 32, name: str = "hash", **options) -> FakeEncoder:
    """The shared fake encoder, named "<name>-<dim>" as an index records it; spread, for rankings without ties."""
    return FakeEncoder(dim, f"{name}-{dim}", spread=True, **options)


WORDS = "apple river stone cloud engine violin forest copper lantern harbor meadow falcon quartz orbit".split()


def tiny_corpus(n: int, seed: int = 0) -> Corpus:
    """`n` documents d0.. of four random WORDS each and a word of their own (for the index tests)."""
    rng = np.random.default_rng(seed)
    return Corpus.from_texts({f"d{i}": " ".join(rng.choice(WORDS, size=4)) + f" w{i}" for i in range(n)})


NO_CACHE = EmbedOptions(cache=None, progress=False)


def build_quietly(corpus: Corpus, encoder: Encoder, config):
    """`build_index` without the embedding cache or a progress bar: what the index tests build with."""
    from qkrag.retrieval.build import build_index

    return build_index(corpus, encoder, config, NO_CACHE, progress=False)

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
    GET (any path; /v1/models is the one that means something) lists one model ("fake-model"). A chat prompt containing "ALWAYS_REFUSE" is refused every time. `delay` sleeps before every answer:
    seconds, or (low, high) for a random delay seeded by the request body (a fleet's uneven latency, the same for the
    same request whatever the timing); `active`/`max_active` count requests in flight, `arrivals` their
    time.monotonic(). `logprobs(body) -> {token: logprob}`: the first token's alternatives, answered (the top
    `top_logprobs` of them) when a request asks `logprobs=True`. Rate limits: behaviour "429" answers 429 with `Retry-After: retry_after`, and with `limit` every
    request beyond `limit` in flight gets that (`rejected` counts them)."""

    TEXTS = {"empty": "", "refusal": "I'm sorry, but I can't help with that request.",
             "garbled": "\ufffd\ufffd #### $$$ 1234 ---- ((((( \ufffd"}

    def __init__(self, chat=None, embed=None, mode: str = "ok", delay: float | tuple[float, float] = 0.0,
                 slow_seconds: float = 3.0, port: int = 0, limit: int | None = None, retry_after: str = "0.2",
                 logprobs=None):
        self.chat = chat or (lambda body: f"answer to: {last_message(body)} (t={body.get('temperature')})")
        self.logprobs = logprobs  # body -> {token: logprob} of the first token, sent when a request asks logprobs
        self.embed = embed or (lambda text: [float(len(text)), 1.0, 0.0])
        self.mode, self.delay, self.slow_seconds = mode, delay, slow_seconds
        self.script: deque[str] = deque()
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.auth_headers: list[str] = []
        self.active = self.max_active = self.rejected = 0
        self.limit, self.retry_after = limit, retry_after
        self.arrivals: list[float] = []
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
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.paths.append(self.path)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    server.arrivals.append(time.monotonic())
                    behaviour = server.script.popleft() if server.script else server.mode
                    if behaviour == "429" or (server.limit is not None and server.active >= server.limit):
                        server.rejected += 1
                        behaviour = "429"
                    else:
                        server.active += 1
                        server.max_active = max(server.max_active, server.active)
                if behaviour == "429":
                    return reply_raw(self, 429, b'{"error": {"message": "slow down"}}',
                                     {"Retry-After": server.retry_after})
                try:
                    if server.delay:
                        low, high = server.delay if isinstance(server.delay, tuple) else (server.delay,) * 2
                        time.sleep(random.Random(hashlib.sha256(raw).digest()).uniform(low, high))
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
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if self.logprobs is not None and body.get("logprobs"):
            top = sorted(self.logprobs(body).items(), key=lambda kv: -kv[1])[: body.get("top_logprobs") or 1]
            choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1], "bytes": None, "top_logprobs":
                                               [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}]}
        return reply_json(handler, 200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


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


def reply_raw(handler, status: int, raw: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
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


#: Five one-line documents on unrelated topics, keyed by topic: the baselines' and BM25's unit-test corpus.
TOPIC_DOCS = {
    "cat": "The cat sat on the warm mat by the fire.",
    "plants": "Photosynthesis: plants turn sunlight, water and carbon dioxide into sugar.",
    "bikes": "Bicycle chains need oil every few hundred kilometres.",
    "bread": "Bread rises because yeast produces carbon dioxide gas.",
    "heat": "A heat pump moves heat instead of making it.",
}

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


# ------------------------------------------------------------------------------------------------ a topic corpus

TOPICS = [
    ("volcano", "lava magma eruption crater ash basalt"),
    ("coral", "reef polyp bleaching ocean algae symbiosis"),
    ("insulin", "pancreas glucose diabetes hormone beta cells"),
    ("glacier", "ice melt moraine crevasse snow valley"),
    ("bee", "pollen hive honey nectar queen swarm"),
    ("comet", "nucleus tail orbit dust coma perihelion"),
    ("vaccine", "antibody immune antigen booster dose adjuvant"),
    ("wheat", "grain gluten harvest flour crop field"),
    ("neuron", "axon synapse dendrite signal myelin brain"),
    ("tide", "moon gravity coast ebb flood harbour"),
    ("yeast", "ferment sugar bread dough carbon dioxide"),
    ("laser", "photon beam mirror coherent light pump"),
]


def make_corpus(n: int = len(TOPICS)) -> Corpus:
    """A small corpus of distinct topics, three sentences a passage, each with its own title."""
    docs = []
    for i in range(n):
        topic, vocab = TOPICS[i % len(TOPICS)]
        w = vocab.split()
        text = (f"The {topic} is studied with care. Researchers measured {w[0]} and {w[1]} in {topic} {i} samples. "
                f"They found that {w[2]} changes {w[3]} over time. A second study linked {w[4]} to {w[5]} strongly.")
        docs.append(Document(f"d{i}", text, title=f"{topic.title()} report {i}"))
    return Corpus(tuple(docs), "tiny-topics")


# ------------------------------------------------------------------------------------------------ evaluation results


def random_result(n: int, seed: int, shift: float = 0.0) -> EvalResult:
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {"rel": 1} for i in range(n)}
    # the relevant doc lands at a random rank among 10; `shift` moves it up for a better system
    ranks = np.clip(rng.integers(1, 11, n) - np.round(shift * rng.random(n) * 10).astype(int), 1, 10)
    run = {f"q{i}": {("rel" if j == ranks[i] else f"x{j}"): 1.0 / j for j in range(1, 11)} for i in range(n)}
    return evaluate_run(qrels, run)


# ------------------------------------------------------------------------------------------------ a query-writing fake LLM
# For generation (tests/pairs/test_generate.py) and bench runs with an LLM generator (tests/bench/test_job.py).


def pair_answer(body: dict) -> str:
    """What the fake LLM writes (with FakeOpenAIServer): deterministic in the prompt and the seed. A query prompt
    gets numbered queries made of the passage's words, after a preamble and before a copied first sentence; the
    judge prompt gets "No"."""
    user = last_message(body)
    if "Document:" not in user:  # the judge template
        return "No"
    doc = user.split("Document:", 1)[1]
    n = int(re.search(r"Write (\d+)", user).group(1))
    rng = random.Random(hashlib.sha256(f"{doc}|{body.get('seed')}".encode()).hexdigest())
    vocab = sorted(set(re.findall(r"[a-z]+", doc.lower())) - {"the", "and", "in", "is", "to", "a", "with"})
    lines = ["Here are the queries:"]
    for j in range(n):
        lines.append(f"{j + 1}. \"how does {' '.join(rng.sample(vocab, 3))} relate\"")
    lines.append(doc.strip().split(".")[0] + ".")  # a copied first sentence: the copy filter must drop it
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ a tidy fake LLM
# For rewriting and aspect tests (tests/llm/test_rewrite.py, tests/embed/test_wrappers.py,
# tests/analysis/test_aspects.py). A test module takes the fixtures by importing them:
#     from tests.fakes import make_tidy_llm, tidy_llm_server  # noqa: F401 (the fixtures `make_llm` and `server`)


def passage_of(prompt: str) -> str:
    return prompt.split("Text:", 1)[1].strip() if "Text:" in prompt else prompt


NOISE = {"hey", "lol", "omg", "cheers", "haha", "dude", "dear", "sir", "madam", "kindly", "yours", "faithfully",
         "regards"}
TYPOS = {"teh": "the", "rainn": "rain", "bred": "bread"}


def fake_answer(prompt: str) -> str:
    """What the fake model writes. Rewrites: the passage's content words, lower case, with markup, greetings,
    sign-offs, slang (NOISE) and typos (TYPOS) removed, behind a preamble. Aspects: the passage's "<aspect>: ..."
    clause, or "none". Passages containing REFUSE are refused; BLANK gets a preamble and nothing after it."""
    text = passage_of(prompt)
    if "REFUSE" in text:
        return "I'm sorry, but I can't help with that request."
    if "BLANK" in text:
        return "Here is the rewritten text:"
    if prompt.startswith("Rewrite"):
        words = [TYPOS.get(w, w) for w in re.findall(r"[a-z]+", re.sub(r"<[^>]+>", " ", text).lower())]
        return "Here is the rewritten text:\n\n" + " ".join(w for w in words if w not in NOISE)
    question = re.split(r"[?.]", prompt, maxsplit=1)[0].lower()
    aspect = "climate" if "climate" in question else "cuisine" if "cuisine" in question else "size"
    match = re.search(rf"{aspect}: ([^.]*)", text)
    return match.group(1) if match else "none"


@pytest.fixture(name="server")
def tidy_llm_server():
    with FakeOpenAIServer(chat=lambda body: fake_answer(last_message(body))) as s:
        yield s


@pytest.fixture(name="make_llm")
def make_tidy_llm(server, tmp_path):
    """LLM clients on the tidy fake model's server, closed after the test."""
    made: list[LLM] = []

    def make(**overrides) -> LLM:
        cfg = LLMConfig(model="fake-model", base_url=server.url, timeout=5.0, max_retries=1, backoff=0.0, concurrency=2)
        llm = LLM(replace(cfg, **overrides), cache=tmp_path / "llm.sqlite")
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def random_projection(d: int, encoder: str, seed: int = 0, rank: int | None = None, noise: float = 0.1):
    """A fitted-looking QK projection with arbitrary (non-identity) weights, scale 7.5 and bias -3, so a test can tell
    Q from K and a logit from a dot product."""
    from qkrag.projection.model import QKProjection

    rng = np.random.default_rng(seed)
    r = rank or d
    model = QKProjection.identity(d, encoder)
    model._set_weights(np.eye(r, d, dtype=np.float32) + noise * rng.normal(size=(r, d)).astype(np.float32),
                       np.eye(r, d, dtype=np.float32) + noise * rng.normal(size=(r, d)).astype(np.float32), 7.5, -3.0)
    return model


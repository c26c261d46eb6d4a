"""The README's example, for the integration tests: the demo corpus in a real Chroma folder with the real model, a
projection under which qkrag ranks the answer above the forum post, and the three qkrag retrievers an integration
wraps: raw cosine, projected, and hybrid (projected + BM25).

The projection is made for the test, not trained: on the demo, training (README quickstart) keeps the identity, under
which the post stays first whichever route a query takes, so a wrapper that sent queries through the document route
would pass unnoticed. This one moves only the query side (Q = I + c·(a − p)·q̂ᵀ, K = I), so qkrag ranks the answer
first and the document route (K·v for the query) still ranks the post first: routing shows in the ranking.

`build_trained_demo` is the vector-store reference: a projection trained on the demo's train split (K moves, so |K·v|
varies between documents), indexed and searched through the qkrag CLI, whose top 10 for every test query each store
must reproduce. DEMO is the one place that names the demo folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
QUERY = "why does my dough stay flat"  # the README's example query
ANSWER, POST = "bake-01", "post-01"  # the recipe that answers it, and the forum post that asks it again


@dataclass
class Demo:
    encoder: Any
    projection: Any
    projection_dir: Path
    retrievers: dict[str, Any]  # "raw", "projected", "hybrid"


def build_demo(root: Path) -> Demo:
    from qkrag.data import load_beir
    from qkrag.embed.encoders import make_encoder
    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.hybrid import HybridRetriever
    from qkrag.retrieval.index import DenseRetriever, IndexConfig, build_index

    encoder = make_encoder()
    test = load_beir(DEMO, "test")
    raw = build_index(test.corpus, encoder, IndexConfig(collection="demo", path=root / "chroma"), progress=False)
    projection = answer_first_projection(encoder, test.corpus)
    projection.save(root / "demo-proj")
    projected = ProjectedRetriever(encoder, projection, raw)
    retrievers = {"raw": DenseRetriever(encoder, raw), "projected": projected,
                  "hybrid": HybridRetriever(projected, BM25Retriever(test.corpus))}
    return Demo(encoder, projection, root / "demo-proj", retrievers)


def answer_above_post(ids: list[str]) -> bool | None:
    """Whether the answer ranks above the forum post in `ids` (None when neither is there)."""
    rank = {doc: i for i, doc in enumerate(ids)}
    if ANSWER not in rank and POST not in rank:
        return None
    return rank.get(ANSWER, len(ids)) < rank.get(POST, len(ids))


def answer_first_projection(encoder: Any, corpus: Any) -> Any:
    """A QK projection (scale 10, bias -5) whose query map lifts the answer over the post for QUERY (see above)."""
    import numpy as np

    from qkrag.embed.encoders import EmbedOptions, embed
    from qkrag.projection.model import QKProjection

    q = embed(encoder, [QUERY], "query", EmbedOptions(progress=False))[0]
    texts = dict(zip(corpus.ids, corpus.contents))
    a, p = embed(encoder, [texts[ANSWER], texts[POST]], "document", EmbedOptions(progress=False))
    diff = a - p
    c = 2 * max(0.0, -float(q @ diff)) / float(diff @ diff) + 0.5
    d = encoder.dimension
    projection = QKProjection.identity(d, encoder.fingerprint)
    Q = np.eye(d, dtype=np.float32) + c * np.outer(diff, q / float(q @ q)).astype(np.float32)
    projection._set_weights(Q, np.eye(d, dtype=np.float32), 10.0, -5.0)
    return projection


@dataclass
class TrainedDemo:
    """The demo indexed by `qkrag index --projection` with a trained projection, and what `qkrag search
    --projection -k 10` returns for every test query: the ranking every vector store must reproduce."""

    encoder: Any
    projection: Any
    projection_dir: Path
    chroma: Path
    collection: str
    ids: list[str]
    texts: list[str]
    queries: list[str]
    expected: list[list[str]]  # ids, best first, per query
    probabilities: list[list[float]]  # σ of each expected hit


def qkrag_cli(*args: str) -> str:
    """Run the qkrag CLI in this process (the encoder and embedding cache stay warm); its stdout."""
    from typer.testing import CliRunner

    from qkrag.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def train_projection(encoder: Any) -> Any:
    """A QK projection trained on the demo's train split, last epoch kept (selection keeps the identity on a corpus
    this small, and a store ranks any K·v alike when every |K·v| is 1): K moves, so |K·v| varies between documents
    and a store's cosine of the bare vectors no longer ranks like qkrag."""
    from qkrag.projection.data import load_training_pairs
    from qkrag.projection.model import QKProjection
    from qkrag.projection.train import TrainConfig

    pairs = load_training_pairs(DEMO, encoder, split="train")[0]
    return QKProjection(config=TrainConfig(select=False, epochs=5, progress=False, seed=0)).fit(pairs)


def build_trained_demo(root: Path) -> TrainedDemo:
    import json

    from qkrag.data import load_beir
    from qkrag.embed.encoders import make_encoder

    encoder = make_encoder()
    test = load_beir(DEMO, "test")
    projection = train_projection(encoder)
    projection.save(root / "trained-proj")
    chroma = root / "chroma"
    qkrag_cli("index", DEMO, "-c", "demo", "--path", chroma, "--projection", root / "trained-proj")
    queries = [test.queries[q] for q in sorted(test.qrels)]
    found = json.loads(qkrag_cli("search", *queries, "-c", "demo", "--path", chroma, "--projection",
                                 root / "trained-proj", "-k", "10", "--json"))
    return TrainedDemo(encoder, projection, root / "trained-proj", chroma, "demo", list(test.corpus.ids),
                       list(test.corpus.contents), queries, [[h["id"] for h in row["hits"]] for row in found],
                       [[h["probability"] for h in row["hits"]] for row in found])

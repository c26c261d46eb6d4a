"""Chroma apps and qkrag collections: registration on `import qkrag`, a portable configuration, plain chromadb
scripts that reopen a `qkrag index` collection and query it by text, and `qkrag index --adopt`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkrag import cli
from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.errors import IndexMismatchError
from tests.fakes import random_projection

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
QUERY = "why does my dough stay flat"


def python(code: str, **env: str) -> str:
    """Run `code` in a fresh interpreter (the source tree on its path, offline: no model hub) and return stdout."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    environment = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_projection_is_found_by_hash_not_by_path(tmp_path, monkeypatch, fake_encoder):
    from qkrag.integrations.chroma import PROJECTION_PATH_ENV, find_projection, projection_store, store_projection
    from qkrag.errors import InputError

    random_projection(32, fake_encoder.fingerprint).save(tmp_path / "proj")
    sha = store_projection(tmp_path / "proj")
    assert find_projection(sha, "proj") == projection_store() / sha
    (projection_store() / sha / "model.safetensors").write_bytes(b"garbage")  # a damaged copy is never used
    with pytest.raises(InputError, match=PROJECTION_PATH_ENV):
        find_projection(sha, "proj")
    monkeypatch.setenv(PROJECTION_PATH_ENV, str(tmp_path))  # moved machines: point the search path at the copy
    assert find_projection(sha, "elsewhere") == tmp_path / "proj"


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    """`qkrag index data/demo --projection P` with the real model, on disk; P is a random (non-identity) projection."""
    from qkrag.embed.encoders import make_encoder

    root = tmp_path_factory.mktemp("chroma-demo")
    with pytest.MonkeyPatch.context() as patch:  # restored after set-up: later tests keep their own cache
        patch.setenv("QKRAG_CACHE_DIR", str(root / "cache"))  # module scope: the per-test cache is not set yet
        encoder = make_encoder()
        random_projection(encoder.dimension, encoder.fingerprint, seed=3, noise=0.05).save(root / "demo-proj")
        patch.chdir(root)
        try:
            cli.main(["index", str(DEMO), "--collection", "demo", "--path", str(root / "chroma"),
                      "--projection", "demo-proj", "--json"])
        except SystemExit as exit_:
            assert not exit_.code
    return root, encoder


def _plain_script(root: Path, collection: str, imports: str = "import qkrag") -> str:
    """A Chroma app: chromadb's own API, plus the one import that registers qkrag's embedding function."""
    return (f"{imports}\nimport chromadb, json\n"
            f"c = chromadb.PersistentClient({str(root / 'chroma')!r}).get_collection({collection!r})\n"
            f"r = c.query(query_texts=[{QUERY!r}], n_results=5, include=['distances'])\n"
            "print(json.dumps({'ids': r['ids'][0], 'distances': r['distances'][0]}))")


@pytest.mark.slow
def test_plain_chromadb_script_queries_a_qkrag_collection_by_text(demo_index, monkeypatch):
    from qkrag.projection.model import QKProjection
    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.index import ChromaIndex, DenseRetriever, IndexConfig

    root, encoder = demo_index
    monkeypatch.setenv("QKRAG_CACHE_DIR", str(root / "cache"))
    raw = ChromaIndex.for_encoder(IndexConfig(collection="demo", path=root / "chroma"), encoder, create=False)
    config = json.dumps(raw.collection.configuration_json)
    assert '"qkrag"' in config and str(root) not in config  # attached, and no absolute path stored
    expected = [h.id for h in DenseRetriever(encoder, raw).search([QUERY], k=5)[0]]
    got = json.loads(python(_plain_script(root, "demo"), QKRAG_CACHE_DIR=str(root / "cache")))
    assert got["ids"] == expected

    projection = QKProjection.load(root / "demo-proj")
    hits = ProjectedRetriever(encoder, projection, raw).search([QUERY], k=5)[0]
    name = ProjectedRetriever(encoder, projection, raw).index.name
    # reopened after importing only the export module (the stumble), from another working directory
    got = json.loads(python(_plain_script(root, name, "import qkrag.projection.export"),
                            QKRAG_CACHE_DIR=str(root / "cache")))
    assert got["ids"] == [h.id for h in hits]
    probability = 1 / (1 + np.exp(-(1 - np.asarray(got["distances"]) + projection.bias_)))  # what the docs say
    np.testing.assert_allclose(probability, [h.probability for h in hits], atol=1e-4)


@pytest.mark.slow
def test_adopt_takes_over_a_users_collection_of_the_same_encoder(tmp_path, capsys):
    from qkrag.embed.encoders import EmbedOptions, embed, make_encoder
    from qkrag.retrieval.index import IndexConfig, connect

    encoder = make_encoder()
    from qkrag.data import load_corpus

    corpus = load_corpus(DEMO)
    ids, texts = list(corpus.ids[:20]), list(corpus.contents[:20])
    client = connect(IndexConfig(path=tmp_path / "chroma"))  # qkrag's settings: Chroma allows one per folder
    mine = client.create_collection("mine", embedding_function=None, metadata={"owner": "me"})
    vectors = embed(encoder, texts, "document", EmbedOptions(progress=False))
    mine.add(ids=ids, embeddings=vectors, documents=texts)
    mine.add(ids=["extra"], embeddings=vectors[:1], documents=[texts[0]])  # theirs, not in the corpus: kept
    other = client.create_collection("other", embedding_function=None)
    other.add(ids=["x", "y"], embeddings=np.random.default_rng(0).normal(size=(2, 384)).astype(np.float32),
              documents=["a text", "another text"])
    args = [str(DEMO), "--path", str(tmp_path / "chroma"), "--json"]

    def index(*extra: str) -> int:
        try:
            cli.main(["index", *args, *extra])
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    assert index("-c", "mine") == 2 and "not made by qkrag" in capsys.readouterr().err  # refused without --adopt
    assert index("-c", "other", "--adopt") == 2 and "not this encoder's" in capsys.readouterr().err
    assert index("-c", "mine", "--adopt") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == 201 and out["unchanged"] == 20 and out["space"] == "l2"
    assert out["embedding_function"].startswith("qkrag")
    meta = client.get_collection("mine", embedding_function=None).metadata
    assert meta["owner"] == "me" and meta["qkrag:encoder"] == encoder.fingerprint


def test_chroma_embedding_function_gives_qkrag_logits(fake_encoder, tmp_path):
    import chromadb

    from qkrag.integrations.chroma import chroma_embedding_function, embedding_function_class

    projection = random_projection(32, fake_encoder.fingerprint)
    fn = chroma_embedding_function(projection, fake_encoder)
    assert isinstance(fn, embedding_function_class())
    docs = ["the cat sat on the mat", "bread rises with yeast", "heat pumps move heat"]
    queries = ["where did the cat sit", "why does bread rise"]
    dv = embed(fake_encoder, docs, "document", EmbedOptions(progress=False))
    qv = embed(fake_encoder, queries, "query", EmbedOptions(progress=False))
    dots = np.asarray(fn.embed_query(queries)) @ np.asarray(fn(docs)).T
    np.testing.assert_allclose(dots + projection.bias_, projection.score_matrix(qv, dv), atol=1e-5)

    client = chromadb.PersistentClient(str(tmp_path / "chroma"))  # own store: no clash with other tests
    collection = client.create_collection("qkrag-export-test", embedding_function=fn, configuration={"hnsw": {"space": "ip"}})
    collection.add(ids=["a", "b", "c"], documents=docs)
    result = collection.query(query_texts=queries, n_results=3, include=["distances"])
    best = np.argsort(-projection.score_matrix(qv, dv), 1)
    assert result["ids"] == [[["a", "b", "c"][j] for j in row] for row in best]
    np.testing.assert_allclose(fn.probability(result["distances"][0]),
                               np.sort(projection.predict_proba_matrix(qv, dv)[0])[::-1], atol=1e-4)


def test_chroma_embedding_function_from_a_saved_folder_and_mismatch(fake_encoder, tmp_path):
    from qkrag.integrations.chroma import chroma_embedding_function

    random_projection(32, fake_encoder.fingerprint).save(tmp_path / "p")
    fn = chroma_embedding_function(tmp_path / "p", fake_encoder)
    config = fn.get_config()
    assert str(tmp_path) not in json.dumps(config)  # portable: the weights' hash and the folder's name, no path
    assert config["projection_hint"] == "p" and len(config["projection_sha256"]) == 64
    random_projection(32, "another-encoder").save(tmp_path / "q")
    with pytest.raises(IndexMismatchError, match="another-encoder"):
        chroma_embedding_function(tmp_path / "q", fake_encoder)(["a document"])  # checked on first use


def test_the_embedding_function_named_in_the_docs_imports_and_gives_probabilities(tmp_path, fake_encoder):
    """`from qkrag.integrations.chroma import QkragEmbeddingFunction`, as docs/integrations.md says; its
    `probability` turns Chroma `ip` distances (1 − dot) into σ(s·q·k + b)."""
    from chromadb.api.types import EmbeddingFunction

    from qkrag.integrations.chroma import QkragEmbeddingFunction

    projection = random_projection(32, fake_encoder.fingerprint)
    projection.save(tmp_path / "p")
    function = QkragEmbeddingFunction(tmp_path / "p", fake_encoder)
    assert isinstance(function, EmbeddingFunction)
    docs = ["bread rises with yeast", "the cat sat on the mat"]
    distances = 1 - np.asarray(function(docs)) @ np.asarray(function.embed_query(["why does bread rise"])[0])
    expected = projection.predict_proba_matrix(fake_encoder.embed_batch(["why does bread rise"], "query"),
                                               fake_encoder.embed_batch(docs, "document"))[0]
    np.testing.assert_allclose(function.probability(distances), expected, atol=1e-5)

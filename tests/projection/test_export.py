"""Export: the projection as a sentence-transformers model and as a Chroma embedding function."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.errors import IndexMismatchError
from qkrag.projection.model import QKProjection


def _random_projection(d: int, encoder: str, seed: int = 0, rank: int | None = None) -> QKProjection:
    """A fitted-looking projection with arbitrary (non-identity) weights, so a test can tell Q from K."""
    rng = np.random.default_rng(seed)
    r = rank or d
    model = QKProjection.identity(d, encoder)
    model._set_weights(np.eye(r, d, dtype=np.float32) + 0.1 * rng.normal(size=(r, d)).astype(np.float32),
                       np.eye(r, d, dtype=np.float32) + 0.1 * rng.normal(size=(r, d)).astype(np.float32), 7.5, -3.0)
    return model


def test_chroma_embedding_function_gives_qkrag_logits(fake_encoder, tmp_path):
    import chromadb

    from qkrag.projection.export import ProjectedEmbeddingFunction, chroma_embedding_function

    projection = _random_projection(32, fake_encoder.fingerprint)
    fn = chroma_embedding_function(projection, fake_encoder)
    assert isinstance(fn, ProjectedEmbeddingFunction)
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
    from qkrag.projection.export import chroma_embedding_function

    _random_projection(32, fake_encoder.fingerprint).save(tmp_path / "p")
    fn = chroma_embedding_function(tmp_path / "p", fake_encoder)
    config = fn.get_config()
    assert str(tmp_path) not in json.dumps(config)  # portable: the weights' hash and the folder's name, no path
    assert config["projection_hint"] == "p" and len(config["projection_sha256"]) == 64
    _random_projection(32, "another-encoder").save(tmp_path / "q")
    with pytest.raises(IndexMismatchError, match="another-encoder"):
        chroma_embedding_function(tmp_path / "q", fake_encoder)(["a document"])  # checked on first use


@pytest.mark.slow
def test_sentence_transformers_export_scores_like_qkrag(tmp_path):
    """Loads the real all-MiniLM-L6-v2: encode_query · encode_document must be qkrag's logit − b within 1e-5."""
    from sentence_transformers import SentenceTransformer

    from qkrag.embed.encoders import make_encoder
    from qkrag.projection.export import EXPORT_INFO_FILE, export_sentence_transformer

    encoder = make_encoder()
    projection = _random_projection(encoder.dimension, encoder.fingerprint, rank=64)
    path = export_sentence_transformer(projection, tmp_path / "st")
    model = SentenceTransformer(str(path), device="cpu")
    queries = ["do statins reduce heart attacks", "what causes tides"]
    docs = ["Statins lower LDL cholesterol and cardiovascular events.", "The moon's gravity raises the oceans.",
            "Bread rises because yeast produces gas."]
    q = model.encode_query(queries, convert_to_numpy=True)
    d = model.encode_document(docs, convert_to_numpy=True)
    assert q.shape == (2, 64) and d.shape == (3, 64)
    qv = encoder.embed_batch(queries, "query")
    dv = encoder.embed_batch(docs, "document")
    expected = projection.score_matrix(qv, dv) - projection.bias_
    np.testing.assert_allclose(q @ d.T, expected, atol=1e-5)
    np.testing.assert_allclose(model.similarity(q, d).numpy(), expected, atol=1e-5)
    info = json.loads((path / EXPORT_INFO_FILE).read_text())
    assert info["bias"] == projection.bias_ and info["rank"] == 64

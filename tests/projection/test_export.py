"""Export: the projection as a sentence-transformers model and as a Chroma embedding function."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.projection.model import QKProjection


def _random_projection(d: int, encoder: str, seed: int = 0, rank: int | None = None) -> QKProjection:
    """A fitted-looking projection with arbitrary (non-identity) weights, so a test can tell Q from K."""
    rng = np.random.default_rng(seed)
    r = rank or d
    model = QKProjection.identity(d, encoder)
    model._set_weights(np.eye(r, d, dtype=np.float32) + 0.1 * rng.normal(size=(r, d)).astype(np.float32),
                       np.eye(r, d, dtype=np.float32) + 0.1 * rng.normal(size=(r, d)).astype(np.float32), 7.5, -3.0)
    return model


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


@pytest.mark.slow
def test_qkrag_export_routes_the_readme_query_like_qkrag(tmp_path, capsys):
    """`qkrag export`, then `SentenceTransformer(DIR)`: encode_query · encode_document equals qkrag's logit − b, the
    README query ranks the answer above the post as in qkrag; plain `encode` is the document route (the model card
    says so); the folder has ordinary permissions and a real model card; as `--model`, routes are honoured."""
    import stat

    from sentence_transformers import SentenceTransformer

    from qkrag import cli
    from qkrag.data import load_beir
    from qkrag.embed.encoders import SentenceTransformerEncoder, make_encoder
    from tests.integrations.demo import DEMO, QUERY, answer_above_post, answer_first_projection

    encoder = make_encoder()
    corpus = load_beir(DEMO, "test").corpus
    projection = answer_first_projection(encoder, corpus)
    projection.training_hash_ = "feedbeef" * 8
    projection.validation_ = {"ndcg@10": 0.7123, "gain_p_value": 0.01}
    projection.save(tmp_path / "proj")
    try:
        cli.main(["export", str(tmp_path / "proj"), "--out", str(tmp_path / "st"), "--json"])
    except SystemExit as exit_:
        assert not exit_.code
    out = json.loads(capsys.readouterr().out)
    assert out["rank"] == 384 and out["base_model"] == encoder.fingerprint

    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    docs = list(corpus.contents)
    q, d = model.encode_query([QUERY]), model.encode_document(docs)
    qv = embed(encoder, [QUERY], "query", EmbedOptions(progress=False))
    dv = embed(encoder, docs, "document", EmbedOptions(progress=False))
    logits = projection.score_matrix(qv, dv)
    np.testing.assert_allclose(q @ d.T, logits - projection.bias_, atol=1e-5)
    order = lambda scores: [corpus.ids[i] for i in np.argsort(-scores[0], kind="stable")]  # noqa: E731
    assert answer_above_post(order(q @ d.T)) is answer_above_post(order(logits)) is True
    assert answer_above_post(order(model.encode([QUERY]) @ d.T)) is False  # encode() = the document route

    for item in [tmp_path / "st", *(tmp_path / "st").rglob("*")]:
        mode = stat.S_IMODE(item.stat().st_mode)
        assert mode == (0o755 if item.is_dir() else 0o644), (item, oct(mode))
    card = (tmp_path / "st" / "README.md").read_text()
    for needle in (encoder.fingerprint, "| variant | qk |", "rank | 384", "feedbeef" * 8, "σ(s·q·k + b)", "0.7123",
                   "Plain `model.encode(texts)` takes the document route"):
        assert needle in card, needle

    exported = SentenceTransformerEncoder(str(tmp_path / "st"))  # the export used as --model: routes honoured
    assert "sides=" in exported.fingerprint
    np.testing.assert_allclose(exported.embed_batch([QUERY], "query"), q, atol=1e-5)
    np.testing.assert_allclose(exported.embed_batch(docs[:3], "document"), d[:3], atol=1e-5)


def _card_info(validation: dict, calibration: dict | None) -> dict:
    return {"qkrag_version": "0", "variant": "qk", "bias": -3.0, "scale_folded_into_query_route": 7.5, "rank": 4,
            "dimension": 4, "encoder": "enc", "base_model": "m", "projection_sha256": "", "training_data_hash": "",
            "selected": "trained for 4 epochs on all pairs", "validation": validation, "calibration": calibration}


def test_the_model_card_shows_held_out_figures_only_and_says_which():
    from qkrag.projection.export import model_card

    # as an older qkrag recorded a CV-trained projection: training-pair nDCG at the top, the CV figures inside
    cv_run = {"ndcg@10": 0.957, "init_ndcg@10": 0.9, "gain_p_value": 1.0, "calibrated": True,
              "cv": {"ndcg": 0.847, "init_ndcg": 0.818, "gain": 0.029, "best_epoch": 4}, "cv_folds": 5,
              "n_queries": 60}
    card = model_card(_card_info(cv_run, None))
    assert "## Held-out figures (held out by 5-fold cross-validation over the training queries)" in card
    assert "0.847" in card and "0.957" not in card and "gain_p_value" not in card
    assert "an **uncalibrated** probability (uncalibrated: not recorded)" in card
    split = {"ndcg@10": 0.81, "init_ndcg@10": 0.8, "n_queries": 40, "figures": "held-out validation queries"}
    calibrated = {"calibrated": True, "n_queries": 40, "against": "judged queries", "method": "validation split",
                  "held_out_ece": 0.042}
    card = model_card(_card_info(split, calibrated))
    assert "## Held-out figures (held-out validation queries (never trained on)" in card
    assert "a calibrated probability (calibrated on 40 held-out judged queries (validation split), held-out ECE " \
           "0.042)" in card

"""`--backend onnx-int8`: backend choice (fast) and the real export, quantisation and cache on the shipped model (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.embed.encoders import SentenceTransformerEncoder
from qkrag.embed.onnx import OnnxInt8Encoder, with_backend
from qkrag.errors import InputError


def test_torch_is_the_encoder_itself_and_unknown_backends_or_api_models_are_refused(fake_encoder):
    assert with_backend(fake_encoder, "torch") is fake_encoder and with_backend(fake_encoder, None) is fake_encoder
    with pytest.raises(InputError, match="is not a backend"):
        with_backend(fake_encoder, "tensorrt")
    with pytest.raises(InputError, match="local sentence-transformers models"):
        with_backend(fake_encoder, "onnx-int8")


def test_int8_vectors_are_another_encoder_identity():
    base = SentenceTransformerEncoder(query_prefix="q: ")
    onnx = with_backend(base, "onnx-int8")
    assert isinstance(onnx, OnnxInt8Encoder)
    assert onnx.fingerprint == base.fingerprint + "|onnx-int8" != base.fingerprint


@pytest.mark.slow
def test_export_is_cached_by_model_and_vectors_stay_close_to_torch(tmp_path, monkeypatch):
    import qkrag.embed.onnx as module

    texts = ["The cat sat on the warm mat by the fire.", "Photosynthesis turns sunlight into sugar. " * 20,
             "Bicycle chains need oil every few hundred kilometres."]
    base = SentenceTransformerEncoder()
    encoder = OnnxInt8Encoder(base, cache_dir=tmp_path)
    got = encoder.embed_batch(texts, "document")
    want = base.embed_batch(texts, "document")
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert got.shape == want.shape and cosine.min() > 0.98, cosine  # per-tensor int8 scales fall below this
    assert not np.allclose(got, want, atol=1e-4)  # it is really the quantised model
    files = list(tmp_path.rglob("*.onnx"))
    assert [f.name for f in files] == ["model_int8.onnx"]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(module, "export_int8", no_export)
    again = OnnxInt8Encoder(SentenceTransformerEncoder(), cache_dir=tmp_path)
    np.testing.assert_allclose(again.embed_batch(texts, "document"), got, atol=1e-6)
    other = OnnxInt8Encoder(SentenceTransformerEncoder(), cache_dir=tmp_path)
    monkeypatch.setattr(module, "folder_identity", lambda path: "changed-weights")  # the source model changed
    with pytest.raises(AssertionError, match="exported again"):
        other.embed_batch(texts, "document")

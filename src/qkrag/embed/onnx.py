"""A faster CPU encoder: the sentence-transformers model's transformer exported to ONNX and quantised to int8.

`OnnxInt8Encoder` wraps a `SentenceTransformerEncoder`: the transformer runs in ONNX Runtime with dynamic int8
quantisation of its weights (`onnxruntime.quantization.quantize_dynamic`); tokenisation and the model's own remaining
modules (pooling, normalisation) are the sentence-transformers ones, so the vectors differ from torch's only by the
quantisation error. The export is made once with `torch.onnx.export` and kept in the cache folder, keyed by the source
model's identity (its name and the stat of its files) and the torch / onnxruntime versions, so a changed model is
exported again, never served from a stale file.

Why not sentence-transformers' own `backend="onnx"`: it goes through `optimum`, whose ONNX package pins
transformers < 4.58 while sentence-transformers 6 needs transformers 5; the two cannot be installed together. The
export and the quantiser used here are the same engines optimum calls (torch's ONNX exporter, ONNX Runtime's
quantiser).

The vectors are not torch's: the fingerprint says `onnx-int8`, so they get their own cache entries and their own
index, and a projection trained on torch vectors refuses them (the encoder identity differs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qkrag.atomic import atomic_folder
from qkrag.cache import content_hash, default_cache_dir
from qkrag.embed.encoders import Encoder, SentenceTransformerEncoder, Side, folder_identity, resolve_model_path
from qkrag.errors import fail

BACKENDS = ("torch", "onnx-int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxInt8Encoder(Encoder):
    """`base`'s model with its transformer in ONNX Runtime, weights quantised to int8 (dynamic quantisation)."""

    def __init__(self, base: SentenceTransformerEncoder, *, cache_dir: str | Path | None = None, threads: int = 0):
        self.base = base
        self.name = f"{base.name}|onnx-int8"
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "onnx"
        self.threads = threads  # 0: ONNX Runtime's default (all cores)
        self._session = None

    @property
    def fingerprint(self) -> str:
        return f"{self.base.fingerprint}|onnx-int8"

    @property
    def dimension(self) -> int:
        return self.base.dimension

    def export_key(self) -> str:
        """What the exported file is keyed by: the source model (name, path, file stat) and the exporting engines."""
        import onnxruntime
        import torch

        path = resolve_model_path(self.base.model_name)
        return content_hash("onnx-int8-v2", self.base.model_name, path, folder_identity(path), torch.__version__,
                            onnxruntime.__version__)[:16]

    def model_path(self) -> Path:
        """The quantised ONNX file, exported (once per source model) when missing."""
        folder = self.cache_dir / self.export_key()
        target = folder / "model_int8.onnx"
        if not target.exists():
            with atomic_folder(folder) as tmp:
                export_int8(self.base, tmp)
        return target

    @property
    def session(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            self._session = onnxruntime.InferenceSession(str(self.model_path()), options,
                                                         providers=["CPUExecutionProvider"])
        return self._session

    def warm_up(self) -> None:
        self.session  # noqa: B018 (exports when needed, then loads)

    def embed_batch(self, texts: Sequence[str], side: Side) -> np.ndarray:
        import torch

        prefix = self.base.query_prefix if side == "query" else self.base.document_prefix
        model = self.base.model
        names = {i.name for i in self.session.get_inputs()}
        out = []
        for start in range(0, len(texts), self.base.batch_size):
            chunk = [prefix + t for t in texts[start : start + self.base.batch_size]]
            features = _tokenize(model, chunk)
            feed = {k: features[k].numpy().astype(np.int64) for k in _INPUTS if k in names}
            tokens = self.session.run(None, feed)[0]
            features = {"token_embeddings": torch.from_numpy(tokens), "attention_mask": features["attention_mask"]}
            with torch.no_grad():
                for module in list(model)[1:]:  # pooling, normalisation...: the model's own modules, unchanged
                    features = module(features)
            vectors = features["sentence_embedding"].numpy()
            if self.base.normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out.append(vectors.astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dimension), np.float32)


def export_int8(base: SentenceTransformerEncoder, folder: Path) -> Path:
    """Export `base`'s transformer to `folder`/model.onnx (torch's exporter) and quantise its weights to int8
    (`folder`/model_int8.onnx, ONNX Runtime's dynamic quantiser). Returns the quantised file."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = base.model
    transformer = list(model)[0]
    auto = getattr(transformer, "auto_model", None)
    if auto is None:
        raise fail(base.model_name, "has no transformer module to export (its first module is "
                   f"{type(transformer).__name__})", "use --backend torch for this model")
    sample = _tokenize(model, ["an example sentence to trace the export with"])
    names = [k for k in _INPUTS if k in sample]

    class _Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.auto = auto

        def forward(self, *args):
            return self.auto(**dict(zip(names, args)), return_dict=True).last_hidden_state

    axes = {k: {0: "batch", 1: "tokens"} for k in names} | {"token_embeddings": {0: "batch", 1: "tokens"}}
    plain = folder / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(_Tokens().eval(), tuple(sample[k] for k in names), str(plain), input_names=names,
                          output_names=["token_embeddings"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantized = folder / "model_int8.onnx"
    # Per-channel int8 weights on the MatMuls only: per-tensor scales (the default) move the vectors much further from
    # torch's (tests/embed/test_onnx.py holds the cosine bound); embeddings and layer norms stay float.
    quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    plain.unlink()
    return quantized


def _tokenize(model, texts: list[str]) -> dict:
    """sentence-transformers' tokenisation (`preprocess` from 6.x on, `tokenize` before)."""
    return (getattr(model, "preprocess", None) or model.tokenize)(texts)


def with_backend(encoder: Encoder, backend: str | None) -> Encoder:
    """`encoder` on `backend`: "torch" (or None) as it is; "onnx-int8" wraps a sentence-transformers encoder."""
    if backend in (None, "", "torch"):
        return encoder
    if backend not in BACKENDS:
        raise fail("--backend", f"{backend!r} is not a backend", f"use one of {', '.join(BACKENDS)}")
    if not isinstance(encoder, SentenceTransformerEncoder):
        raise fail("--backend onnx-int8", f"applies to local sentence-transformers models, not {encoder.name!r}",
                   "drop --backend, or use a local model")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise fail("--backend onnx-int8", "needs onnxruntime", "pip install 'qkrag[onnx]'") from None
    return OnnxInt8Encoder(encoder)

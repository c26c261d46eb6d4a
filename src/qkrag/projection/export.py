"""Taking a trained projection out of qkrag: a sentence-transformers model, or a Chroma embedding function.

Both give two routes: documents get k = K·v, queries get s·Q·v (the scale is folded into the query side), so a plain
dot product between them is qkrag's logit minus the bias b. Ranking needs only the dot product; the bias is written
aside (in `qkrag_projection.json` for the model, `probability()` on the function) for whoever wants σ(dot + b).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag import __version__
from qkrag.errors import fail

if TYPE_CHECKING:
    from qkrag.embed.encoders import Encoder
    from qkrag.projection.model import Projection

EXPORT_INFO_FILE = "qkrag_projection.json"


def _route_weights(projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """(query weight s·Q, document weight K), each r × d."""
    projection.check_fitted()
    return (projection.scale_ * projection.Q_).astype(np.float32), projection.K_.astype(np.float32)


def to_sentence_transformer(projection: Projection, base_model: str | None = None):
    """A `SentenceTransformer`: the base model (default: the shipped all-MiniLM-L6-v2), then a Router with a
    bias-free linear layer per side. `encode_query(x) · encode_document(y)` = qkrag's logit − b."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Router

    from qkrag.embed.encoders import DEFAULT_MODEL, resolve_model_path

    wq, wk = _route_weights(projection)
    base = SentenceTransformer(resolve_model_path(base_model or DEFAULT_MODEL), device="cpu")
    dim = base.get_embedding_dimension() if hasattr(base, "get_embedding_dimension") else \
        base.get_sentence_embedding_dimension()
    if dim != projection.dimension_:
        raise fail(base_model or DEFAULT_MODEL, f"makes {dim}-dimensional vectors; the projection expects "
                   f"{projection.dimension_}", "export with the base model the projection was trained on")

    def dense(weight: np.ndarray):
        return Dense(weight.shape[1], weight.shape[0], bias=False, activation_function=None,
                     init_weight=torch.from_numpy(weight.copy()))

    router = Router.for_query_document(query_modules=[dense(wq)], document_modules=[dense(wk)])
    return SentenceTransformer(modules=[*base, router], similarity_fn_name="dot", device="cpu")


def export_sentence_transformer(projection: Projection, path: str | os.PathLike[str],
                                base_model: str | None = None) -> Path:
    """Save the projection as a sentence-transformers model folder, loadable with `SentenceTransformer(path)`.
    Written to a temporary folder and renamed into place, so a failed export leaves no half model behind."""
    path = Path(path)
    model = to_sentence_transformer(projection, base_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        model.save(str(tmp))
        info = {"qkrag_version": __version__, "variant": projection.variant, "bias": projection.bias_,
                "scale_folded_into_query_route": projection.scale_, "rank": projection.rank_,
                "encoder": getattr(projection, "encoder_fingerprint_", ""),
                "probability": "sigmoid(encode_query(q) . encode_document(d) + bias)"}
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------------------ chroma

_EF_CLASS: type | None = None


def _embedding_function_class() -> type:
    """Build (once) the Chroma embedding function class; chromadb is imported only when someone asks for it."""
    global _EF_CLASS
    if _EF_CLASS is not None:
        return _EF_CLASS
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
    from chromadb.utils.embedding_functions import register_embedding_function

    class ProjectedEmbeddingFunction(EmbeddingFunction[Documents]):
        """Chroma embedding function: documents -> K·v, queries -> s·Q·v. Use with an `ip` collection; Chroma's
        distance is then 1 − (logit − b), and `probability(distance)` turns it back into σ(logit)."""

        def __init__(self, projection: Projection | str | os.PathLike[str], encoder: Encoder | str | None = None):
            from qkrag.embed.encoders import EmbedOptions, Encoder, make_encoder
            from qkrag.projection.model import QKProjection

            self._projection_path = None if hasattr(projection, "Q_") else str(projection)
            self.projection = projection if hasattr(projection, "Q_") else QKProjection.load(projection)
            self._model = encoder if isinstance(encoder, str) or encoder is None else None
            self.encoder = encoder if isinstance(encoder, Encoder) else make_encoder(encoder)
            self.projection.check_encoder(self.encoder.fingerprint, self.encoder.dimension, "projection")
            self._options = EmbedOptions(progress=False)

        def _embed(self, input: Sequence[str], side: str) -> np.ndarray:
            from qkrag.embed.encoders import embed

            return embed(self.encoder, list(input), side, self._options)  # type: ignore[arg-type]

        def __call__(self, input: Documents) -> Embeddings:
            return list(self.projection.transform_documents(self._embed(input, "document")))

        def embed_query(self, input: Documents) -> Embeddings:
            p = self.projection
            return list(p.scale_ * p.transform_queries(self._embed(input, "query")))

        def probability(self, distances: Any) -> np.ndarray:
            """σ(logit) from Chroma `ip` distances (1 − dot)."""
            p = self.projection
            return 1.0 / (1.0 + np.exp(-(1.0 - np.asarray(distances, dtype=np.float64) + p.bias_)))

        @staticmethod
        def name() -> str:
            return "qkrag_projection"

        def default_space(self):
            return "ip"

        def supported_spaces(self):
            return ["ip"]

        def get_config(self) -> dict[str, Any]:
            if self._projection_path is None:
                return {}  # an in-memory projection cannot be rebuilt from a config; save() it and pass the path
            return {"projection": self._projection_path, "model": self._model}

        @staticmethod
        def build_from_config(config: dict[str, Any]):
            if not config.get("projection"):
                raise fail("qkrag_projection embedding function", "its config names no projection folder",
                           "create the collection with ProjectedEmbeddingFunction(path_to_saved_projection)")
            return ProjectedEmbeddingFunction(config["projection"], config.get("model"))

    register_embedding_function(ProjectedEmbeddingFunction)
    _EF_CLASS = ProjectedEmbeddingFunction
    return _EF_CLASS


def chroma_embedding_function(projection: Projection | str | os.PathLike[str], encoder: Encoder | str | None = None):
    """A Chroma `EmbeddingFunction` for any Chroma app: documents -> K·v, queries (`embed_query`) -> s·Q·v.
    `projection` is a fitted projection or a saved folder; `encoder` an `Encoder`, a model name, or None (default)."""
    return _embedding_function_class()(projection, encoder)


def __getattr__(name: str):  # `from qkrag.projection.export import ProjectedEmbeddingFunction` builds the class on demand
    if name == "ProjectedEmbeddingFunction":
        return _embedding_function_class()
    raise AttributeError(name)

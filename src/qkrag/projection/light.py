"""Apply a saved projection with numpy and safetensors only: no torch, no sentence-transformers, no qkrag training code.

For a service that already has its embeddings (from any encoder process, or an embeddings API) and only needs the
projection on top: `LightProjection.load(folder)` reads the `model.safetensors` and `config.json` that
`projection.save()` / `qkrag train` write, and gives the same numbers as the full `QKProjection`:

    from qkrag.projection.light import LightProjection
    p = LightProjection.load("runs/demo-proj")
    keys = p.transform_documents(document_vectors)        # what a projected index stores: K·v
    probs = p.predict_proba_matrix(query_vectors, document_vectors)   # σ(s·q·k + b)

Importing this module imports numpy, safetensors.numpy and the standard library only (a test checks that torch
stays out of sys.modules). `weights_hash(folder)` is the projection's content identity, used to find a projection
again from a Chroma collection's configuration (see qkrag.projection.export).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qkrag.errors import fail

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def weights_hash(folder: str | os.PathLike[str]) -> str:
    """SHA-256 of the folder's `model.safetensors`: Q, K, scale, bias and the variant (in its metadata), nothing
    that does not change a score. Two folders with one hash apply the same projection."""
    path = Path(folder) / WEIGHTS_FILE
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise fail(str(folder), f"is not a saved projection ({WEIGHTS_FILE}: {err.strerror or err})",
                   "give the folder that projection.save() or `qkrag train` wrote") from None
    return digest.hexdigest()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # σ without overflow for large |x|


@dataclass(frozen=True)
class LightProjection:
    """A saved projection as plain arrays: q = Q·v, k = K·v, P(relevant) = σ(s·q·k + b)."""

    Q: np.ndarray
    K: np.ndarray | None  # None: documents stay as they are (query adapter)
    scale: float
    bias: float
    variant: str
    encoder: str
    sha256: str

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> LightProjection:
        from safetensors.numpy import load as st_load

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            tensors = st_load((folder / WEIGHTS_FILE).read_bytes())
        except (OSError, ValueError) as err:
            raise fail(str(folder), f"is not a readable saved projection ({err})",
                       "give the folder that projection.save() or `qkrag train` wrote") from None
        except Exception as err:  # safetensors' own error on a truncated or foreign file
            raise fail(str(folder / WEIGHTS_FILE), f"is not a readable safetensors file ({err})",
                       "the folder is corrupt: train or save the projection again") from None
        if "Q" not in tensors or "scale" not in tensors or "bias" not in tensors:
            raise fail(str(folder / WEIGHTS_FILE), f"holds {sorted(tensors)}, not a qkrag projection's Q, scale "
                       "and bias", "give the folder that projection.save() or `qkrag train` wrote")
        variant = str(config.get("variant", ""))
        Q = np.ascontiguousarray(tensors["Q"], dtype=np.float32)
        K = tensors.get("K")
        if K is None and variant != "query_adapter":
            K = Q  # symmetric: one map for both sides
        return cls(Q, None if K is None else np.ascontiguousarray(K, dtype=np.float32),
                   float(tensors["scale"][0]), float(tensors["bias"][0]), variant, str(config.get("encoder", "")),
                   weights_hash(folder))

    @property
    def dimension(self) -> int:
        return int(self.Q.shape[1])

    def _check(self, vectors: np.ndarray, what: str) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dimension:
            raise fail(what, f"have shape {v.shape}; the projection takes {self.dimension}-d vectors",
                       "embed with the encoder the projection was trained on")
        return v

    def transform_queries(self, vectors: np.ndarray) -> np.ndarray:
        """q = Q·v per row."""
        return self._check(vectors, "query vectors") @ self.Q.T

    def transform_documents(self, vectors: np.ndarray) -> np.ndarray:
        """k = K·v per row (the vectors unchanged for a query adapter)."""
        v = self._check(vectors, "document vectors")
        return v.copy() if self.K is None else v @ self.K.T

    def score_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """Logits s·q·k + b, (n_queries, n_documents)."""
        q, k = self.transform_queries(query_vectors), self.transform_documents(document_vectors)
        return self.scale * (q @ k.T) + self.bias

    def predict_proba_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        return _sigmoid(self.score_matrix(query_vectors, document_vectors))

    def probability(self, dot: np.ndarray | float) -> np.ndarray:
        """σ(s·(q·k) + b) from raw projected dot products (an `ip` index over K·v returns those)."""
        return _sigmoid(self.scale * np.asarray(dot, dtype=np.float64) + self.bias)

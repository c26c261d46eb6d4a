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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.errors import fail

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
VARIANT_NAMES = ("qk", "symmetric", "query_adapter")
#: Bounds on the probability's scale s and bias b: a fitted σ(s·q·k + b) lives far inside them, and values beyond say
#: training diverged (every probability 0 or 1), so such a projection is never saved or loaded.
MAX_SCALE = 1e4
MAX_BIAS = 1e4


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


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """σ(x) in float64 without overflow, with full relative precision for tiny probabilities (no 1 - tanh
    cancellation): the one σ every qkrag projection uses."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def check_scale_bias(scale: float, bias: float, where: str) -> None:
    """Refuse a probability's (s, b) that is not finite, not positive (it would invert the ranking) or beyond the
    bounds a fitted σ stays in (training diverged)."""
    if not (math.isfinite(scale) and math.isfinite(bias)):
        raise fail(where, f"has a non-finite probability scale {scale!r} or bias {bias!r}",
                   "training diverged: train again with a lower learning rate (--lr)")
    if not 0 < scale <= MAX_SCALE or abs(bias) > MAX_BIAS:
        raise fail(where, f"has probability scale {scale:.6g} and bias {bias:.6g}, outside 0 < s <= {MAX_SCALE:g}, "
                   f"|b| <= {MAX_BIAS:g}", "training diverged: train again with a lower learning rate (--lr)")


def encode_weights(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with a canonical header (keys sorted, compact JSON): the same weights always give the same
    bytes, so `weights_hash` is a content identity. safetensors itself writes the metadata in hash-map order."""
    from safetensors.numpy import save as st_save

    raw = st_save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)  # the data section stays 8-byte aligned, as safetensors writes it
    return len(header).to_bytes(8, "little") + header + raw[8 + n:]


def _corrupt(where: str | Path, problem: str) -> Exception:
    return fail(str(where), problem, "the folder is corrupt, mixed or from another qkrag: train or save the "
                "projection again")


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # invalid JSON, not UTF-8, unreadable
        raise _corrupt(folder / CONFIG_FILE, f"is not a readable projection config ({err})") from None
    if not isinstance(config, dict):
        raise _corrupt(folder / CONFIG_FILE, f"holds a JSON {type(config).__name__}, not a projection config object")
    if config.get("format_version") != FORMAT_VERSION:
        raise fail(str(folder), f"has projection format {config.get('format_version')!r}; this qkrag reads format "
                   f"{FORMAT_VERSION}", "retrain the projection with this qkrag version, or upgrade qkrag")
    if config.get("variant") not in VARIANT_NAMES:
        raise _corrupt(folder / CONFIG_FILE, f"names variant {config.get('variant')!r}, not one of {VARIANT_NAMES}")
    return config


def _read_tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load as st_load

    try:
        return st_load((folder / WEIGHTS_FILE).read_bytes())
    except OSError as err:
        raise _corrupt(folder / WEIGHTS_FILE, f"cannot be read ({err.strerror or err})") from None
    except Exception as err:  # safetensors raises its own SafetensorError on a truncated or foreign file
        raise _corrupt(folder / WEIGHTS_FILE, f"is not a readable safetensors file ({err})") from None


def _check_agreement(folder: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Shapes, finiteness, and that config.json describes these weights (dimension, rank, scale, bias)."""
    where = folder / WEIGHTS_FILE
    if not {"Q", "scale", "bias"} <= set(tensors):
        raise _corrupt(where, f"holds {sorted(tensors)}, not a qkrag projection's Q, scale and bias")
    Q, variant = tensors["Q"], config["variant"]
    if Q.ndim != 2 or 0 in Q.shape:
        raise _corrupt(where, f"has Q of shape {Q.shape}; a projection's Q is a non-empty rank × dimension matrix")
    for name in ("scale", "bias"):
        if tensors[name].shape != (1,):
            raise _corrupt(where, f"has {name} of shape {tensors[name].shape}; it must hold exactly one number")
    if variant == "qk" and "K" not in tensors:
        raise _corrupt(where, "has no K, which a qk projection needs")
    if "K" in tensors and (variant != "qk" or tensors["K"].shape != Q.shape):
        raise _corrupt(where, f"has K of shape {tensors['K'].shape} beside Q of shape {Q.shape} in a {variant!r} "
                       "projection; a qk projection's K has Q's shape, and other variants have no K")
    if variant == "query_adapter" and Q.shape[0] != Q.shape[1]:
        raise _corrupt(where, f"has Q of shape {Q.shape}; a query adapter's Q is square")
    for name, array in tensors.items():
        if not np.isfinite(array).all():
            raise _corrupt(where, f"has NaN or infinite values in {name}")
    expected = {"dimension": int(Q.shape[1]), "rank": int(Q.shape[0]), "scale": float(tensors["scale"][0]),
                "bias": float(tensors["bias"][0])}
    for key, value in expected.items():
        said = config.get(key)
        if said is not None and (isinstance(said, bool) or not isinstance(said, (int, float)) or
                                 not math.isclose(float(said), value, rel_tol=1e-6, abs_tol=1e-12)):
            raise _corrupt(folder, f"config.json says {key} {said!r}, but {WEIGHTS_FILE} has {value!r}")
    check_scale_bias(expected["scale"], expected["bias"], str(folder))


def read_projection(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, tensors) of a saved projection folder, checked: a known format and variant, well-formed finite
    weights, and a config that describes those weights. Every reader of a projection folder goes through here;
    anything else is one clear error naming the file."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise fail(str(folder), f"is not a saved projection (needs {CONFIG_FILE} and {WEIGHTS_FILE})",
                   "give the folder that projection.save() or `qkrag train` wrote")
    config = _read_config(folder)
    tensors = _read_tensors(folder)
    _check_agreement(folder, config, tensors)
    return config, tensors


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
        config, tensors = read_projection(folder)
        variant = str(config["variant"])
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
        return sigmoid(self.score_matrix(query_vectors, document_vectors))

    def probability(self, dot: np.ndarray | float) -> np.ndarray:
        """σ(s·(q·k) + b) from raw projected dot products (an `ip` index over K·v returns those)."""
        return sigmoid(self.scale * np.asarray(dot, dtype=np.float64) + self.bias)

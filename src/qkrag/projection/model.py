"""The projection: a small learned map that turns frozen embeddings into a probability of relevance.

    q = Q·v(query),   k = K·v(document),   P(relevant) = σ(s·q·k + b)

σ is called calibrated only when (s, b) were fitted on enough held-out queries (`calibration_`, see
`qkrag.projection.calibrate`); otherwise it is a ranking score on a probability's scale, and says so.

The encoder stays frozen, so a projection trains in seconds on CPU, and re-indexing is one matrix product over the
document vectors already stored (K·V), never a re-embedding. Three estimators, scikit-learn style (hyperparameters in
`__init__`, `fit` returns self, learned attributes end in `_`):

- `QKProjection`: separate Q and K (relevance is asymmetric: a claim is not its evidence), r ≤ d rows each;
- `SymmetricProjection`: one shared map M, σ(s·(M·a)·(M·b) + b), for item-to-item similarity;
- `QueryAdapter`: K = I, only queries move (LlamaIndex's linear adapter); the baseline, and documents stay as stored.

Each starts from the raw dot product (identity, or a PCA truncation when r < d), so training can only move away from
raw cosine when the validation split says that helps. Inputs are embeddings (float32 numpy); training data is a
`Pairs`: query vectors, the positive document's row, optional hard negatives, and the document matrix. The training
loop and the losses live in `qkrag.projection.train`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from qkrag import __version__
from qkrag.errors import IndexMismatchError, fail
from qkrag.projection.calibrate import uncalibrated
from qkrag.projection.data import Pairs, check_vectors
from qkrag.projection.light import (CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, check_scale_bias, encode_weights,
                                    read_projection, sigmoid)

if TYPE_CHECKING:
    from qkrag.embed.encoders import Encoder
    from qkrag.projection.train import TrainConfig


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return sigmoid(x).astype(np.float32)


class Projection:
    """What every variant shares: validation, scoring, persistence. Subclasses set `variant` and how K is tied."""

    variant: ClassVar[str]
    tied: ClassVar[bool] = False  # K is Q (symmetric)
    query_only: ClassVar[bool] = False  # K = I (query adapter)

    def __init__(self, rank: int | None = None, config: TrainConfig | None = None):
        self.rank = rank
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank!r}, config={self.config!r})"

    @classmethod
    def identity(cls, dimension: int, encoder: str = "", scale: float = 1.0, bias: float = 0.0) -> Projection:
        """The untrained starting point: Q = K = I, so the logit is s·(raw dot product) + b. A baseline that goes
        everywhere a trained projection goes (index, export), and what model selection falls back to."""
        model = cls()
        eye = np.eye(dimension, dtype=np.float32)
        model._set_weights(eye, eye, scale, bias)
        model.encoder_fingerprint_ = encoder
        model.selected_ = "identity"
        model.history_, model.validation_, model.training_hash_ = [], {}, ""
        model.calibration_ = uncalibrated("an identity map with a given scale and bias, fitted on no queries")
        return model

    # ---- fitting

    def fit(self, pairs: Pairs, validation: Pairs | None = None) -> Projection:
        """Train on `pairs`; validate (early stopping, model selection, calibration) on `validation`, or on a
        seeded split of `pairs` by query. Returns self."""
        from qkrag.projection.train import MapShape, TrainConfig, fit_maps

        if not isinstance(pairs, Pairs):
            raise fail("fit", f"expected qkrag.projection.model.Pairs, got {type(pairs).__name__}",
                       "build training data with pairs_from_collection or pairs_from_dataset")
        if self.rank is not None and not 1 <= self.rank <= pairs.dimension:
            raise fail(f"{type(self).__name__}(rank={self.rank!r})", f"rank must be between 1 and the embedding "
                       f"dimension {pairs.dimension}", "use rank=None for full rank, or a smaller rank")
        if self.query_only and self.rank not in (None, pairs.dimension):
            raise fail(f"QueryAdapter(rank={self.rank!r})", "a query adapter keeps documents as they are (K = I), "
                       "so its output dimension is the embedding dimension", "use rank=None, or QKProjection for r < d")
        fitted = fit_maps(pairs, validation, self.config or TrainConfig(),
                          MapShape(self.rank, self.tied, self.query_only, self.variant))
        self._set_weights(fitted.Q, fitted.K, fitted.scale, fitted.bias)
        self.history_, self.selected_, self.validation_ = fitted.history, fitted.selected, fitted.validation
        self.encoder_fingerprint_, self.training_hash_ = fitted.encoder, fitted.training_hash
        self.training_positive_ids_ = fitted.training_positive_ids
        self.calibration_ = fitted.calibration
        self.n_features_in_ = fitted.Q.shape[1]
        return self

    def check_fitted(self) -> None:
        if not hasattr(self, "Q_"):
            raise fail(type(self).__name__, "is not fitted yet", "call fit(pairs) or load(dir) first")

    @property
    def calibrated_(self) -> bool:
        """Whether σ(s·q·k + b) was fitted on enough held-out queries to be read as a probability (see
        `calibration_`, which says on how many, against what, and the held-out ECE)."""
        return bool(getattr(self, "calibration_", {}).get("calibrated", False))

    @property
    def dimension_(self) -> int:
        """The input (embedding) dimension d."""
        return int(self.Q_.shape[1])

    @property
    def rank_(self) -> int:
        """The output dimension r of q and k."""
        return int(self.Q_.shape[0])

    @property
    def K_(self) -> np.ndarray:
        if self.tied:
            return self.Q_
        if self.query_only:
            return np.eye(self.dimension_, dtype=np.float32)
        return self._K

    def _set_weights(self, Q: np.ndarray, K: np.ndarray | None, scale: float, bias: float) -> None:
        self.Q_ = np.ascontiguousarray(Q, dtype=np.float32)
        if not (self.tied or self.query_only):
            self._K = np.ascontiguousarray(K, dtype=np.float32)
        # float32 like the weights: what is saved is exactly what is used, so a save/load round trip is exact
        self.scale_ = float(np.float32(scale))
        self.bias_ = float(np.float32(bias))

    def with_probability(self, scale: float, bias: float, calibration: dict) -> Projection:
        """A copy with another (s, b) and its calibration record: Q and K, and so every ranking, stay."""
        import copy

        self.check_fitted()
        if not scale > 0:
            raise fail(type(self).__name__, f"scale {scale!r} would invert or flatten the ranking",
                       "give a positive scale")
        out = copy.deepcopy(self)
        out._set_weights(self.Q_, None if self.tied or self.query_only else self._K, scale, bias)
        out.calibration_ = calibration
        return out

    # ---- scoring

    def transform_queries(self, vectors: np.ndarray) -> np.ndarray:
        """q = Q·v for each row: (n, d) -> (n, r)."""
        self.check_fitted()
        return check_vectors("query vectors", vectors, self.dimension_) @ self.Q_.T

    def transform_documents(self, vectors: np.ndarray) -> np.ndarray:
        """k = K·v for each row: (n, d) -> (n, r). What a projected index stores."""
        self.check_fitted()
        v = check_vectors("document vectors", vectors, self.dimension_)
        return v.copy() if self.query_only else v @ self.K_.T

    def score(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """Logits s·q·k + b for aligned rows (pair i = query i with document i)."""
        q, k = self.transform_queries(query_vectors), self.transform_documents(document_vectors)
        if q.shape[0] != k.shape[0]:
            raise fail("score", f"{q.shape[0]} queries and {k.shape[0]} documents are not aligned pairs",
                       "pass as many query rows as document rows, or use score_matrix")
        return self.scale_ * np.einsum("ij,ij->i", q, k) + self.bias_

    def predict_proba(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """P(relevant) = σ(s·q·k + b) for aligned rows."""
        return _sigmoid(self.score(query_vectors, document_vectors))

    def score_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """Logits for every (query, document): (n_queries, n_documents). Rank by a row of it."""
        q, k = self.transform_queries(query_vectors), self.transform_documents(document_vectors)
        return self.scale_ * (q @ k.T) + self.bias_

    def predict_proba_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        return _sigmoid(self.score_matrix(query_vectors, document_vectors))

    def probability(self, dot: np.ndarray | float) -> np.ndarray:
        """σ(s·(q·k) + b) from raw projected dot products, e.g. scores returned by an `ip` index over K·v."""
        return _sigmoid(self.scale_ * np.asarray(dot, dtype=np.float32) + self.bias_)

    # ---- encoder identity

    def check_encoder(self, fingerprint: str, dimension: int, where: str = "projection") -> None:
        """Refuse vectors from another encoder: a projection learned on one embedding space means nothing in another."""
        self.check_fitted()
        mine = getattr(self, "encoder_fingerprint_", "")
        if dimension != self.dimension_ or (mine and fingerprint and fingerprint != mine):
            raise fail(where, f"was trained on {mine or 'an unnamed encoder'} (dimension {self.dimension_}), but the "
                       f"vectors come from {fingerprint or 'an unnamed encoder'} (dimension {dimension})",
                       "use the encoder the projection was trained with, or train a projection for this encoder",
                       IndexMismatchError)

    # ---- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `model.safetensors` and `config.json` into `directory`, replacing the whole folder at once (a reader
        or a killed run sees the old projection or the new one, never weights of one beside the config of another).
        Refuses non-finite weights and a diverged (s, b), and a folder that holds files other than a projection's."""
        from qkrag.atomic import atomic_folder, write_json

        self.check_fitted()
        directory = Path(directory)
        tensors = {"Q": self.Q_, "scale": np.float32([self.scale_]), "bias": np.float32([self.bias_])}
        if not (self.tied or self.query_only):
            tensors["K"] = self._K
        for name, array in tensors.items():
            if not np.isfinite(array).all():
                raise fail(f"{type(self).__name__}.save", f"{name} holds NaN or infinite values",
                           "training diverged: train again with a lower learning rate")
        check_scale_bias(self.scale_, self.bias_, f"{type(self).__name__}.save")
        _check_replaceable(directory)
        with atomic_folder(directory) as tmp:
            (tmp / WEIGHTS_FILE).write_bytes(encode_weights(tensors, {"format": "qkrag-projection",
                                                                      "variant": self.variant}))
            write_json(tmp / CONFIG_FILE, self._config_dict())
        return directory

    def _config_dict(self) -> dict:
        return {
            "qkrag_version": __version__,
            "format_version": FORMAT_VERSION,
            "variant": self.variant,
            "encoder": getattr(self, "encoder_fingerprint_", ""),
            "dimension": self.dimension_,
            "rank": self.rank_,
            "requested_rank": self.rank,
            "scale": self.scale_,
            "bias": self.bias_,
            "calibration": getattr(self, "calibration_", None) or uncalibrated("not recorded"),
            "training_data_hash": getattr(self, "training_hash_", ""),
            "training_positive_ids": getattr(self, "training_positive_ids_", None),
            "selected": getattr(self, "selected_", ""),
            "validation": getattr(self, "validation_", {}),
            "train_config": asdict(self.config) if self.config is not None else None,
            "history": getattr(self, "history_", []),
        }

    @classmethod
    def load(cls, directory: str | os.PathLike[str], encoder: Encoder | None = None) -> Projection:
        """Load a saved projection. `QKProjection.load` loads any variant (it reads the variant from config.json);
        `SymmetricProjection.load` refuses a saved QK projection. With `encoder`, refuse one that does not match."""
        config, tensors = read_projection(directory)
        klass = VARIANTS[config["variant"]]
        if not (klass is cls or issubclass(klass, cls) or cls is QKProjection):
            raise fail(str(directory), f"holds a {config['variant']!r} projection, not {cls.variant!r}",
                       f"load it with {klass.__name__}.load, or QKProjection.load")
        model = klass(config.get("requested_rank"), _train_config(directory, config.get("train_config")))
        model._set_weights(tensors["Q"], tensors.get("K"), float(tensors["scale"][0]), float(tensors["bias"][0]))
        model.encoder_fingerprint_ = config.get("encoder", "")
        model.training_hash_ = config.get("training_data_hash", "")
        model.training_positive_ids_ = config.get("training_positive_ids")
        model.selected_ = config.get("selected", "")
        model.validation_ = config.get("validation", {})
        model.history_ = config.get("history", [])
        calibration = config.get("calibration")
        model.calibration_ = calibration if isinstance(calibration, dict) else uncalibrated("not recorded")
        if encoder is not None:
            model.check_encoder(encoder.fingerprint, encoder.dimension, str(directory))
        return model


def _train_config(directory: str | os.PathLike[str], recorded: object) -> TrainConfig | None:
    """The recorded TrainConfig, or one clear error for a config.json whose train_config this qkrag cannot read."""
    import dataclasses

    from qkrag.projection.train import TrainConfig

    if recorded is None:
        return None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(recorded, dict) or set(recorded) - known:
        unknown = sorted(set(recorded) - known) if isinstance(recorded, dict) else type(recorded).__name__
        raise fail(f"{Path(directory) / CONFIG_FILE}", f"has a train_config this qkrag cannot read ({unknown})",
                   "the projection comes from another qkrag version or was edited: retrain it with this version")
    return TrainConfig(**recorded)


def _check_replaceable(directory: Path) -> None:
    """Saving replaces the whole folder: refuse one that holds anything besides a projection's two files."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise fail(str(directory), "is a file, not a folder", "save the projection into a folder path")
    other = sorted(p.name for p in directory.iterdir() if p.name not in (WEIGHTS_FILE, CONFIG_FILE)
                   and not p.name.startswith("."))
    if other:
        raise fail(str(directory), f"holds other files than a projection ({', '.join(other[:3])}); saving replaces "
                   "the whole folder", "save the projection into an empty or new folder")


class QKProjection(Projection):
    """Asymmetric: q = Q·v(query), k = K·v(document), each r × d (r = `rank`, default d). Identity (or PCA) init."""

    variant = "qk"


class SymmetricProjection(Projection):
    """One map for both sides, u = M·v, P = σ(s·u_a·u_b + b): for item-to-item similarity, where order does not
    matter. `M_` is the map (also exposed as Q_ and K_)."""

    variant = "symmetric"
    tied = True

    @property
    def M_(self) -> np.ndarray:
        return self.Q_


class QueryAdapter(Projection):
    """K = I: only the query moves (LlamaIndex's linear adapter). Documents stay as stored, so an existing raw index
    serves it with no re-indexing. The baseline the asymmetric projection has to beat."""

    variant = "query_adapter"
    query_only = True


VARIANTS: dict[str, type[Projection]] = {c.variant: c for c in (QKProjection, SymmetricProjection, QueryAdapter)}


def train_projection(train_data: Pairs, config: TrainConfig | None = None, *, variant: str = "qk",
                     rank: int | None = None, validation: Pairs | None = None) -> Projection:
    """Train a projection of `variant` ("qk", "symmetric" or "query_adapter") and return it fitted."""
    from qkrag.projection.train import TrainConfig

    if variant not in VARIANTS:
        raise fail("variant", f"{variant!r} is not a projection variant", f"use one of {sorted(VARIANTS)}")
    return VARIANTS[variant](rank=rank, config=config or TrainConfig()).fit(train_data, validation)

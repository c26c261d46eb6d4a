"""Item-item similarity that does not depend on an arbitrary choice of embedding scale.

Steck, Ekanadham and Kallus (2024), "Is Cosine-Similarity of Embeddings Really About Similarity?", show that when a
factorisation model is regularised only through its predictions (the product A·Bᵀ), the factors are determined only up
to A·D, B·D⁻¹ for any invertible diagonal D: every prediction is the same, yet the cosine between two item embeddings
can be pushed to almost any value. Cosine then reports the optimiser's accident, not the data.

`score_correlation_similarity` compares two items by the correlation of their predicted scores across users. It only
looks at predictions, so it inherits their invariance: under A·M, B·M⁻ᵀ (any invertible M, diagonal rescaling
included) the user covariance becomes MᵀCM and the item vectors M⁻¹b, and bᵢᵀ C bⱼ is unchanged. Geometrically it is
the cosine under the covariance of the user embeddings instead of under the identity.

The second half of the module holds the pieces the reproduction notebook needs (simulated data with known clusters,
the two regularisation schemes fitted by gradient and in closed form, a cluster-recovery score), so the notebook only
calls and plots.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from qkrag.errors import fail

# Relative floor under which an item's score variance counts as zero. Correlation divides by the standard deviation,
# so a (numerically) constant item would turn into noise or NaN rather than a clear error.
_ZERO_VARIANCE_RTOL = 1e-12


def _matrix(name: str, x: object, min_rows: int = 1) -> np.ndarray:
    """Coerce to a finite float 2-D array or raise an InputError that names `name`."""
    a = np.asarray(x, dtype=float)
    if a.ndim != 2:
        raise fail(name, f"expected a 2-D array (rows, dims), got shape {a.shape}", "pass one row per item or user")
    if a.shape[0] < min_rows or a.shape[1] == 0:
        raise fail(name, f"shape {a.shape} is too small (need at least {min_rows} rows and 1 column)",
                   "pass the full factor matrix")
    if not np.all(np.isfinite(a)):
        raise fail(name, "contains NaN or infinite values", "check the training run that produced these factors")
    return a


def _normalise_gram(gram: np.ndarray, what: str, quantity: str, fix: str) -> np.ndarray:
    """Turn a Gram matrix into unit-diagonal similarities; refuse rows whose self-similarity is (near) zero."""
    norms2 = np.diag(gram).copy()
    bad = np.flatnonzero(norms2 <= _ZERO_VARIANCE_RTOL * max(norms2.max(), 0.0))  # all rows when everything is 0
    if bad.size:
        raise fail(what, f"rows {bad[:5].tolist()} have zero {quantity}, so their similarity is undefined", fix)
    inv = 1.0 / np.sqrt(norms2)
    sim = gram * inv[:, None] * inv[None, :]
    sim = np.clip((sim + sim.T) / 2, -1.0, 1.0)  # exact symmetry, and no 1.0000000002 from rounding
    np.fill_diagonal(sim, 1.0)
    return sim


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of `vectors`, shape (n, n)."""
    v = _matrix("vectors", vectors)
    return _normalise_gram(v @ v.T, "vectors", "norm", "drop all-zero rows before computing cosine similarity")


def score_correlation_similarity(item_factors: np.ndarray, user_factors: np.ndarray, *,
                                 center: bool = True) -> np.ndarray:
    """Pairwise correlation of predicted scores across users, shape (n_items, n_items).

    Scores are user_factors @ item_factors.T. With center=True (the default) this is the Pearson correlation of two
    items' score columns; with center=False the cosine of those columns. Both are invariant to any reparametrisation
    that leaves the predictions unchanged, in particular `rescale`.
    """
    items = _matrix("item_factors", item_factors)
    users = _matrix("user_factors", user_factors, min_rows=2)
    if items.shape[1] != users.shape[1]:
        raise fail("item_factors", f"has {items.shape[1]} dims but user_factors has {users.shape[1]}",
                   "pass item and user factors from the same model, shapes (n_items, k) and (n_users, k)")
    if center:
        users = users - users.mean(axis=0)
    # k x k covariance instead of the n_users x n_items score matrix: same numbers, far less memory.
    cov = users.T @ users / len(users)
    return _normalise_gram(items @ cov @ items.T, "item_factors", "score variance across users",
                           "drop those items (every user gets the same score for them) or retrain the model")


def score_correlation_pair(item_a: np.ndarray, item_b: np.ndarray, user_factors: np.ndarray, *,
                           center: bool = True) -> float:
    """Score correlation of two items given as factor vectors (see `score_correlation_similarity`)."""
    a, b = np.ravel(np.asarray(item_a, dtype=float)), np.ravel(np.asarray(item_b, dtype=float))
    if a.shape != b.shape:
        raise fail("item_b", f"has {b.size} dims but item_a has {a.size}", "pass two rows of the same item factors")
    return float(score_correlation_similarity(np.stack([a, b]), user_factors, center=center)[0, 1])


def rescale(A: np.ndarray, B: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (A·D, B·D⁻¹) with D = diag(d): the reparametrisation that leaves every prediction (·)A·Bᵀ unchanged.

    Works for the paper's linear autoencoder (predictions X·A·Bᵀ) and for plain user/item factors (U·Vᵀ) alike.
    """
    A, B = _matrix("A", A), _matrix("B", B)
    d = np.ravel(np.asarray(d, dtype=float))
    if not (A.shape[1] == B.shape[1] == d.size):
        raise fail("d", f"has {d.size} entries but A and B have {A.shape[1]} and {B.shape[1]} columns",
                   "pass one scale per latent dimension, and A, B with the same number of columns")
    if not np.all(np.isfinite(d)) or np.any(d == 0):
        raise fail("d", "contains zero or non-finite scales, so D is not invertible", "use finite, non-zero scales")
    return A * d, B / d


# ---------------------------------------------------------------------------------------------------------------
# Reproduction helpers (used by notebooks/cosine_arbitrariness.ipynb).
# ---------------------------------------------------------------------------------------------------------------

def simulate_clustered_interactions(n_users: int = 1000, n_clusters: int = 4, items_per_cluster: int = 12,
                                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary user-item matrix X (n_users, n_items) whose items fall into known clusters; returns (X, labels).

    Each user has a taste for each cluster; an item's click probability follows its cluster's taste (with a per-item
    strength and popularity), so items in one cluster are similar by construction and nothing else is.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_clusters), items_per_cluster)
    taste = rng.normal(size=(n_users, n_clusters))
    strength = rng.uniform(1.0, 2.0, size=labels.size)
    popularity = rng.normal(-1.0, 0.5, size=labels.size)
    p = 1.0 / (1.0 + np.exp(-(taste[:, labels] * strength + popularity)))
    return (rng.random(p.shape) < p).astype(float), labels


def _objective(X: np.ndarray, lam: float, scheme: int):
    """Loss and gradient in (A, B) of the paper's two objectives for the linear autoencoder X ≈ X·A·Bᵀ.

    scheme 1: ||X - XABᵀ||² + lam·||ABᵀ||²        (penalty on the product only: D is free)
    scheme 2: ||X - XABᵀ||² + lam·(||XA||² + ||B||²)  (user and item embeddings each penalised, as in plain MF)
    """
    n_items = X.shape[1]
    G = X.T @ X  # the loss only ever needs XᵀX, which keeps the gradient cheap

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        A, B = theta.reshape(2, n_items, -1)
        W = A @ B.T
        GW = G @ W
        # ||X - XW||² = tr(G) - 2 tr(GW) + tr(Wᵀ G W), and its gradient in W is -2G + 2GW.
        loss = np.trace(G) - 2 * np.trace(GW) + np.sum(W * GW)
        dW = 2 * (GW - G)
        if scheme == 1:
            loss += lam * np.sum(W * W)
            dW = dW + 2 * lam * W
            dA, dB = dW @ B, dW.T @ A
        else:
            loss += lam * (np.sum(A * (G @ A)) + np.sum(B * B))
            dA, dB = dW @ B + 2 * lam * G @ A, dW.T @ A + 2 * lam * B
        return float(loss), np.concatenate([dA.ravel(), dB.ravel()])

    return f


def fit_factors(X: np.ndarray, k: int, lam: float, scheme: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train (A, B), each (n_items, k), by L-BFGS from a random start under regularisation `scheme` (1 or 2)."""
    X = _matrix("X", X, min_rows=2)
    if scheme not in (1, 2):
        raise fail("scheme", f"got {scheme!r}", "use 1 (penalise A·Bᵀ) or 2 (penalise X·A and B separately)")
    rng = np.random.default_rng(seed)
    theta0 = rng.normal(scale=0.1, size=2 * X.shape[1] * k)
    res = minimize(_objective(X, lam, scheme), theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15, "gtol": 1e-9})
    A, B = res.x.reshape(2, X.shape[1], k)
    return A, B


def closed_form_factors(X: np.ndarray, k: int, lam: float, scheme: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's closed-form optimum (A, B) from the SVD X = UΣVᵀ, keeping the top k singular values.

    scheme 1: A = V_k·diag(σ²/(σ²+lam))·D, B = V_k·D⁻¹; returned with D = I, but any invertible diagonal D (indeed
              any invertible matrix) is equally optimal.
    scheme 2: A = V_k·diag(sqrt((σ-lam)₊)/σ)·R, B = V_k·diag(sqrt((σ-lam)₊))·R; the product is the soft-thresholded
              SVD, unique up to a rotation R (returned with R = I), which leaves cosine unchanged.
    """
    X = _matrix("X", X, min_rows=2)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    s, V = s[:k], vt[:k].T
    if scheme == 1:
        return V * (s**2 / (s**2 + lam)), V.copy()
    if scheme == 2:
        root = np.sqrt(np.clip(s - lam, 0.0, None))
        return V * (root / s), V * root
    raise fail("scheme", f"got {scheme!r}", "use 1 (penalise A·Bᵀ) or 2 (penalise X·A and B separately)")


def neighbour_purity(sim: np.ndarray, labels: np.ndarray) -> float:
    """Cluster recovery: mean share of each item's nearest neighbours (as many as its cluster has other members)
    that are in its own cluster. 1.0 means the similarity ranks every same-cluster item first."""
    sim, labels = np.asarray(sim, dtype=float), np.asarray(labels)
    if sim.shape != (labels.size, labels.size):
        raise fail("sim", f"shape {sim.shape} does not match {labels.size} labels", "pass an (n, n) matrix and n labels")
    scores = []
    for i in range(labels.size):
        others = np.delete(np.arange(labels.size), i)
        m = int(np.sum(labels[others] == labels[i]))
        if m:
            top = others[np.argsort(-sim[i, others], kind="stable")[:m]]
            scores.append(np.mean(labels[top] == labels[i]))
    return float(np.mean(scores))

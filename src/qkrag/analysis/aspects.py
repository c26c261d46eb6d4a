"""Similarity "in which sense?", measured: nearest neighbours and their agreement under raw embeddings and under
each aspect, similarity by kind of pair, and 2-D PCA maps of a labelled corpus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qkrag.embed.encoders import EmbedOptions, Encoder, embed
from qkrag.embed.wrappers import AspectEncoder
from qkrag.errors import fail
from qkrag.llm.rewrite import RewriteStats, aspect_label

if TYPE_CHECKING:
    from qkrag.data import Corpus
    from qkrag.llm.client import LLM


def load_labelled_corpus(path: str | Path, fields: Sequence[str], limit: int | None = None,
                         ids: Sequence[str] | None = None) -> tuple[Corpus, dict[str, list[str]]]:
    """A JSONL corpus whose rows also carry label fields (as `data/cities/cities.jsonl`: climate, cuisine, size):
    the corpus (only `ids`, in that order, or the first `limit` rows, when given) and `{field: [label per
    document]}`, in corpus order."""
    import json

    from qkrag.data import load_corpus

    corpus = load_corpus(path)
    rows = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows[str(row.get("_id", row.get("id")))] = row
    ids = list(ids) if ids is not None else corpus.ids[:limit] if limit else corpus.ids
    missing = [(i, f) for i in ids for f in fields if f not in rows.get(i, {})]
    if missing:
        raise fail(str(path), f"document {missing[0][0]!r} has no {missing[0][1]!r} label",
                   f"give every row the fields {list(fields)}")
    return corpus.subset(ids), {f: [str(rows[i][f]) for i in ids] for f in fields}


def nearest_neighbours(vectors: np.ndarray, ids: Sequence[str], k: int = 5) -> dict[str, list[str]]:
    """Each item's `k` nearest other items by cosine, best first (the item itself excluded)."""
    from qkrag.ranking import similarity

    if len(ids) != len(vectors):
        raise fail("nearest_neighbours", f"{len(ids)} ids for {len(vectors)} vectors", "pass one id per vector")
    scores = similarity(vectors, vectors, "cosine")
    np.fill_diagonal(scores, -np.inf)
    k = min(k, len(ids) - 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {ids[i]: [ids[j] for j in row] for i, row in enumerate(order)}


def neighbour_agreement(vectors: np.ndarray, labels: Sequence[str]) -> float:
    """How often an item's nearest other item (cosine) has the same label: 1.0 = always."""
    ids = [str(i) for i in range(len(labels))]
    nearest = nearest_neighbours(vectors, ids, k=1)
    return float(np.mean([labels[int(nearest[i][0])] == labels[int(i)] for i in ids]))


def neighbour_scores(vectors: np.ndarray, labels: Sequence[str], *, k: int = 5, ndcg_at: int = 10
                     ) -> dict[str, np.ndarray]:
    """Per item, how well its nearest other items (cosine) share its label: `agree@1` (0 or 1), `agree@{k}` (share of
    the `k` nearest with its label) and `ndcg@{ndcg_at}` (binary gain: same label = relevant). Arrays of len(labels),
    so a bootstrap over items and paired differences between embeddings come straight from them."""
    from qkrag.ranking import similarity

    if len(vectors) != len(labels) or len(labels) < 2:
        raise fail("neighbour_scores", f"{len(vectors)} vectors for {len(labels)} labels",
                   "pass one label per vector, at least two items")
    return ranked_neighbour_scores(similarity(np.asarray(vectors), np.asarray(vectors), "cosine"), labels, k=k,
                                   ndcg_at=ndcg_at)


def ranked_neighbour_scores(scores: np.ndarray, labels: Sequence[str], *, k: int = 5, ndcg_at: int = 10
                            ) -> dict[str, np.ndarray]:
    """`neighbour_scores` from any item-to-item score matrix (row i: item i as the query, higher = nearer), such as
    a Q/K projection's query-to-document scores; the diagonal is ignored."""
    from qkrag.evaluate.metrics import binary_ndcg

    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if np.shape(scores) != (n, n) or n < 2:
        raise fail("ranked_neighbour_scores", f"a score matrix of shape {np.shape(scores)} for {n} labels",
                   "pass an n-by-n matrix for n labels, at least two items")
    scores = np.array(scores, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    depth = min(max(k, ndcg_at), n - 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    same = labels[order] == labels[:, None]
    relevant = [set(np.flatnonzero((labels == labels[i]) & (np.arange(n) != i)).tolist()) for i in range(n)]
    has_any = np.array([bool(r) for r in relevant])
    ndcg = np.zeros(n)
    ndcg[has_any] = binary_ndcg(order[has_any], [r for r in relevant if r], ndcg_at)
    return {"agree@1": same[:, 0].astype(float), f"agree@{k}": same[:, :k].mean(axis=1), f"ndcg@{ndcg_at}": ndcg}


def chance_scores(labels: Sequence[str], *, k: int = 5, ndcg_at: int = 10, draws: int = 200, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """What `neighbour_scores` expects per item from a random order of the other items: agreement is exactly the
    share of other items with the item's label (at every k); nDCG is the mean over `draws` seeded random orders."""
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    same_share = np.array([(np.sum(labels == v) - 1) / (n - 1) for v in labels])
    rng = np.random.default_rng(seed)
    ndcg = np.zeros(n)
    for _ in range(draws):
        ndcg += neighbour_scores(rng.standard_normal((n, 8)), labels, k=k, ndcg_at=ndcg_at)[f"ndcg@{ndcg_at}"]
    return {"agree@1": same_share, f"agree@{k}": same_share.copy(), f"ndcg@{ndcg_at}": ndcg / draws}


def compare_scores(scores: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray], *,
                   n_resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per metric: the mean with its 95% bootstrap CI over items, and the paired difference from `baseline` (same
    items) with its CI. `{metric: {"mean", "lo", "hi", "diff", "diff_lo", "diff_hi"}}`."""
    from qkrag.evaluate.stats import Bootstrap, bootstrap_ci

    boot = Bootstrap(n_resamples=n_resamples, seed=seed)
    out = {}
    for metric, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        diff = values - np.asarray(baseline[metric], dtype=np.float64)
        lo, hi = bootstrap_ci(values, boot)
        dlo, dhi = bootstrap_ci(diff, boot)
        out[metric] = {"mean": float(values.mean()), "lo": lo, "hi": hi, "diff": float(diff.mean()), "diff_lo": dlo,
                       "diff_hi": dhi}
    return out


def label_pairs(vectors: np.ndarray, positives: Sequence[Sequence[int]], *, queries: np.ndarray | None = None,
                negatives: Sequence[Sequence[int]] | None = None, source: str = "aspect labels"):
    """Training pairs for an item-to-item projection: item i's vector as the query, each row in `positives[i]` (items
    that share i's aspect, by whatever labeller) as a positive document, over the same `vectors`. `queries` (one row
    per item) puts another vector of item i on the query side (its aspect sentence against the documents' whole
    text); `negatives[i]` are items judged not to share i's aspect, the hard negatives of i's pairs."""
    from qkrag.projection.data import Pairs

    rows = [(i, j) for i, ps in enumerate(positives) for j in ps if j != i]
    if not rows:
        raise fail(source, "gives no pair of items that share the aspect", "label some items alike")
    anchors, targets = np.array(rows).T
    side = np.asarray(vectors if queries is None else queries)
    if len(side) != len(vectors):
        raise fail(source, f"{len(side)} query vectors for {len(vectors)} items", "pass one query vector per item")
    hard = None
    if negatives is not None and any(negatives[i] for i in anchors):
        width = max(len(negatives[i]) for i in anchors)
        hard = np.full((len(anchors), width), -1, dtype=np.int64)
        for row, i in enumerate(anchors):
            hard[row, : len(negatives[i])] = negatives[i]
    return Pairs(side[anchors], targets, np.asarray(vectors), negatives=hard, query_ids=tuple(map(str, anchors)),
                 source=source)


def same_label_positives(labels: Sequence[str]) -> list[list[int]]:
    """For each item, the other items with its label: the positives of `label_pairs` when labels are known."""
    labels = list(labels)
    return [[j for j, b in enumerate(labels) if b == a and j != i] for i, a in enumerate(labels)]


def neighbour_positives(vectors: np.ndarray, m: int = 5) -> list[list[int]]:
    """For each item, its `m` nearest other items by cosine: weak positives for `label_pairs` when no labels are known
    but some embedding (an extractive aspect one) already groups items by the aspect."""
    ids = [str(i) for i in range(len(vectors))]
    return [[int(j) for j in ns] for ns in nearest_neighbours(vectors, ids, k=m).values()]


def train_aspect_map(vectors: np.ndarray, positives: Sequence[Sequence[int]], *, queries: np.ndarray | None = None,
                     negatives: Sequence[Sequence[int]] | None = None, config=None, rank: int | None = None):
    """A projection trained so that items listed as each other's `positives` come close. Without `queries`, one
    symmetric map M for both sides (item-to-item similarity has no query side): apply `transform_documents` to any
    item's vector. With `queries` (another vector per item, e.g. its aspect sentence), a Q/K pair: score
    `transform_queries(queries)` against `transform_documents(vectors)`, so the index keeps the plain vectors."""
    from qkrag.projection.model import train_projection
    from qkrag.projection.train import TrainConfig

    # A few hundred items give too few validation queries to select an epoch by, so a fixed schedule with a higher
    # learning rate than retrieval training's default (whose pairs number in the thousands) is used instead.
    config = config or TrainConfig(epochs=20, learning_rate=1e-2, select=False, calibrate=False, progress=False)
    pairs = label_pairs(vectors, positives, queries=queries, negatives=negatives)
    return train_projection(pairs, config, variant="symmetric" if queries is None else "qk", rank=rank)


def similarity_by_pair_kind(vectors: np.ndarray, content: Sequence[str], style: Sequence[str]) -> dict[str, float]:
    """Mean cosine over pairs of items by kind: same content in another style, same style with other content, and
    neither. Raw embeddings that match on style score the second kind high; a good rewrite scores the first."""
    from qkrag.ranking import similarity

    scores = similarity(vectors, vectors, "cosine")
    kinds: dict[str, list[float]] = {"same content, other style": [], "same style, other content": [], "unrelated": []}
    for i in range(len(content)):
        for j in range(i + 1, len(content)):
            same_c, same_s = content[i] == content[j], style[i] == style[j]
            if same_c and not same_s:
                kinds["same content, other style"].append(scores[i, j])
            elif same_s and not same_c:
                kinds["same style, other content"].append(scores[i, j])
            elif not same_c and not same_s:
                kinds["unrelated"].append(scores[i, j])
    return {k: float(np.mean(v)) if v else float("nan") for k, v in kinds.items()}


def aspect_embeddings(texts: Sequence[str], base_encoder: Encoder, llm: LLM, aspects: Sequence[str], *,
                      options: EmbedOptions | None = None, stats: dict[str, RewriteStats] | None = None
                      ) -> dict[str, np.ndarray]:
    """`{aspect: vectors}`, one (len(texts), dim) array per aspect, embedded as documents through the caches.
    When `stats` is a dict, each aspect's `RewriteStats` (fallback counts) is put in it."""
    out = {}
    for aspect in aspects:
        encoder = AspectEncoder(base_encoder, llm, aspect, progress=options.progress if options else True)
        out[aspect] = embed(encoder, texts, "document", options, desc=f"embed {aspect_label(aspect)}")
        if stats is not None:
            stats[aspect] = encoder.stats
    return out


def aspect_neighbours(corpus: Corpus, base_encoder: Encoder, llm: LLM, aspects: Sequence[str], *, k: int = 5,
                      options: EmbedOptions | None = None) -> dict[str, dict[str, list[str]]]:
    """`{aspect: {id: [k nearest ids]}}`: each item's nearest items in the sense of each aspect."""
    vectors = aspect_embeddings(corpus.contents, base_encoder, llm, aspects, options=options)
    return {aspect: nearest_neighbours(v, corpus.ids, k) for aspect, v in vectors.items()}


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of the unit-normalised vectors (cosine geometry), as (n, 2)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    # SVD signs are arbitrary; fix them so a re-run draws the same picture, not a mirror image.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return coords * np.where(signs == 0, 1, signs)


def plot_aspect_maps(embeddings: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]],
                     names: Sequence[str], *, path: str | Path | None = None, title: str | None = None):
    """One PCA map per embedding, points coloured by that embedding's label (`labels[key]`, or the label named after
    the key's last ":" part, as in "extract:climate", or the first label set for an embedding with no labels of its
    own, such as "raw") and annotated with `names`. Returns the figure;
    writes it to `path` (atomically) when given."""
    import matplotlib.pyplot as plt

    keys = list(embeddings)
    cols = min(3 if len(keys) > 4 else 2, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 6.5 * rows), squeeze=False)
    first_labels = next(iter(labels))
    for ax, key in zip(axes.flat, keys):
        label_key = next((k for k in (key, key.split(":")[-1]) if k in labels), first_labels)
        these = list(labels[label_key])
        coords = pca_2d(embeddings[key])
        palette = plt.get_cmap("tab10")
        for c, value in enumerate(sorted(set(these))):
            mask = np.array([v == value for v in these])
            ax.scatter(coords[mask, 0], coords[mask, 1], s=60, color=palette(c % 10), label=value,
                       edgecolor="black", linewidth=0.5, zorder=3)
        for (x, y), name in zip(coords, names):
            ax.annotate(name, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8, zorder=4)
        agreement = neighbour_agreement(embeddings[key], these)
        ax.set_title(f"{key} embedding, coloured by {label_key}\n(nearest neighbour shares it: {agreement:.0%})",
                     fontsize=11)
        ax.legend(fontsize=8, loc="best", framealpha=0.8, title=label_key, title_fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))  # leave the title its own band
    if path is not None:
        from qkrag.atomic import atomic_open

        with atomic_open(Path(path), "wb") as handle:
            fig.savefig(handle, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    return fig

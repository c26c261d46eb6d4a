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

"""Aspect embeddings on the 30 cities: is "nearest by climate" really about climate?

Each city paragraph mixes climate, food and size. We embed it four ways with the default encoder (all-MiniLM-L6-v2):
raw, and through `AspectEncoder` for climate, cuisine and size (the embedded local LLM, Qwen2.5-Coder-0.5B, describes
that aspect; the description is embedded). For each embedding we count how often a city's nearest other city shares
its climate / cuisine / size label: the climate embedding should win on climate, and so on. Writes
benchmarks/results/aspect_demo.json, .md and .png (a PCA map per embedding, coloured by its own label).

LLM outputs and vectors are cached, so only the first run pays the ~90 LLM calls.

    .venv/bin/python benchmarks/aspect_demo.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, markdown_table, save

from qkrag.analysis.aspects import (aspect_embeddings, load_labelled_corpus, nearest_neighbours, neighbour_agreement,
                                    plot_aspect_maps)
from qkrag.embed.encoders import EmbedOptions, embed, make_encoder
from qkrag.embed.wrappers import ExtractiveAspectEncoder
from qkrag.llm.local import default_llm
from qkrag.llm.rewrite import aspect_texts

ROOT = Path(__file__).resolve().parents[1]
ASPECTS = ("climate", "cuisine", "size")
EXAMPLES = ("lisbon", "oslo", "singapore", "lima")


def chance(labels: list[str]) -> float:
    """Expected agreement of a random other item: mean over items of (same-label others) / (all others)."""
    n = len(labels)
    counts = {v: labels.count(v) for v in set(labels)}
    return float(np.mean([(counts[v] - 1) / (n - 1) for v in labels]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "cities" / "cities.jsonl"))
    parser.add_argument("--limit", type=int, default=None, help="first N cities only")
    args = parser.parse_args()

    corpus, labels = load_labelled_corpus(args.data, ASPECTS, args.limit)
    names = [d.title or d.id for d in corpus]
    base = make_encoder()
    options = EmbedOptions(progress=True)
    started = time.perf_counter()
    with default_llm() as llm:
        server_ready = time.perf_counter() - started
        stats: dict = {}
        t0 = time.perf_counter()
        embeddings = {"raw": embed(base, corpus.contents, "document", options)}
        by_llm = aspect_embeddings(corpus.contents, base, llm, ASPECTS, options=options, stats=stats)
        embeddings.update({f"llm:{a}": v for a, v in by_llm.items()})
        seconds = time.perf_counter() - t0
        # The LLM's answers themselves (all from the cache now), to show what was embedded.
        answers = {a: aspect_texts(corpus.contents, llm, a, progress=False) for a in ASPECTS}
        llm_stats = llm.stats()

    # The LLM-free alternative: embed the sentence of each paragraph most about the aspect.
    for a in ASPECTS:
        embeddings[f"extract:{a}"] = embed(ExtractiveAspectEncoder(base, a), corpus.contents, "document", options)
    extracted = {a: ExtractiveAspectEncoder(base, a).transform(corpus.contents) for a in ASPECTS}

    table = []
    for key, vectors in embeddings.items():
        table.append({"embedding": key, **{f"same {f}": neighbour_agreement(vectors, labels[f]) for f in ASPECTS}})
    table.append({"embedding": "chance", **{f"same {f}": chance(labels[f]) for f in ASPECTS}})
    winners = {f: max(table[:-1], key=lambda r: r[f"same {f}"])["embedding"] for f in ASPECTS}

    index = {d.id: i for i, d in enumerate(corpus)}
    neighbours = {key: nearest_neighbours(v, corpus.ids, k=3) for key, v in embeddings.items()}
    examples = []
    for city in [c for c in EXAMPLES if c in index]:
        i = index[city]
        row = {"city": city, **{f: labels[f][i] for f in ASPECTS}, "answers": {a: answers[a][i] for a in ASPECTS},
               "extracted": {a: extracted[a][i] for a in ASPECTS},
               "neighbours": {}}
        for key in embeddings:
            row["neighbours"][key] = [
                {"id": n, **{f: labels[f][index[n]] for f in ASPECTS}} for n in neighbours[key][city]]
        examples.append(row)

    figure = RESULTS / "aspect_demo.png"
    plot_aspect_maps(embeddings, labels, names, path=figure,
                     title=f"{len(corpus)} cities, all-MiniLM-L6-v2: raw text vs LLM aspect descriptions vs "
                           "extracted aspect sentences")

    result = {
        "n_items": len(corpus),
        "encoder": base.fingerprint,
        "llm": llm_stats,
        "server_start_s": round(server_ready, 1),
        "embed_and_llm_s": round(seconds, 1),
        "fallbacks": {a: s.as_dict() for a, s in stats.items()},
        "agreement": table,
        "winners": winners,
        "examples": examples,
        "figure": str(figure.relative_to(ROOT)),
    }
    cols = ["embedding"] + [f"same {f}" for f in ASPECTS]
    lines = [
        f"{len(corpus)} cities (data/cities). How often a city's nearest other city (cosine) shares its label, per "
        "embedding. `raw` embeds the paragraph; `llm:*` embed what the local LLM "
        f"({llm_stats['model']}) says about that aspect of it (`qkrag.llm.rewrite.AspectEncoder`); `extract:*` embed the "
        "paragraph's one sentence most similar to the aspect's description (`qkrag.llm.rewrite.ExtractiveAspectEncoder`, "
        "no LLM).",
        "",
        markdown_table(table, cols),
        "",
        "Best embedding per label: " + ", ".join(f"{f}: **{w}**" for f, w in winners.items()) + ".",
        "",
        f"LLM: {llm_stats['calls_made']} calls, {llm_stats['cache_hits']} cache hits, "
        f"{llm_stats['completion_tokens']} completion tokens; embedding + LLM {seconds:.0f} s "
        "(a re-run is served from the caches). Fallbacks to the original text: "
        + "; ".join(f"{a} {s.fallback_total} ({dict(s.fallbacks) or 'none'})" for a, s in stats.items()) + ".",
        "",
        "![PCA maps](aspect_demo.png)",
        "",
        "## Examples: 3 nearest cities per embedding (climate / cuisine / size)",
    ]
    for row in examples:
        lines += ["", f"**{row['city']}** ({row['climate']} / {row['cuisine']} / {row['size']})", ""]
        for a in ASPECTS:
            lines.append(f"- LLM on {a}: \"{row['answers'][a]}\"")
            lines.append(f"- extracted for {a}: \"{row['extracted'][a]}\"")
        for key, ns in row["neighbours"].items():
            lines.append(f"- {key}: " + ", ".join(f"{n['id']} ({n['climate']}/{n['cuisine']}/{n['size']})" for n in ns))
    save("aspect_demo", result, "\n".join(lines))
    print(markdown_table(table, cols), file=sys.stderr)


if __name__ == "__main__":
    main()

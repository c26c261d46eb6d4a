"""Aspect embeddings on 209 labelled cities: which method finds the cities with the same climate / cuisine / size?

Data: data/world_cities (209 paragraphs that mix climate, food and population; labels per aspect, nearly independent
of each other). The items are split once, seeded, into two halves A and B. Every method embeds the items of a half,
and each item's nearest other items *of its own half* are scored against the item's label:

- agree@1: the nearest item shares the label (0/1); agree@5: share of the 5 nearest that do; ndcg@10: binary nDCG
  with "same label" as relevance.
- Each with a 95% bootstrap CI over the 209 items, the paired difference from raw embeddings (CI), and the difference
  from chance (the label-frequency expectation of a random order, CI).

Methods (base encoder all-MiniLM-L6-v2 throughout):
- raw: the paragraph.
- prefix: an instruction put before the paragraph ("Climate and weather of this place: ...").
- extract / extract2: the paragraph's 1 or 2 sentences most similar to the aspect's description
  (`ExtractiveAspectEncoder`, no LLM).
- proj-weak: a symmetric map (qkrag.projection, one per aspect) on the *raw* vectors, trained on the other half with
  weak labels: each item's 5 nearest items under `extract` count as sharing the aspect. No gold label is used.
- proj-weak(extract): the same map trained and applied on `extract` vectors.
- proj-gold / proj-gold(extract): the same maps trained on the other half's gold labels: what labelling half of the
  items buys (a supervised ceiling, never trained on the items it is scored on).
- proj-gold(extract→raw): a Q/K map (not symmetric) trained on the other half's gold labels whose query side is an
  item's `extract` vector and whose key side is the raw vector: the index keeps raw paragraph vectors, and the aspect
  lives in the query and the small map (the ceiling of the next row).
- proj-llm / proj-llm(extract→raw): the project's aspect-specific projection with LLM labels, no gold label: the
  embedded LLM judges, for the first --pair-anchors items of each half, whether the item and each of its
  --pair-candidates nearest items under `extract` share the aspect (prompts/aspect_pair.toml, on the two extract
  sentences); "yes" pairs are the positives, "no" pairs the hard negatives. proj-llm is the symmetric map on raw
  vectors (one raw index, one small map per aspect); proj-llm(extract→raw) the Q/K map of the row above. Cross-fitted
  like every map: trained on one half's cities, scored on the other's.
- llm-schema ("extract, then classify"): the `extract` sentence goes to the embedded LLM with a fixed answer
  schema (a closed list of classes, prompts/aspect_schema.toml) and the answer is embedded; only with --llm (5 to 50 s a
  call on the shared, loaded 2-CPU machine), on the first --llm-limit items of each half.
- llm-fewshot: the same after one worked example per class (invented sentences, no place names; the [few_shot] table
  of prompts/aspect_schema.toml); with --llm.

Writes benchmarks/results/aspect_bench.json, .md and .png; with --llm, aspect_bench_llm.json and .md.

    python benchmarks/aspect_bench.py                 # every method but llm-schema (LLM pair labels cached after
                                                      # the first run, which judges 432 pairs: ~15 min on 2 CPUs)
    python benchmarks/aspect_bench.py --pair-anchors 0   # the LLM-free methods only (a few minutes on 2 idle CPUs)
    python benchmarks/aspect_bench.py --llm --llm-limit 10
    python benchmarks/aspect_bench.py --describe      # label counts and cross-aspect agreement of the data only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, markdown_table, save

from qkrag.analysis.aspects import (chance_scores, compare_scores, load_labelled_corpus, neighbour_positives,
                                    neighbour_scores, ranked_neighbour_scores, same_label_positives, train_aspect_map)
from qkrag.embed.encoders import EmbedOptions, embed, make_encoder
from qkrag.embed.wrappers import ExtractiveAspectEncoder, InstructionAspectEncoder

ROOT = Path(__file__).resolve().parents[1]
ASPECTS = ("climate", "cuisine", "size")
METRICS = ("agree@1", "agree@5", "ndcg@10")
MIN_LABELLED = 10  # items of a half with at least one positive, below which a map is not trained (identity)
UNCACHED = EmbedOptions(cache=None, progress=False)  # every run pays (and times) the embedding it measures


def halves(n: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[: n // 2]), np.sort(order[n // 2 :])]


def describe(labels: dict[str, list[str]]) -> dict:
    """Label counts, and how much the labelings agree: adjusted Rand index, and of the pairs sharing one label, the
    share that also shares another (against that share for a random pair)."""
    from itertools import combinations

    from sklearn.metrics import adjusted_rand_score

    out: dict = {"counts": {a: dict(sorted({v: labels[a].count(v) for v in set(labels[a])}.items(),
                                           key=lambda kv: -kv[1])) for a in labels}, "pairs": []}
    n = len(next(iter(labels.values())))
    for a, b in combinations(labels, 2):
        x, y = np.array(labels[a]), np.array(labels[b])
        same_a = x[:, None] == x[None, :]
        same_b = y[:, None] == y[None, :]
        upper = np.triu(np.ones((n, n), bool), 1)
        out["pairs"].append({"aspects": f"{a}/{b}", "ari": round(float(adjusted_rand_score(x, y)), 3),
                             f"share of same-{a} pairs that share {b}": round(float((same_a & same_b & upper).sum()
                                                                                  / (same_a & upper).sum()), 3),
                             f"random pair shares {b}": round(float((same_b & upper).sum() / upper.sum()), 3)})
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def fixed_vectors(texts: list[str], base, aspect: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The methods with no training: vectors of every item, and seconds per item."""
    encoders = {"raw": base, "prefix": InstructionAspectEncoder(base, aspect),
                "extract": ExtractiveAspectEncoder(base, aspect), "extract2": ExtractiveAspectEncoder(base, aspect, top=2)}
    vectors, cost = {}, {}
    for name, encoder in encoders.items():
        vectors[name], seconds = timed(embed, encoder, texts, "document", UNCACHED)
        cost[name] = seconds / len(texts)
    return vectors, cost


def trained_vectors(vectors: dict[str, np.ndarray], labels: list[str], split: list[np.ndarray],
                    llm_labels: list[dict] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, list[str]]]:
    """The projection methods, cross-fitted: each half's vectors mapped by the map trained on the other half. A map
    with a query source scores its half's query vectors through Q against the half's raw vectors through K (the index
    keeps raw vectors); its output is the query-to-document score matrix of each half."""
    def weak(h):
        return neighbour_positives(vectors["extract"][split[h]], 5)

    def gold(h):
        return same_label_positives([labels[i] for i in split[h]])

    plans = {  # name: (document vectors, query vectors or None for a symmetric map, positives, negatives of half h)
        "proj-weak": ("raw", None, weak, None),
        "proj-weak(extract)": ("extract", None, weak, None),
        "proj-gold": ("raw", None, gold, None),
        "proj-gold(extract)": ("extract", None, gold, None),
        "proj-gold(extract→raw)": ("raw", "extract", gold, None),
    }
    if llm_labels is not None:
        plans["proj-llm"] = ("raw", None, lambda h: llm_labels[h]["pos"], lambda h: llm_labels[h]["neg"])
        plans["proj-llm(extract→raw)"] = ("raw", "extract", lambda h: llm_labels[h]["pos"], lambda h: llm_labels[h]["neg"])
    out, cost, selected = {}, {}, {}
    for name, (source, query_source, positives, negatives) in plans.items():
        mapped: list = [None, None]
        seconds, chosen = 0.0, []
        for h, other in ((0, 1), (1, 0)):
            rows, train_rows = split[h], split[other]
            queries = None if query_source is None else vectors[query_source][train_rows]
            labelled = sum(1 for p in positives(other) if p)
            if labelled < MIN_LABELLED:  # too few to train on, or to hold validation pairs out of: no map
                docs, q = vectors[source][rows], None if query_source is None else vectors[query_source][rows]
                mapped[h] = docs if q is None else (q, docs)
                chosen.append(f"identity ({labelled} items with a positive)")
                continue
            model, s = timed(lambda: train_aspect_map(vectors[source][train_rows], positives(other), queries=queries,
                                                      negatives=negatives(other) if negatives else None))
            docs = model.transform_documents(vectors[source][rows])
            mapped[h] = docs if query_source is None else (model.transform_queries(vectors[query_source][rows]), docs)
            seconds += s
            chosen.append(str(model.selected_))
        out[name], selected[name] = mapped, chosen
        cost[name] = seconds / len(labels)  # training, spread over the items; applying the map costs ~nothing
    return out, cost, selected


def score(vectors, labels: list[str], split: list[np.ndarray], rows: np.ndarray | None = None
          ) -> dict[str, np.ndarray]:
    """Per-item scores, each item against the other items of its own half (`rows`: a subset of every half).
    `vectors`: one array for every item (ranked by cosine), or per half an array or a (Q side, K side) pair of a Q/K
    map (ranked by their dot product)."""
    n = len(labels)
    out = {m: np.full(n, np.nan) for m in METRICS}
    for h, half in enumerate(split):
        keep = np.arange(len(half)) if rows is None else np.flatnonzero(np.isin(half, rows))
        mine = [labels[i] for i in half[keep]]
        if isinstance(vectors, np.ndarray):
            got = neighbour_scores(vectors[half[keep]], mine, k=5, ndcg_at=10)
        elif isinstance(vectors[h], tuple):
            q, d = vectors[h]
            got = ranked_neighbour_scores(q[keep] @ d[keep].T, mine, k=5, ndcg_at=10)
        else:
            got = neighbour_scores(vectors[h][keep], mine, k=5, ndcg_at=10)
        for m in METRICS:
            out[m][half[keep]] = got[m]
    return out


def chance(labels: list[str], split: list[np.ndarray], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {m: np.full(len(labels), np.nan) for m in METRICS}
    for half in split:
        half = half if rows is None else np.intersect1d(half, rows)
        got = chance_scores([labels[i] for i in half], k=5, ndcg_at=10)
        for m in METRICS:
            out[m][half] = got[m]
    return out


def llm_vectors(texts: list[str], base, aspects, rows: np.ndarray, model: str | None
                ) -> tuple[dict, dict, dict]:
    """The LLM methods on the items `rows` (other rows stay zero), "extract, then classify": each text is cut to its
    sentence most about the aspect (as `extract`), the LLM names a class from the closed list of
    prompts/aspect_schema.toml (llm-schema: the question alone; llm-fewshot: one worked example per class first), and
    that answer is embedded (an answer of "none" keeps the sentence). Cached by the LLM client, so a re-run is free;
    the cost per item is the wall time of this run's uncached calls divided by their number (one call per item;
    None when every call was cached)."""
    import tomllib

    from qkrag.llm.local import open_llm
    from qkrag.llm.rewrite import RewriteStats, aspect_texts

    prompts = tomllib.loads((ROOT / "prompts" / "aspect_schema.toml").read_text(encoding="utf-8"))
    variants = {"llm-schema": prompts["aspects"], "llm-fewshot": prompts["few_shot"]}
    vectors: dict = {a: {} for a in aspects}
    cost: dict = {a: {} for a in aspects}
    answers: dict = {a: {} for a in aspects}
    with open_llm(None, model) as llm:
        for aspect in aspects:
            extracted = ExtractiveAspectEncoder(base, aspect).transform([texts[i] for i in rows])
            for name, template in variants.items():
                before = llm.calls_made
                stats = RewriteStats()
                t0 = time.perf_counter()
                said = aspect_texts(extracted, llm, template[aspect], stats=stats, on_failure="skip", progress=False)
                seconds = time.perf_counter() - t0
                said = [a if a is not None else e for a, e in zip(said, extracted)]  # a failed call keeps the sentence
                full = np.zeros((len(texts), base.dimension), dtype=np.float32)
                full[rows] = embed(base, said, "document", EmbedOptions(progress=False))
                vectors[aspect][name] = full
                calls = llm.calls_made - before
                cost[aspect][name] = {"s_per_item": seconds / calls if calls else None, "calls": calls,
                                      "cached": len(rows) - calls, **stats.as_dict()}
                answers[aspect][name] = said[:4]
        return vectors, cost, {"answers": answers, "llm": llm.stats()}


PAIR_NOUNS = {"climate": "climate", "cuisine": "kind of food", "size": "population size"}  # {aspect} of aspect_pair


def llm_pair_labels(texts: list[str], base, aspects, split: list[np.ndarray], anchors: int, candidates: int,
                    model: str | None) -> tuple[dict, dict, dict]:
    """LLM-judged pairs for the aspect maps, per aspect and half: the first `anchors` items of the half, each with its
    `candidates` nearest items of the half under `extract`, and the embedded LLM asked whether the two share the aspect
    (prompts/aspect_pair.toml, on the two extract sentences). Returns `{aspect: [{"pos": [[j...] per item of the half],
    "neg": [[j...] ...]} per half]}` (rows local to the half; a "yes" counts both ways), the cost per aspect and the
    LLM's stats. No gold label is read; cached by the LLM client, so a re-run is free."""
    from qkrag.llm.local import open_llm
    from qkrag.llm.prompts import parse_yes_no, render

    labels: dict = {}
    cost: dict = {}
    with open_llm(None, model) as llm:
        for aspect in aspects:
            extractor = ExtractiveAspectEncoder(base, aspect)
            labels[aspect], seconds, judged, calls, yes = [], 0.0, 0, 0, 0
            for half in split:
                said = extractor.transform([texts[i] for i in half])
                near = neighbour_positives(embed(base, said, "document", EmbedOptions(progress=False)), candidates)
                pairs = [(a, b) for a in range(min(anchors, len(half))) for b in near[a]]
                prompts = [render("aspect_pair", text=said[a], other=said[b], aspect=PAIR_NOUNS.get(aspect, aspect))
                           for a, b in pairs]
                before = llm.calls_made
                out, s = timed(lambda: llm.complete_many(prompts, on_error="skip", progress=False, max_tokens=3,
                                                         temperature=0))
                seconds, calls, judged = seconds + s, calls + llm.calls_made - before, judged + min(anchors, len(half))
                pos: list[list[int]] = [[] for _ in half]
                neg: list[list[int]] = [[] for _ in half]
                for (a, b), answer in zip(pairs, out):
                    verdict = parse_yes_no(answer.text if answer else None)
                    if verdict:
                        pos[a].append(b)
                        pos[b].append(a)
                        yes += 1
                    elif verdict is False:
                        neg[a].append(b)
                labels[aspect].append({"pos": [sorted(set(p)) for p in pos], "neg": neg})
            cost[aspect] = {"llm_s_per_call": seconds / calls if calls else None, "items_judged": judged,
                            "pairs_judged": judged * candidates, "calls": calls, "yes": yes,
                            "llm_s_per_item": candidates * seconds / calls if calls else None}
        return labels, cost, llm.stats()


def summarise(per_method: dict[str, dict[str, np.ndarray]], base: dict[str, np.ndarray], luck: dict[str, np.ndarray],
              rows: np.ndarray) -> list[dict]:
    """One row per method: each metric's mean [CI], its paired difference from raw [CI] and from chance [CI]."""
    table = []
    for name, scores in per_method.items():
        picked = {m: scores[m][rows] for m in METRICS}
        vs_raw = compare_scores(picked, {m: base[m][rows] for m in METRICS})
        vs_chance = compare_scores(picked, {m: luck[m][rows] for m in METRICS})
        row = {"method": name, "items": int(len(rows))}
        for m in METRICS:
            row[m] = vs_raw[m]["mean"]
            row[f"{m} ci"] = [vs_raw[m]["lo"], vs_raw[m]["hi"]]
            row[f"{m} vs raw"] = [vs_raw[m]["diff"], vs_raw[m]["diff_lo"], vs_raw[m]["diff_hi"]]
            row[f"{m} vs chance"] = [vs_chance[m]["diff"], vs_chance[m]["diff_lo"], vs_chance[m]["diff_hi"]]
        table.append(row)
    return table


def md_rows(table: list[dict], cost: dict[str, float]) -> list[dict]:
    def cell(v, ci):
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    def diff(d):
        mark = " ▲" if d[1] > 0 else " ▼" if d[2] < 0 else ""
        return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]{mark}"

    out = []
    for r in table:
        out.append({"method": r["method"], "agree@1": cell(r["agree@1"], r["agree@1 ci"]),
                    "agree@5": cell(r["agree@5"], r["agree@5 ci"]), "agree@5 − raw": diff(r["agree@5 vs raw"]),
                    "agree@5 − chance": diff(r["agree@5 vs chance"]),
                    "ndcg@10": cell(r["ndcg@10"], r["ndcg@10 ci"]), "ndcg@10 − raw": diff(r["ndcg@10 vs raw"]),
                    "ms/item": f"{1000 * cost.get(r['method'], float('nan')):.1f}"})
    return out


def plot(results: dict, path: Path) -> None:
    """agree@5 per method and aspect with its CI; the dotted line is chance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.5), squeeze=False)
    for ax, (aspect, res) in zip(axes[0], results.items()):
        rows = res["table"]
        y = np.arange(len(rows))[::-1]
        means = np.array([r["agree@5"] for r in rows])
        lo = means - np.array([r["agree@5 ci"][0] for r in rows])
        hi = np.array([r["agree@5 ci"][1] for r in rows]) - means
        colours = ["#888888" if r["method"] == "raw" else "#d62728" if r["method"] == res["default"] else "#1f77b4"
                   for r in rows]
        ax.barh(y, means, xerr=[lo, hi], color=colours, capsize=3)
        ax.set_yticks(y, [f"{r['method']} (n={r['items']})" for r in rows], fontsize=9)
        ax.axvline(res["chance"]["agree@5"], color="black", linestyle=":", label="chance")
        ax.axvline(rows[0]["agree@5"], color="#888888", linestyle="--", linewidth=0.8, label="raw")
        ax.set_xlim(0, 1)
        ax.set_title(f"same {aspect}: share of the 5 nearest cities", fontsize=11)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("world_cities (209 cities, two halves): nearest-neighbour agreement by aspect, 95% bootstrap CI; "
                 "red = default method", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)


def run_aspect(aspect: str, texts: list[str], labels: list[str], split: list[np.ndarray], base,
               llm_labels: list[dict] | None = None) -> dict:
    vectors, cost = fixed_vectors(texts, base, aspect)
    mapped, train_cost, selected = trained_vectors(vectors, labels, split, llm_labels)
    vectors.update(mapped)
    cost.update(train_cost)
    per_method = {name: score(v, labels, split) for name, v in vectors.items()}
    everyone = np.arange(len(labels))
    luck = chance(labels, split)
    table = summarise(per_method, per_method["raw"], luck, everyone)
    return {"table": table, "cost_s_per_item": cost, "selected": selected,
            "chance": {m: float(luck[m].mean()) for m in METRICS}}


def run_llm(args, texts: list[str], labels: dict[str, list[str]], split: list[np.ndarray], base) -> None:
    """The LLM methods next to raw and extract, on the first --llm-limit items of each half (neighbours searched
    among those items of the item's half): writes results/aspect_bench_llm.{json,md}."""
    rows = np.sort(np.concatenate([h[: args.llm_limit] for h in split]))
    vecs, cost, info = llm_vectors(texts, base, ASPECTS, rows, args.llm_model)
    cols = ["method", "agree@1", "agree@5", "agree@5 − raw", "agree@5 − chance", "ndcg@10", "ndcg@10 − raw",
            "ms/item"]
    results, lines = {}, [
        f"The LLM methods (\"extract, then classify\", {info['llm']['model']}; llm-schema: the question and its "
        "closed list of classes; llm-fewshot: the same after one worked example per class) next to raw and extract, "
        f"on the first {args.llm_limit} items of each half ({len(rows)} items; neighbours searched among those items of "
        "the item's own half, so chance and every score differ from aspect_bench.md). Mean [95% bootstrap CI]; "
        "paired differences (▲ above zero, ▼ below). ms/item for the LLM rows: wall time per uncached LLM call "
        "of this run, one call per item (nan when every call was cached; see the JSON for calls made).", ""]
    for aspect in ASPECTS:
        fixed = {"raw": embed(base, texts, "document", EmbedOptions(progress=False)),
                 "extract": embed(ExtractiveAspectEncoder(base, aspect), texts, "document", EmbedOptions(progress=False)),
                 **vecs[aspect]}
        per = {name: score(v, labels[aspect], split, rows) for name, v in fixed.items()}
        luck = chance(labels[aspect], split, rows)
        table = summarise(per, per["raw"], luck, rows)
        results[aspect] = {"table": table, "cost": cost[aspect], "chance": {m: float(luck[m][rows].mean())
                                                                            for m in METRICS}}
        lcost = {k: float("nan") if v["s_per_item"] is None else v["s_per_item"] for k, v in cost[aspect].items()}
        lines += [f"## {aspect}", "", markdown_table(md_rows(table, lcost), cols), ""]
        lines += [f"First answers, {name}: " + " | ".join(f'"{a}"' for a in said) + ""
                  for name, said in info["answers"][aspect].items()] + [""]
    save("aspect_bench_llm", {"seed": args.seed, "llm_limit": args.llm_limit, "rows": rows.tolist(),
                              "results": results, "llm": info["llm"], "answers": info["answers"]}, "\n".join(lines))


def pick_default(results: dict, candidates: tuple[str, ...]) -> str:
    """The method (of `candidates`, none trained on gold labels) whose worst aspect gains most over raw at agree@5
    (lower CI bound)."""
    def worst(name):
        return min(next(r for r in res["table"] if r["method"] == name)["agree@5 vs raw"][1]
                   for res in results.values())
    return max(candidates, key=worst)


def write(args, data: dict, results: dict, default: str, figure: Path) -> None:
    cols = ["method", "agree@1", "agree@5", "agree@5 − raw", "agree@5 − chance", "ndcg@10", "ndcg@10 − raw",
            "ms/item"]
    lines = [
        f"{sum(data['counts']['climate'].values())} cities (data/world_cities), split once (seed {args.seed}) into "
        "two halves; each item's neighbours are searched in its own half, and trained maps are applied only to the "
        "half they were not trained on. Mean [95% bootstrap CI over items]; differences are paired, per item "
        "(▲: CI above zero, ▼: below). Chance = the label-frequency expectation of a random order. ms/item: "
        "embedding (uncached) or, for maps, training time spread over the items.",
        "",
        f"**Default method (`qkrag index --aspect NAME`): `{default}`** - of the methods that read no gold label "
        "(prefix, extract, extract2, proj-weak*, proj-llm*), the one whose worst aspect gains most over raw at agree@5 "
        "(lower CI bound).",
        "",
        "Label agreement between aspects (the data's own): " + "; ".join(
            f"{p['aspects']} ARI {p['ari']}" for p in data["pairs"]) + ".",
    ]
    for aspect, res in results.items():
        lines += ["", f"## {aspect}", "", "Chance: " + ", ".join(f"{m} {v:.3f}" for m, v in res["chance"].items())
                  + ".", "", markdown_table(md_rows(res["table"], res["cost_s_per_item"]), cols)]
        if res.get("llm_pairs"):
            p = res["llm_pairs"]
            per = "n/a (all cached)" if p["llm_s_per_item"] is None else (
                f"{p['llm_s_per_item']:.1f} s per judged item ({p['llm_s_per_call']:.2f} s a call, from this run's "
                f"{p['calls']} uncached calls)")
            lines += ["", f"proj-llm labels: the LLM judged {p['pairs_judged']} candidate pairs of {p['items_judged']} "
                      f"items and said yes to {p['yes']}; LLM cost {per}, on top of the ms/item (training)."]
    lines += [""] + ([args.note, ""] if args.note else []) + [f"![agree@5 by method]({figure.name})"]
    save("aspect_bench", {"data": data, "seed": args.seed, "default": default, "results": results,
                          "figure": str(figure.relative_to(ROOT))}, "\n".join(lines))
    for aspect, res in results.items():
        print(aspect, file=sys.stderr)
        print(markdown_table(md_rows(res["table"], res["cost_s_per_item"]), cols), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "world_cities" / "world_cities.jsonl"))
    parser.add_argument("--describe", action="store_true", help="only the labels' counts and cross-aspect agreement")
    parser.add_argument("--llm", action="store_true", help="only the LLM method, next to raw and extract, on a "
                        "subset: results/aspect_bench_llm.* (slow on CPU; cached)")
    parser.add_argument("--llm-limit", type=int, default=30, help="LLM methods on the first N items of each half")
    parser.add_argument("--llm-model", default=None, help="shipped LLM name (default: the 0.5B model)")
    parser.add_argument("--pair-anchors", type=int, default=24, help="proj-llm: items per half whose candidate pairs "
                        "the LLM judges (0: leave the proj-llm rows out)")
    parser.add_argument("--pair-candidates", type=int, default=3, help="proj-llm: candidates per anchor (its nearest "
                        "items under extract)")
    parser.add_argument("--note", default="", help="a sentence appended to the markdown (e.g. the LLM cost of the "
                        "earlier run that made the cached calls)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus, labels = load_labelled_corpus(args.data, ASPECTS)
    data = describe(labels)
    if args.describe:
        print(data)
        return
    texts = list(corpus.contents)
    split = halves(len(texts), args.seed)
    base = make_encoder()
    base.warm_up()
    if args.llm:
        run_llm(args, texts, labels, split, base)
        return
    pair_labels, pair_cost, pair_llm = ({a: None for a in ASPECTS}, {}, None)
    if args.pair_anchors:
        pair_labels, pair_cost, pair_llm = llm_pair_labels(texts, base, ASPECTS, split, args.pair_anchors,
                                                           args.pair_candidates, args.llm_model)
    results = {a: run_aspect(a, texts, labels[a], split, base, pair_labels[a]) for a in ASPECTS}
    default = pick_default(results, ("prefix", "extract", "extract2", "proj-weak", "proj-weak(extract)", "proj-llm",
                                     "proj-llm(extract→raw)") if args.pair_anchors else
                           ("prefix", "extract", "extract2", "proj-weak", "proj-weak(extract)"))
    for aspect, res in results.items():
        res["default"] = default
        res["llm_pairs"] = pair_cost.get(aspect)
    data["llm_pairs"] = {"anchors_per_half": args.pair_anchors, "candidates": args.pair_candidates, "llm": pair_llm}
    figure = RESULTS / "aspect_bench.png"
    plot(results, figure)
    write(args, data, results, default, figure)


if __name__ == "__main__":
    main()

"""Retrieval quality of the baselines on real BEIR collections, with 95% bootstrap CIs over queries:
BM25 (bm25s, Lucene k1=1.2 b=0.75, English stopwords, Snowball stemmer) and exact dense search with the default
encoder (all-MiniLM-L6-v2, cosine; plus its mean-centred and whitened variants), on SciFact test (binary qrels) and
Cranfield test (graded qrels 1-4).

    python benchmarks/retrieval_quality.py --data ../shared/data

References: SciFact nDCG@10 BM25 0.665 (BEIR paper, Elasticsearch), all-MiniLM-L6-v2 0.645 (MTEB leaderboard).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import save

from qkrag.retrieval.baselines import CenteredCosine, ExactDenseRetriever, Whitening
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.data import Collection, Corpus, Document, load_qrels, load_queries
from qkrag.embed.encoders import EmbedOptions
from qkrag.evaluate.metrics import EvalResult, evaluate_retriever, queries_are_documents
from qkrag.evaluate.report import results_table
from qkrag.evaluate.compare import compare

COLLECTIONS = ("scifact", "cranfield")
RETRIEVERS = ("bm25", "dense", "dense-centered", "dense-whitened")
REFERENCE = {("scifact", "bm25"): 0.665, ("scifact", "dense"): 0.645}


def load_collection(folder: Path, split: str = "test") -> tuple[Collection, list[str]]:
    """A BEIR folder, keeping documents with empty text out of the corpus (Cranfield has two, one of them judged
    relevant) instead of refusing the folder as `load_beir` does: such a judged document stays in the qrels as a
    relevant document no system can retrieve, which is how the official evaluation counts it."""
    docs, empty = [], []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            doc = Document(str(row["_id"]), row.get("text") or "", row.get("title") or "")
            (docs if doc.content else empty).append(doc if doc.content else doc.id)
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    queries = load_queries(folder)
    return Collection(Corpus(tuple(docs), str(folder)), {q: queries[q] for q in qrels}, qrels, folder.name,
                      split), empty


def make_retriever(name: str, corpus: Corpus):
    options = EmbedOptions(progress=False)
    if name == "bm25":
        return BM25Retriever(corpus)
    transform = {"dense": None, "dense-centered": CenteredCosine(), "dense-whitened": Whitening()}[name]
    return ExactDenseRetriever(corpus, transform=transform, options=options)


def run(data_dir: str | Path, retriever: str, split: str = "test") -> dict:
    """Evaluate one retriever on one BEIR folder; returns a JSON-ready dict (metrics, CIs, settings, timings)."""
    collection, empty = load_collection(Path(data_dir), split)
    t0 = time.perf_counter()
    system = make_retriever(retriever, collection.corpus)
    built = time.perf_counter() - t0
    ignore = queries_are_documents(collection)  # False on both: SciFact ids never collide, Cranfield's by accident
    t0 = time.perf_counter()
    result = evaluate_retriever(system, collection, k=100, ignore_identical_ids=ignore, name=retriever)
    searched = time.perf_counter() - t0
    return {"collection": collection.name, "split": split, "retriever": retriever, "system": repr(system),
            "n_docs": len(collection.corpus), "n_queries": result.n_queries, "empty_docs_dropped": empty,
            "ignore_identical_ids": ignore, **result.to_dict(), "index_seconds": round(built, 2),
            "search_eval_seconds": round(searched, 2), "_result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding the BEIR collections")
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    parser.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS), choices=RETRIEVERS)
    args = parser.parse_args()

    rows, body = [], []
    for name in args.collections:
        results: dict[str, EvalResult] = {}
        for retriever in args.retrievers:
            row = run(Path(args.data) / name, retriever)
            results[retriever] = row.pop("_result")
            ref = REFERENCE.get((name, retriever))
            if ref is not None:
                row["reference_ndcg@10"] = ref
            rows.append(row)
            print(f"{name:10s} {retriever:15s} nDCG@10 {row['ndcg@10']:.4f} {row['ndcg@10_ci']}", flush=True)
        first = rows[-len(args.retrievers)]
        body.append(f"## {name} ({first['split']}: {first['n_queries']} queries, {first['n_docs']} documents)")
        body.append(results_table(results).rstrip())
        if "bm25" in results and "dense" in results:
            c = compare(results["dense"], results["bm25"])
            rows.append({"collection": name, "comparison": "dense - bm25", "metric": c.metric,
                         "difference": c.difference, "ci": list(c.ci), "p_value": c.p_value, "test": c.test})
            body.append(f"dense - bm25 nDCG@10: {c.difference:+.4f} (95% CI [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}], "
                        f"p = {c.p_value:.4f}, {c.test}, 10,000 sign flips).")
        notes = [f"ignore_identical_ids={first['ignore_identical_ids']}"]
        if first["empty_docs_dropped"]:
            notes.append(f"documents with empty text left out of the corpus (still in the qrels): "
                         f"{first['empty_docs_dropped']}")
        refs = [f"{r}: {REFERENCE[(name, r)]}" for r in args.retrievers if (name, r) in REFERENCE]
        if refs:
            notes.append("published nDCG@10 " + ", ".join(refs))
        body.append("; ".join(notes) + ".")
    body.append("Metrics by pytrec_eval (ndcg_cut_10, recall_100, recip_rank on the run cut to 10, map); judged "
                "queries with no hit count as 0. CIs: percentile bootstrap over queries, 2,000 resamples, seed 0.")
    save("retrieval_quality", {"rows": rows}, "\n\n".join(body))
    print("\n\n".join(body))


if __name__ == "__main__":
    main()

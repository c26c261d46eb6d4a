"""The exported sentence-transformers model used as an encoder: queries through the document route (plain `encode()`,
what qkrag's embed did before it called `encode_query`, and what LangChain's HuggingFaceEmbeddings / LlamaIndex's
HuggingFaceEmbedding do) against queries through `encode_query` (routes honoured).

Exports a saved projection (`qkrag export`), embeds the test split's documents once with `encode_document`, and
scores nDCG@10 three ways by exact search: cosine with document-route queries, cosine with query-route queries (what
`qkrag eval --retriever exact --model EXPORT` does now), and the dot product with query-route queries (qkrag's own
projected ranking: logit − b). Writes benchmarks/results/export_routes.json and .md.

    ../.venv/bin/python export_routes.py --data ../../shared/data/scifact \
        --projection ../../runs/main_job/scifact-llm/projections/qk_human
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from qkrag.atomic import write_json, write_text
from qkrag.data import load_beir
from qkrag.evaluate.metrics import evaluate_run
from qkrag.projection.export import export_projection
from qkrag.ranking import exact_search

RESULTS = Path(__file__).resolve().parent / "results"


def ndcg(test, query_ids, queries, documents, space: str) -> float:
    scores, positions = exact_search(queries, documents, 100, space)
    run = {q: {test.corpus.ids[p]: float(s) for s, p in zip(srow, prow)}
           for q, srow, prow in zip(query_ids, scores, positions)}
    return round(evaluate_run(test.qrels, run).means["ndcg@10"], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--projection", type=Path, required=True)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = SentenceTransformer(str(export_projection(args.projection, Path(tmp) / "st")), device="cpu")
        test = load_beir(args.data, "test")
        documents = model.encode_document(list(test.corpus.contents), batch_size=64, convert_to_numpy=True)
        query_ids = [q for q in test.queries if q in test.qrels]
        texts = [test.queries[q] for q in query_ids]
        old, new = model.encode(texts, convert_to_numpy=True), model.encode_query(texts, convert_to_numpy=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "data": str(args.data),
              "projection": str(args.projection), "queries": len(query_ids), "documents": len(test.corpus.ids),
              "ndcg@10": {"document_route_queries_cosine": ndcg(test, query_ids, old, documents, "cosine"),
                          "query_route_cosine": ndcg(test, query_ids, new, documents, "cosine"),
                          "query_route_dot_product": ndcg(test, query_ids, new, documents, "ip")},
              "seconds": round(time.perf_counter() - started, 1),
              "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "export_routes.json", result)
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in result["ndcg@10"].items())
    write_text(RESULTS / "export_routes.md", f"""# The exported model as an encoder: query route or document route

`{result['command']}`

{result['data']}: {result['queries']} test queries, {result['documents']} documents; projection {result['projection']}.
A shared 2-core machine (1-min load average {result['load_average'][0]} at the start, {result['load_average'][1]} at the
end): {result['seconds']} s.

| queries embedded with | nDCG@10 |
|---|---:|
{rows}

`document_route_queries_cosine` is what plain `encode()` gives (and qkrag's embed gave before it called
`encode_query`); `query_route_cosine` is `qkrag eval --retriever exact --model EXPORT` now; `query_route_dot_product`
is qkrag's projected ranking (the logit minus b).
""")
    print(result)


if __name__ == "__main__":
    main()

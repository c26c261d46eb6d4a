"""Scale benchmarks (issue 16), one part per run, each writing results/scale_bench_PART.{json,md}:

  onnx    ONNX-int8 vs torch encode throughput on N SciFact abstracts (same run, alternating), and the nDCG@10 of both
          on SciFact's test queries (exact search). Goals: >= 2x, nDCG@10 cost <= 0.005.
          python benchmarks/scale_bench.py onnx --data ../shared/data/scifact --n 2000
  ray     embedding throughput, local `embed()` vs `--engine ray` on the same texts in the same run (fresh caches).
          python benchmarks/scale_bench.py ray --data ../shared/data/scifact --n 2000 --ray-cpus 2
  chroma  N synthetic 384-d vectors into a Chroma server on loopback (`chroma run`): add throughput; the streamed
          projected-collection build (throughput, peak RSS of the building process) at each size; query p50/p95 raw vs
          projected. The full run of the issue:
          python benchmarks/scale_bench.py chroma --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import markdown_table, save

from qkrag.cache import DiskCache


def load() -> str:
    return os.popen("uptime").read().strip()


def part_onnx(args) -> None:
    from qkrag.data import load_beir
    from qkrag.embed.encoders import EmbedOptions, SentenceTransformerEncoder, embed
    from qkrag.embed.onnx import OnnxInt8Encoder
    from qkrag.evaluate.metrics import evaluate_retriever
    from qkrag.retrieval.index import DenseRetriever, ExactIndex

    collection = load_beir(args.data, "test")
    texts = collection.corpus.contents[: args.n]
    torch_enc = SentenceTransformerEncoder()
    onnx_enc = OnnxInt8Encoder(SentenceTransformerEncoder())
    t0 = time.perf_counter()
    onnx_enc.warm_up()  # exports on first use (cached afterwards)
    export_s = time.perf_counter() - t0
    torch_enc.warm_up()
    for enc in (torch_enc, onnx_enc):
        enc.embed_batch(texts[:64], "document")
    seconds: dict[str, list[float]] = {"torch": [], "onnx-int8": []}
    loads = [load()]
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        for name, enc in (("torch", torch_enc), ("onnx-int8", onnx_enc)):
            t0 = time.perf_counter()
            embed(enc, texts, "document", EmbedOptions(cache=None, progress=False))
            seconds[name].append(time.perf_counter() - t0)
        loads.append(load())
    quality = {}
    for name, enc in (("torch", torch_enc), ("onnx-int8", onnx_enc)):
        corpus = collection.corpus
        vectors = embed(enc, corpus.contents, "document", EmbedOptions(progress=False))
        index = ExactIndex(list(corpus.ids), vectors, "cosine", fingerprint=enc.fingerprint)
        result = evaluate_retriever(DenseRetriever(enc, index), collection, k=100)
        quality[name] = result.means["ndcg@10"]
    rows = [{"backend": n, "seconds": min(s), "texts_per_s": len(texts) / min(s), "ndcg@10": quality[n]}
            for n, s in seconds.items()]
    speedup = min(seconds["torch"]) / min(seconds["onnx-int8"])
    cost = quality["torch"] - quality["onnx-int8"]
    result = {"data": args.data, "n_texts": len(texts), "rows": rows, "speedup": speedup, "ndcg_cost": cost,
              "export_seconds": export_s, "goals": {"speedup": ">= 2", "ndcg_cost": "<= 0.005"},
              "met": {"speedup": speedup >= 2, "ndcg_cost": cost <= 0.005}, "uptime": loads}
    body = markdown_table(rows, ["backend", "seconds", "texts_per_s", "ndcg@10"])
    body += (f"\n\nSpeed-up ONNX-int8 / torch: **{speedup:.2f}x** (goal >= 2: {'met' if speedup >= 2 else 'NOT met'})."
             f" nDCG@10 cost: **{cost:+.4f}** (goal <= 0.005: {'met' if cost <= 0.005 else 'NOT met'}).\n"
             f"{len(texts)} SciFact abstracts, best of {args.repeats} alternating runs, no cache; nDCG@10 on "
             f"{len(collection.queries)} test queries, exact cosine search over {len(collection.corpus)} documents. "
             f"One-off export + quantisation: {export_s:.1f} s. Shared 2-core machine; `uptime` before and after "
             f"each round: {loads}.")
    save("scale_bench_onnx", result, body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["onnx", "ray", "chroma"])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    {"onnx": part_onnx, "ray": globals().get("part_ray"), "chroma": globals().get("part_chroma")}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())

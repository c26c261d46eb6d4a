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
  bm25    BM25 over N synthetic documents (Zipf-distributed words), each size in a fresh process: the in-memory build
          (`BM25Retriever(corpus)`, corpus in memory) against the streamed one (`build_bm25` from a generator, loaded
          memory-mapped): seconds, peak RSS, peak anonymous memory (file pages of the memory-mapped output excluded),
          and the same 50 queries' top 10 from both (they must agree).
          python benchmarks/scale_bench.py bm25 --sizes 100000 500000
  index   `build_index` of N synthetic 2 KB documents from a JSONL file into a Chroma server, each size and mode in a
          fresh process: the corpus loaded whole (`load_corpus`) against read on demand (`CorpusFile`, what `qkrag
          index` does): peak memory of the indexing process. A 16-d stand-in encoder keeps Chroma's work small.
          python benchmarks/scale_bench.py index --sizes 50000 200000
  pages   why `ChromaIndex` frees each page's HTTP bodies: a collection of N synthetic vectors on a Chroma server, read
          through `iter_vectors` in a fresh process that imported sentence-transformers (torch: the heap of a process
          serving a real encoder), with the release off, young-generation (what qkrag does) and full: growth of the
          peak RSS over the read, and the time spent collecting.
          python benchmarks/scale_bench.py pages --sizes 16000 64000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import zlib
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


def part_ray(args) -> None:
    from qkrag.data import load_corpus
    from qkrag.embed.encoders import EmbedOptions, SentenceTransformerEncoder, embed
    from qkrag.embed.ray import RayEngine

    texts = load_corpus(args.data).contents[: args.n]
    encoder = SentenceTransformerEncoder()
    encoder.warm_up()
    embed(encoder, texts[:64], "document", EmbedOptions(cache=None, progress=False))  # warm threads
    rows, loads = [], [load()]
    t0 = time.perf_counter()
    local = embed(encoder, texts, "document", EmbedOptions(cache=None, progress=False))
    rows.append({"path": "local embed()", "seconds": time.perf_counter() - t0})
    loads.append(load())
    engine = RayEngine(num_cpus=args.ray_cpus, actors=args.ray_cpus)
    t0 = time.perf_counter()
    engine.start()
    rows.append({"path": f"ray.init (local, {args.ray_cpus} CPUs)", "seconds": time.perf_counter() - t0})
    for run in ("ray, first dataset", "ray, second dataset"):
        with tempfile.TemporaryDirectory() as tmp:  # a fresh cache each time: measure embedding, not lookups
            t0 = time.perf_counter()
            on_ray = embed(encoder, texts, "document",
                           EmbedOptions(cache=DiskCache(Path(tmp) / "c.sqlite"), progress=False, engine=engine))
            rows.append({"path": run + " (actor start-up included)", "seconds": time.perf_counter() - t0})
        loads.append(load())
    engine.shutdown()
    for row in rows:
        if not row["path"].startswith("ray.init"):
            row["texts_per_s"] = len(texts) / row["seconds"]
    diff = float(np.abs(on_ray - local).max())
    result = {"data": args.data, "n_texts": len(texts), "rows": rows, "max_abs_diff": diff, "ray_cpus": args.ray_cpus,
              "uptime": loads}
    body = markdown_table(rows, ["path", "seconds", "texts_per_s"])
    body += (f"\n\n{len(texts)} texts, the same in every row; vectors from Ray and local differ by at most {diff:.1e}. "
             f"Each Ray run builds a new actor pool ({args.ray_cpus} actors, each loading torch and the model), which "
             f"on one 2-core machine only adds overhead: Ray pays off when the actors sit on more cores or machines "
             f"than one process can use. Shared 2-core machine; `uptime` through the run: {loads}.")
    save("scale_bench_ray", result, body)
    print(body)


# ------------------------------------------------------------------------------------------------------------ chroma
DIM = 384
BUILD_SCRIPT = """
import json, sys, time
sys.path.insert(0, {bench!r})
from scale_bench import SyntheticEncoder, raw_index, status_mb
from qkrag.projection.model import QKProjection
from qkrag.retrieval.projected import ProjectedRetriever
before = status_mb("VmHWM")
raw = raw_index({port}, {n})
t0 = time.perf_counter()
retriever = ProjectedRetriever(SyntheticEncoder(), QKProjection.identity({dim}, "synthetic-{dim}"), raw)
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "count": retriever.index.count(), "rss_before_mb": before,
                   "peak_rss_mb": status_mb("VmHWM")}}))
"""


def status_mb(field: str) -> float:
    """A field of /proc/self/status in MB. VmHWM is this process's own peak RSS: unlike ru_maxrss, which Linux
    carries over from the parent through fork and exec, so a child of a big parent reports the parent's size."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class SyntheticEncoder:
    """Stands for the encoder that made the synthetic vectors: an identity, a dimension, seeded random queries."""

    name = fingerprint = cache_key = f"synthetic-{DIM}"
    dimension = DIM

    def warm_up(self) -> None: ...

    def embed_batch(self, texts, side):
        rng = np.random.default_rng(len(texts))
        return unit(rng.standard_normal((len(texts), DIM), dtype=np.float32))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def raw_index(port: int, n: int):
    from qkrag.retrieval.index import ChromaIndex, IndexConfig

    config = IndexConfig(collection=f"raw-{n}", host="127.0.0.1", port=port, batch_size=4096, timeout=600)
    return ChromaIndex.open(config, SyntheticEncoder.fingerprint, DIM)


@contextlib.contextmanager
def chroma_server(path: Path, port: int):
    """A `chroma run` on 127.0.0.1:`port` storing in `path`, up before the block runs and stopped after it."""
    import subprocess
    import urllib.request

    server = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path", str(path), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("chroma run did not come up")
        yield server
    finally:
        server.terminate()
        server.wait(60)


def fill(port: int, n: int) -> dict:
    """Add n synthetic unit vectors (with short texts) in pages generated on the fly: bounded client memory."""
    index = raw_index(port, n)
    page = 4096
    t0 = time.perf_counter()
    for start in range(0, n, page):
        rng = np.random.default_rng(start)
        size = min(page, n - start)
        ids = [f"d{i}" for i in range(start, start + size)]
        index.add_vectors(ids, unit(rng.standard_normal((size, DIM), dtype=np.float32)), [f"doc {i}" for i in ids])
        done = start + size
        if done % (page * 25) < page or done == n:  # a progress line about every 100k vectors, with an estimate
            rate = done / (time.perf_counter() - t0)
            print(f"added {done:,}/{n:,} ({rate:.0f}/s, ~{(n - done) / rate / 60:.0f} min left)", file=sys.stderr,
                  flush=True)
    seconds = time.perf_counter() - t0
    index.mark_complete(True, content_hash=f"synthetic-{n}", count=n)
    return {"add_seconds": seconds, "add_per_s": n / seconds}


def latencies(search, queries: np.ndarray) -> dict:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(q[None, :], 10)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def part_chroma(args) -> None:
    import json
    import subprocess

    import psutil

    from qkrag.projection.model import QKProjection
    from qkrag.retrieval.projected import ProjectedRetriever

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        with chroma_server(Path(tmp) / "db", args.port) as server:
            for n in args.sizes:
                row = {"vectors": n, **fill(args.port, n), "uptime_after_add": load()}
                script = BUILD_SCRIPT.format(bench=str(Path(__file__).parent), port=args.port, n=n, dim=DIM)
                child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                build = json.loads(child.stdout.strip().splitlines()[-1])
                row.update({"projection_build_seconds": build["seconds"], "projection_per_s": n / build["seconds"],
                            "projection_build_peak_rss_mb": build["peak_rss_mb"],
                            "rss_before_build_mb": build["rss_before_mb"],
                            "server_rss_mb": psutil.Process(server.pid).memory_info().rss / 1024**2})
                raw = raw_index(args.port, n)
                projected = ProjectedRetriever(SyntheticEncoder(), QKProjection.identity(DIM, SyntheticEncoder.name),
                                               raw)
                queries = unit(np.random.default_rng(7).standard_normal((args.queries, DIM), dtype=np.float32))
                raw.query(queries[:5], 10), projected.search_vectors(queries[:5], 10)  # load both graphs first
                row.update({f"raw_{k}": v for k, v in latencies(raw.query, queries).items()})
                row.update({f"projected_{k}": v for k, v in latencies(projected.search_vectors, queries).items()})
                row["uptime_end"] = load()
                rows.append(row)
                print(row, flush=True)
                save_chroma(args, rows)


def save_chroma(args, rows: list[dict]) -> None:
    columns = ["vectors", "add_per_s", "projection_per_s", "projection_build_peak_rss_mb", "rss_before_build_mb",
               "server_rss_mb", "raw_p50_ms", "raw_p95_ms", "projected_p50_ms", "projected_p95_ms"]
    peak = max(r["projection_build_peak_rss_mb"] for r in rows)
    growth = [r["projection_build_peak_rss_mb"] - r["rss_before_build_mb"] for r in rows]
    result = {"sizes": [r["vectors"] for r in rows], "dimension": DIM, "rows": rows, "queries": args.queries,
              "goal": "projection build peak RSS independent of corpus size, <= 1024 MB",
              # what the build itself adds (peak minus the process after imports) must not grow with the corpus
              "met": peak <= 1024 and (len(rows) < 2 or max(growth) - min(growth) < 100)}
    body = markdown_table(rows, columns)
    body += (f"\n\nSynthetic unit {DIM}-d vectors into one `chroma run` server on loopback (HNSW M=32, "
             f"ef_construction=200, ef_search=400: qkrag's defaults). The projected collection (identity {DIM}x{DIM} "
             f"Q/K projection) is built in a separate process by `ProjectedRetriever`, page by page; its peak RSS "
             f"(VmHWM, whole process, imports included) is the memory figure, `rss_before_build_mb` the same "
             f"process after imports. Query latency: {args.queries} single queries, k=10, over HTTP. Shared 2-core "
             f"machine (see uptime in the JSON).")
    save("scale_bench_chroma", result, body)

# -------------------------------------------------------------------------------------------------------------- bm25
BM25_SCRIPT = """
import json, sys
sys.path.insert(0, {bench!r})
from scale_bench import bm25_child
print(json.dumps(bm25_child({mode!r}, {n}, {folder!r})))
"""


def synthetic_documents(n: int, chunk: int = 10_000):
    """n documents of 60-140 words drawn from a Zipf law over 500,000 word forms: a vocabulary that keeps growing
    with the corpus, as real text does. Made on the fly, chunk by chunk, seeded: the same n gives the same texts."""
    for start in range(0, n, chunk):
        rng = np.random.default_rng(start)
        size = min(chunk, n - start)
        lengths = rng.integers(60, 141, size)
        words = np.minimum(rng.zipf(1.15, int(lengths.sum())), 500_000)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for i in range(size):
            yield f"doc{start + i}", " ".join(f"w{w}" for w in words[offsets[i]:offsets[i + 1]])


class AnonPeak:
    """Samples the process's anonymous resident memory (RssAnon: heap, not file pages) every 20 ms; `peak` in MB."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def bm25_child(mode: str, n: int, folder: str) -> dict:
    import resource

    from qkrag.data import Corpus
    from qkrag.retrieval.bm25 import BM25Retriever, build_bm25

    queries = [" ".join(f"w{w}" for w in np.random.default_rng(q).zipf(1.15, 4)) for q in range(50)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    anon = AnonPeak()
    t0 = time.perf_counter()
    if mode == "in-memory":
        retriever = BM25Retriever(Corpus.from_texts(dict(synthetic_documents(n))))
    else:
        build_bm25(synthetic_documents(n), folder)
        retriever = BM25Retriever.load(folder, mmap=True)
    seconds = time.perf_counter() - t0
    hits = [[h.id for h in row] for row in retriever.search(queries, k=10)]
    return {"mode": mode, "documents": n, "seconds": seconds, "docs_per_s": n / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": before,
            "peak_anon_mb": anon.stop(), "top10": hits}


def part_bm25(args) -> None:
    import json
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            for mode in ("in-memory", "streamed"):
                script = BM25_SCRIPT.format(bench=str(Path(__file__).parent), mode=mode, n=n,
                                            folder=str(Path(tmp) / f"bm25-{n}"))
                child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                rows.append({**json.loads(child.stdout.strip().splitlines()[-1]), "uptime": load()})
                print({k: v for k, v in rows[-1].items() if k != "top10"}, flush=True)
            on_disk = sum(f.stat().st_size for f in (Path(tmp) / f"bm25-{n}").iterdir())
            rows[-1]["index_mb_on_disk"] = on_disk / 1024**2
            rows[-1]["same_top10_as_in_memory"] = rows[-1]["top10"] == rows[-2]["top10"]
    save_bm25(args, rows)


def save_bm25(args, rows: list[dict]) -> None:
    streamed = [r for r in rows if r["mode"] == "streamed"]
    result = {"sizes": args.sizes, "rows": [{k: v for k, v in r.items() if k != "top10"} for r in rows],
              "same_results": all(r["same_top10_as_in_memory"] for r in streamed)}
    body = markdown_table(result["rows"], ["documents", "mode", "seconds", "docs_per_s", "peak_rss_mb",
                                           "peak_anon_mb", "rss_before_mb", "index_mb_on_disk"])
    body += ("\n\nSynthetic documents of 60-140 words from a Zipf law (s=1.15) over 500,000 word forms, made on the "
             "fly; each row a fresh process. in-memory: `BM25Retriever(Corpus)` (the corpus, its tokens and the index "
             "in memory at once); streamed: `build_bm25(generator, folder)` then `BM25Retriever.load(folder, "
             "mmap=True)`. peak_rss_mb is ru_maxrss (it counts file pages of the memory-mapped output the process "
             "touched, which the kernel can drop); peak_anon_mb is the sampled peak of RssAnon (heap only). The same "
             f"50 queries' top 10 agree between the two: {result['same_results']}. Shared 2-core machine; uptime "
             "per row in the JSON.")
    save("scale_bench_bm25", result, body)
    print(body)


# ------------------------------------------------------------------------------------------------------------- index
INDEX_SCRIPT = """
import json, sys
sys.path.insert(0, {bench!r})
from scale_bench import index_child
print(json.dumps(index_child({mode!r}, {path!r}, {port}, {n})))
"""


class TinyEncoder(SyntheticEncoder):
    """A 16-d stand-in encoder, seeded by each text: Chroma's share of the work stays small, the texts are the load."""

    name = fingerprint = cache_key = "synthetic-16"
    dimension = 16

    def embed_batch(self, texts, side):
        return unit(np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts])
                    .astype(np.float32))


def write_corpus_file(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for doc_id, text in synthetic_documents(n):
            out.write(json.dumps({"_id": doc_id, "text": (text + " ") * 3}) + "\n")  # ~2 KB a document


def index_child(mode: str, path: str, port: int, n: int) -> dict:
    from qkrag.data import CorpusFile, load_corpus
    from qkrag.embed.encoders import EmbedOptions
    from qkrag.retrieval.index import IndexConfig, build_index

    anon = AnonPeak()
    t0 = time.perf_counter()
    corpus = load_corpus(path) if mode == "load_corpus" else CorpusFile(path)
    config = IndexConfig(collection=f"{mode.replace('_', '-')}-{n}", host="127.0.0.1", port=port, timeout=600)
    built = build_index(corpus, TinyEncoder(), config, EmbedOptions(cache=None, progress=False), progress=False)
    return {"mode": mode, "documents": n, "stored": built.count(), "seconds": time.perf_counter() - t0,
            "peak_anon_mb": anon.stop(), "peak_rss_mb": status_mb("VmHWM"), "content_hash": built.metadata["qkrag:content_hash"]}


def part_index(args) -> None:
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        port = args.port + 1
        with chroma_server(Path(tmp) / "db", port):
            for n in args.sizes:
                corpus = Path(tmp) / f"corpus-{n}.jsonl"
                write_corpus_file(corpus, n)
                for mode in ("load_corpus", "CorpusFile"):
                    script = INDEX_SCRIPT.format(bench=str(Path(__file__).parent), mode=mode, path=str(corpus),
                                                 port=port, n=n)
                    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                    rows.append({**json.loads(child.stdout.strip().splitlines()[-1]), "uptime": load(),
                                 "corpus_mb": corpus.stat().st_size / 1024**2})
                    print(rows[-1], flush=True)
    same = all(a["content_hash"] == b["content_hash"] for a, b in zip(rows[::2], rows[1::2]))
    result = {"sizes": args.sizes, "rows": rows, "same_content_hash": same}
    body = markdown_table(rows, ["documents", "mode", "corpus_mb", "seconds", "peak_anon_mb", "peak_rss_mb"])
    body += (f"\n\n`build_index` into a Chroma server on loopback, each row a fresh process. load_corpus: the corpus "
             f"read whole into memory first; CorpusFile: what `qkrag index` does for JSONL/BEIR (ids and offsets in "
             f"memory, texts read back a page at a time). peak_anon_mb: sampled RssAnon (heap); peak_rss_mb: "
             f"VmHWM (the child's own peak). Both modes record the same content hash: {same}. Shared 2-core machine; uptime per row "
             f"in the JSON.")
    save("scale_bench_index", result, body)
    print(body)


# ------------------------------------------------------------------------------------------------------------- pages
PAGES_SCRIPT = """
import json, sys
sys.path.insert(0, {bench!r})
from scale_bench import pages_child
print(json.dumps(pages_child({mode!r}, {port}, {n})))
"""
RELEASES = ("off", "young", "full")


def pages_child(mode: str, port: int, n: int) -> dict:
    import gc
    import importlib

    importlib.import_module("sentence_transformers")  # and torch: the heap of a process that serves a real encoder
    from qkrag.retrieval.index import ChromaIndex

    spent = [0.0]

    def release(self) -> None:  # stands in for ChromaIndex's own (young) release, timed, or for none
        t0 = time.perf_counter()
        if mode != "off":
            gc.collect(1 if mode == "young" else 2)
        spent[0] += time.perf_counter() - t0

    ChromaIndex._free_http_bodies = release
    raw = raw_index(port, n)
    gc.collect()
    before, objects = status_mb("VmRSS"), len(gc.get_objects())
    t0 = time.perf_counter()
    pages = sum(1 for _ in raw.iter_vectors(texts=True))
    return {"release": mode, "vectors": n, "pages": pages, "read_seconds": time.perf_counter() - t0,
            "gc_ms_per_page": 1000 * spent[0] / pages, "rss_before_mb": before,
            "peak_growth_mb": status_mb("VmHWM") - before, "tracked_objects": objects}


def part_pages(args) -> None:
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        with chroma_server(Path(tmp) / "db", args.port):
            for n in args.sizes:
                fill(args.port, n)
            for mode in RELEASES:
                for n in args.sizes:
                    script = PAGES_SCRIPT.format(bench=str(Path(__file__).parent), mode=mode, port=args.port, n=n)
                    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                    rows.append({**json.loads(child.stdout.strip().splitlines()[-1]), "uptime": load()})
                    print(rows[-1], flush=True)
    body = markdown_table(rows, ["release", "vectors", "pages", "read_seconds", "gc_ms_per_page", "rss_before_mb",
                                 "peak_growth_mb", "tracked_objects"])
    body += ("\n\nEach row a fresh process that imported sentence-transformers, reading a collection of synthetic "
             f"{DIM}-d vectors (with texts) through `ChromaIndex.iter_vectors` from a `chroma run` server on loopback, "
             "in pages of 1,024. release: what is run after each page's request: nothing, `gc.collect(1)` (young "
             "generations: what qkrag does) or `gc.collect(2)` (full). peak_growth_mb: VmHWM at the end minus RSS "
             "before the read. Shared 2-core machine; uptime per row in the JSON.")
    save("scale_bench_pages", {"sizes": args.sizes, "rows": rows}, body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["onnx", "ray", "chroma", "bm25", "index", "pages"])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", default=None, help="where the Chroma server keeps its files (a temp folder)")
    args = parser.parse_args()
    parts = {"onnx": part_onnx, "ray": part_ray, "chroma": part_chroma, "bm25": part_bm25, "index": part_index,
             "pages": part_pages}
    parts[args.part](args)


if __name__ == "__main__":
    sys.exit(main())

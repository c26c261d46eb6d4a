"""The main job: does a projection trained on synthetic pairs beat raw cosine? One call, real data, honest numbers.

    embed corpus -> generate pairs from the corpus only -> train projections -> index in Chroma -> evaluate on test

Every method is a row: BM25; raw cosine; centred and whitened cosine; a query-only adapter and a Q/K projection on
the synthetic pairs; a Q/K projection on the human train split when the folder has one; and a full fine-tune of the
encoder on the same synthetic pairs (what a user would otherwise do). Each row gets nDCG@10, Recall@100, MRR@10 with
bootstrap CIs, a paired test against raw cosine, its training time and query latency, and ECE where it outputs a
probability. The test judgments are only ever read to score; hyperparameters are fixed or chosen on validation pairs
carved from the training data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from ._atomic import write_json, write_text
from .data import Collection, load_beir, splits
from .errors import fail
from .retrieval import Hit

METHODS = ("bm25", "cosine", "centered_cosine", "whitened_cosine", "query_adapter", "qk_synthetic", "qk_human",
           "finetune")


@dataclass
class BenchConfig:
    """What to run. Generation is the costly step (~3 s per LLM call on 2 cores), so it runs on a seeded sample of
    passages; everything is cached, so a re-run only pays for what changed."""

    data: Path
    out: Path = Path("runs/bench")
    split: str = "test"
    model: str | None = None  # encoder; default: the shipped all-MiniLM-L6-v2
    embed_base_url: str | None = None
    generator: str = "llm"  # "llm" (embedded local server, or llm_base_url) or "ict" (no LLM)
    llm_base_url: str | None = None  # an OpenAI-compatible server for generation instead of the embedded one
    llm_model: str | None = None
    sample: int = 200  # passages to generate queries for
    candidates: int = 4  # LLM candidates per passage (two per call); the pipeline keeps the ones of human-like difficulty
    few_shot: int = 4  # example queries taken from the train split (never test) when one exists
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    finetune_epochs: int = 1
    skip_empty: bool = False  # leave empty documents out (Cranfield has two) instead of failing
    progress: bool = True


@dataclass
class Row:
    method: str
    result: Any  # EvalResult
    train_seconds: float = 0.0
    latency_ms: float = 0.0
    ece: float | None = None
    notes: str = ""
    comparison: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, **self.result.to_dict(), "train_seconds": round(self.train_seconds, 2),
               "latency_ms": round(self.latency_ms, 3), "ece": self.ece, "notes": self.notes}
        out.update({f"vs_cosine_{k}": v for k, v in self.comparison.items()})
        return out


def _timed_search(search: Callable[[Sequence[str], int], list[list[Hit]]], queries: list[str], k: int
                  ) -> tuple[list[list[Hit]], float]:
    """Run all queries (query vectors come from the embedding cache after the first pass, so the time measured is
    the retrieval itself: index lookup plus any projection) and return the hits and milliseconds per query."""
    search(queries[:1], k)  # warm: load models, fill the query cache for this text
    t0 = time.perf_counter()
    hits = search(queries, k)
    return hits, 1000 * (time.perf_counter() - t0) / max(1, len(queries))


class Bench:
    """Runs the benchmark described by a `BenchConfig`; `run()` returns the rows and writes the report."""

    def __init__(self, config: BenchConfig):
        self.config = config
        unknown = [m for m in config.methods if m not in METHODS]
        if unknown:
            raise fail("methods", f"{unknown} are not benchmark methods", f"choose from {list(METHODS)}")
        self.test: Collection = load_beir(config.data, config.split, skip_empty=config.skip_empty)
        self.corpus = self.test.corpus
        self.train: Collection | None = None
        if "train" in splits(config.data) and config.split != "train":
            self.train = load_beir(config.data, "train", corpus=self.corpus)
        self.rows: list[Row] = []
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ pieces

    def _encoder(self):
        from .embed import make_encoder

        return make_encoder(self.config.model, base_url=self.config.embed_base_url)

    def _evaluate(self, method: str, search, train_seconds: float = 0.0, notes: str = "",
                  probability: Callable[[list[list[Hit]]], float | None] | None = None) -> Row:
        from .evaluate import evaluate_run, queries_are_documents
        from .retrieval import to_run

        qids = list(self.test.queries)
        hits, latency = _timed_search(search, [self.test.queries[q] for q in qids], 100)
        result = evaluate_run(self.test.qrels, to_run(qids, hits), name=method,
                              ignore_identical_ids=queries_are_documents(self.test))
        ece = probability(hits) if probability else None
        row = Row(method, result, train_seconds, latency, ece, notes)
        self.rows.append(row)
        return row

    def _ece(self, hits: list[list[Hit]]) -> float | None:
        from .evaluate import calibration_pairs, expected_calibration_error

        pairs = calibration_pairs(hits, list(self.test.queries), self.test.qrels)
        return expected_calibration_error(*pairs) if pairs else None

    # ------------------------------------------------------------------------------------------------ the run

    def run(self) -> list[Row]:
        cfg = self.config
        cfg.out.mkdir(parents=True, exist_ok=True)
        methods = set(cfg.methods)
        encoder = self._encoder()

        from .embed import embed
        from .index import DenseRetriever, IndexConfig, build_index

        doc_vectors = embed(encoder, self.corpus.contents, "document", desc="embed corpus")
        chroma = IndexConfig(collection=f"{self.test.name or 'bench'}-raw"[:63], path=cfg.out / "chroma")
        t0 = time.perf_counter()
        raw_index = build_index(self.corpus, encoder, chroma, progress=cfg.progress)
        self.info["index_seconds"] = round(time.perf_counter() - t0, 2)

        if "bm25" in methods:
            from .baselines import BM25Retriever

            t0 = time.perf_counter()
            bm25 = BM25Retriever(self.corpus)
            self._evaluate("bm25", bm25.search, time.perf_counter() - t0, "bm25s, index time as train time")

        cosine = self._evaluate("cosine", DenseRetriever(encoder, raw_index).search, 0.0, "Chroma, cosine space")

        for name, transform_name in (("centered_cosine", "CenteredCosine"), ("whitened_cosine", "Whitening")):
            if name in methods:
                self._evaluate_transform(name, transform_name, encoder, doc_vectors, raw_index)

        pairs = None
        if methods & {"query_adapter", "qk_synthetic", "finetune"}:
            pairs = self._generate(encoder)
        if pairs is not None:
            from .projection import pairs_from_dataset

            train_pairs = pairs_from_dataset(pairs, self.corpus, encoder, documents=doc_vectors, source="synthetic")
            for method, variant in (("query_adapter", "query_adapter"), ("qk_synthetic", "qk")):
                if method in methods:
                    self._evaluate_projection(method, variant, train_pairs, encoder, raw_index)
        if "qk_human" in methods and self.train is not None:
            from .projection import pairs_from_collection

            human = pairs_from_collection(self.train, encoder, documents=doc_vectors)
            self._evaluate_projection("qk_human", "qk", human, encoder, raw_index)
        if "finetune" in methods and pairs is not None:
            self._evaluate_finetune(pairs)

        for row in self.rows:
            if row is not cosine:
                from .evaluate import compare

                c = compare(row.result, cosine.result, "ndcg@10")
                row.comparison = {"delta": c.difference, "delta_ci": list(c.ci), "p_value": c.p_value}
        self._write()
        return self.rows

    def _evaluate_transform(self, name: str, transform_name: str, encoder, doc_vectors, raw_index) -> None:
        from . import baselines
        from .embed import embed

        t0 = time.perf_counter()
        transform = getattr(baselines, transform_name)().fit(doc_vectors)
        sibling = raw_index.sibling(f"{raw_index.name}-{name}"[:63], f"{encoder.fingerprint}|{name}",
                                    doc_vectors.shape[1], space="cosine")
        if sibling.count() != len(self.corpus) or not sibling.complete:
            sibling.mark_complete(False)
            sibling.add_vectors(self.corpus.ids, transform.transform(doc_vectors))
            sibling.mark_complete(True)
        seconds = time.perf_counter() - t0

        def search(queries, k):
            q = transform.transform(embed(encoder, list(queries), "query", _quiet()))
            return sibling.search_vectors(q, k)

        self._evaluate(name, search, seconds, f"{transform_name} fitted on document vectors")

    def _evaluate_projection(self, method: str, variant: str, pairs, encoder, raw_index) -> None:
        from .projection import ProjectedRetriever
        from .train import TrainConfig, train_projection

        t0 = time.perf_counter()
        projection = train_projection(pairs, TrainConfig(seed=self.config.seed, progress=self.config.progress),
                                      variant=variant)
        seconds = time.perf_counter() - t0
        projection.save(self.config.out / "projections" / method)
        retriever = ProjectedRetriever(encoder, projection, raw_index)
        val = projection.validation_
        self._evaluate(method, retriever.search, seconds,
                       f"{len(pairs)} pairs; selected {projection.selected_} (validation nDCG@10 "
                       f"{val.get('ndcg@10', float('nan')):.3f} vs start {val.get('init_ndcg@10', float('nan')):.3f})",
                       self._ece)

    def _evaluate_finetune(self, pairs) -> None:
        from .embed import embed
        from .finetune import FinetuneConfig, finetune_encoder
        from .index import ExactIndex

        queries = list(pairs["query"])
        positives = [self.corpus.get(str(p)).content for p in pairs["positive_id"]]
        result = finetune_encoder(queries, positives, self.config.model,
                                  FinetuneConfig(epochs=self.config.finetune_epochs, seed=self.config.seed,
                                                 progress=self.config.progress))
        vectors = embed(result.encoder, self.corpus.contents, "document", desc="re-embed corpus (fine-tuned)")
        exact = ExactIndex(self.corpus.ids, vectors, "cosine", fingerprint=result.encoder.fingerprint)

        def search(queries, k):
            return exact.search_vectors(embed(result.encoder, list(queries), "query", _quiet()), k)

        self._evaluate("finetune", search, result.seconds,
                       f"MultipleNegativesRankingLoss, {result.steps} steps; corpus re-embedding not counted")

    def _generate(self, encoder):
        """Synthetic pairs from the corpus alone: few-shot examples come from the train split's queries, never test."""
        from .generate import GenerateConfig, draw_examples, generate_pairs, load_pairs

        cfg = self.config
        examples = draw_examples(self.train.queries.values(), cfg.few_shot, cfg.seed) if self.train else ()
        gen = GenerateConfig(sample=cfg.sample, seed=cfg.seed, examples=examples, candidates=cfg.candidates,
                             per_call=min(2, cfg.candidates), progress=cfg.progress) if cfg.generator == "llm" else \
            GenerateConfig(sample=cfg.sample, seed=cfg.seed, generator="ict", progress=cfg.progress)
        out_dir = cfg.out / f"pairs-{cfg.generator}"
        t0 = time.perf_counter()
        if cfg.generator == "ict":
            result = generate_pairs(self.corpus, encoder, None, gen, out_dir)
        else:
            from .localllm import open_llm

            with open_llm(cfg.llm_base_url, cfg.llm_model) as llm:
                result = generate_pairs(self.corpus, encoder, llm, gen, out_dir)
        self.info["generation_seconds"] = round(time.perf_counter() - t0, 2)
        self.info["generation"] = getattr(result, "stats", {})
        dataset = load_pairs(out_dir)
        if len(dataset) == 0:
            raise fail(str(out_dir), "generation kept no pairs", "raise --sample, or check the generator's output")
        return dataset

    # ------------------------------------------------------------------------------------------------ report

    def table(self) -> str:
        head = "| method | nDCG@10 [95% CI] | Recall@100 | MRR@10 | Δ nDCG@10 vs cosine (p) | ECE | train s | ms/query |"
        lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in self.rows:
            r = row.result
            lo, hi = r.ci["ndcg@10"]
            delta = f"{row.comparison['delta']:+.3f} (p={row.comparison['p_value']:.3f})" if row.comparison else "—"
            ece = f"{row.ece:.3f}" if row.ece is not None else "—"
            lines.append(f"| {row.method} | {r['ndcg@10']:.3f} [{lo:.3f}, {hi:.3f}] | {r['recall@100']:.3f} | "
                         f"{r['mrr@10']:.3f} | {delta} | {ece} | {row.train_seconds:.1f} | {row.latency_ms:.2f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg = {k: str(v) if isinstance(v, Path) else v for k, v in cfg.items()}
        return {"data": str(self.config.data), "split": self.config.split, "queries": len(self.test.queries),
                "documents": len(self.corpus), "config": cfg, **self.info, "rows": [r.to_dict() for r in self.rows]}

    def _write(self) -> None:
        from .evaluate import plot_results

        out = self.config.out
        write_json(out / "bench.json", self.to_dict())
        write_text(out / "bench.md", self.table() + "\n")
        plot_results({r.method: r.result for r in self.rows}, out / "bench.png")


def _quiet():
    from .embed import EmbedOptions

    return EmbedOptions(progress=False)


def run_bench(config: BenchConfig) -> Bench:
    bench = Bench(config)
    bench.run()
    return bench

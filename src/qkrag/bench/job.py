"""The main job: does a projection trained on synthetic pairs beat what a user would otherwise pick? One call, real
data, honest numbers.

    embed corpus -> generate pairs from the corpus only -> train projections -> index in Chroma -> evaluate on test

Every method is a row: raw cosine; BM25; hybrid (BM25 fused with cosine, no training: what users pick first);
centred and whitened cosine; a query-only adapter and a Q/K projection on the synthetic pairs, alone and fused with
BM25; a Q/K projection on the human train split when the folder has one, alone and fused; and a full fine-tune of the
encoder on the same synthetic pairs. Each row gets nDCG@10, Recall@100, MRR@10 with bootstrap CIs, a paired test
against raw cosine (and the hybrid rows against hybrid), its training time and query latency, ECE where it outputs a
probability, and for trained rows a leakage audit: nDCG@10 on test queries whose relevant documents were positives in
training ("seen") and on the rest ("novel"), each against its base. Where the corpus holds question-form documents,
each row reports the share of them in a query's top 5.

The test judgments are only ever read to score. Hyperparameters and fusion weights are chosen on validation data: a
held-out share of the training pairs, split by document, or the train split for the untrained hybrid row.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qkrag.data import Collection, load_beir, splits
from qkrag.errors import fail
from qkrag.bench import report
from qkrag.bench.llm_baselines import DOC2QUERY
from qkrag.bench.report import Row
from qkrag.projection.losses import LOSSES as TRAINING_LOSSES
from qkrag.ranking import Hit
from qkrag.retrieval.factory import baselines

UNTRAINED = baselines()  # cosine, bm25, hybrid and any further kind registered in retrieval.factory.RETRIEVERS
OWN_ROWS = ("cosine", "bm25", "hybrid")  # untrained rows the bench builds itself (index timing, the fusion it records)
TRAINED = ("centered_cosine", "whitened_cosine", "query_adapter", "qk_synthetic", "hybrid_qk_synthetic", "qk_human",
           "hybrid_qk_human", "finetune", *DOC2QUERY)  # rows that fit or transform something first
METHODS = (*UNTRAINED, *TRAINED)  # the default: every row but the opt-in ones, as registered at import
OPT_IN = ("hyde",)  # asked for by name: an LLM call per test query (bench.llm_baselines)
LOSSES = tuple(TRAINING_LOSSES)  # tried for qk_synthetic; the best on validation is kept
GENERATORS = ("llm", "ict", "llm+ict")
SYNTHETIC = ("query_adapter", "qk_synthetic", "hybrid_qk_synthetic", "finetune")  # rows that need generated pairs
MIN_PAIRS = 20  # fewer expected pairs than this leave no validation split to train and select on
SECONDS_PER_CALL = 4.0  # an LLM call of the embedded 0.5B model on 2 free cores, for the plan's time estimate only
# (benchmarks/results/generate_bench.md has the measured rate)


@dataclass
class BenchConfig:
    """What to run. Generation is the costly step (seconds per LLM call on a CPU), so it runs on a seeded sample of
    passages; everything is cached, so a re-run only pays for what changed."""

    data: Path
    out: Path = Path("runs/bench")
    split: str = "test"
    model: str | None = None  # encoder; default: the shipped all-MiniLM-L6-v2
    embed_base_url: str | None = None
    # "llm" (embedded local server, or llm_base_url), "ict" (no LLM: a passage's sentence as its query), or
    # "llm+ict": the LLM's pairs on `sample` passages plus ICT pairs on `ict_sample`, trained on together
    generator: str = "llm"
    ict_sample: int | None = None  # passages ICT cuts pairs from in "llm+ict"; None: all (ICT costs no LLM time)
    llm_base_url: str | None = None  # an OpenAI-compatible server for generation instead of the embedded one
    llm_model: str | None = None
    sample: int = 200  # passages to generate queries for
    candidates: int = 4  # LLM candidates per passage (two per call); the pipeline keeps the ones of human-like difficulty
    per_passage: int = 1  # pairs kept per passage
    few_shot: int = 4  # example queries taken from the train split (never test) when one exists
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    losses: tuple[str, ...] = LOSSES  # training signals tried for qk_synthetic (teacher: the hybrid ranking)
    # training recipes tried for qk_synthetic (projection.recipes); "auto": every recipe where selection sees judged
    # queries, else those safe to choose on synthetic pairs
    recipes: tuple[str, ...] = ("auto",)
    finetune_epochs: int = 1
    # The finetune row also learns against each pair's first mined negative: with in-batch negatives alone it stays
    # at cosine where the map gains (benchmarks/results/finetune_epochs.md), too weak a baseline to judge by.
    finetune_hard_negatives: bool = True
    # Cap on projection training epochs; early stopping or cross-validation picks the count below it. A few hundred
    # synthetic pairs make only a few steps per epoch, so cross-validation can still be gaining at 10.
    epochs: int = 30
    # The "full" recipe trains Q = Q₀ + A·Bᵀ (and K likewise) with this many columns instead of every entry
    # (TrainConfig.residual_rank); None trains the maps whole. The "low_rank" recipe keeps its own rank.
    residual_rank: int | None = None
    skip_empty: bool = False  # leave empty documents out (Cranfield has two) instead of failing
    progress: bool = True


@dataclass
class Trained:
    """A trained dense arm and what it was trained on: the base of its leakage audit and of its fusion choice."""

    retriever: Any
    positives: list[str]  # document ids that were positives in training
    validation: tuple[list[str], list[str], dict[str, dict[str, int]]] | None  # held-out (ids, texts, qrels)
    seconds: float = 0.0
    notes: str = ""


def _timed_search(search: Callable[[Sequence[str], int], list[list[Hit]]], queries: list[str], k: int
                  ) -> tuple[list[list[Hit]], float]:
    """Run all queries (query vectors come from the embedding cache after the first pass, so the time measured is
    the retrieval itself: index lookup plus any projection) and return the hits and milliseconds per query."""
    search(queries[:1], k)  # warm: load models, fill the query cache for this text
    t0 = time.perf_counter()
    hits = search(queries, k)
    return hits, 1000 * (time.perf_counter() - t0) / max(1, len(queries))


class Bench:
    """Runs the benchmark described by a `BenchConfig`; `run()` returns the rows and writes the report after every
    row, so a run that fails late keeps what it finished."""

    def __init__(self, config: BenchConfig):
        from qkrag.text import question_form

        self.config = config
        known = (*baselines(), *TRAINED, *OPT_IN)  # read now: retrievers registered after import count
        unknown = [m for m in config.methods if m not in known]
        if unknown:
            raise fail("methods", f"{unknown} are not benchmark methods", f"choose from {list(known)}")
        bad_loss = [x for x in config.losses if x not in TRAINING_LOSSES]
        if bad_loss or not config.losses:
            raise fail("losses", f"{bad_loss} are not losses" if bad_loss else "names no loss",
                       f"choose one or more of {', '.join(TRAINING_LOSSES)}")
        from qkrag.projection.recipes import RECIPES, expand_recipes

        if not config.recipes:
            raise fail("recipes", "names no recipe", f"choose auto or one or more of {', '.join(RECIPES)}")
        expand_recipes(config.recipes, judged=True)  # an unknown name fails here, before any work
        self.test: Collection = load_beir(config.data, config.split, skip_empty=config.skip_empty)
        self.corpus = self.test.corpus
        self.train: Collection | None = None
        if "train" in splits(config.data) and config.split != "train":
            self.train = load_beir(config.data, "train", corpus=self.corpus)
        self.rows: list[Row] = []
        self.info: dict[str, Any] = {}
        self.fusions: dict[str, Any] = {}  # method -> the FusionConfig its hybrid row chose
        # Question-form documents (posts that ask rather than answer): report how often they crowd a top 5.
        forms = {d.id: question_form(d.content) for d in self.corpus}
        self.question_docs = forms if sum(forms.values()) >= max(5, 0.01 * len(forms)) else None
        self.info["question_form_documents"] = sum(forms.values())
        self._check_sample()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The generators whose pairs are trained on: "llm+ict" is both, LLM first."""
        return tuple(self.config.generator.split("+"))

    def _sample_of(self, kind: str) -> int | None:
        """Passages generator `kind` writes pairs for: `sample`, or `ict_sample` for ICT beside the LLM (None: all)."""
        return self.config.ict_sample if kind == "ict" and len(self.kinds) > 1 else self.config.sample

    def _check_sample(self) -> None:
        """Fail before any LLM call on an unknown generator, or when the sample cannot give enough pairs to hold out
        validation from."""
        cfg = self.config
        if cfg.generator not in GENERATORS:
            raise fail(f"generator {cfg.generator!r}", "is not a pair generator", f"use one of {', '.join(GENERATORS)}")
        if cfg.ict_sample is not None and cfg.ict_sample < 1:
            raise fail(f"ict_sample {cfg.ict_sample}", "is below 1", "use None for every passage")
        n = len(self.corpus)
        most = sum(min(self._sample_of(kind) or n, n) for kind in self.kinds) * cfg.per_passage
        if set(cfg.methods) & set(SYNTHETIC) and most < MIN_PAIRS:
            raise fail(f"--sample {cfg.sample}", f"gives at most {most}"
                       f" pairs, too few to hold out validation pairs from (at least {MIN_PAIRS})",
                       f"use --sample {-(-MIN_PAIRS // cfg.per_passage)} or more, or leave out the synthetic rows "
                       "with --methods")

    def plan(self) -> str:
        """What the run will cost, in one line, before it starts (the LLM stage dominates)."""
        cfg = self.config
        hyde = (f"; HyDE: {len(self.test.queries)} LLM calls, one per test query (cached)"
                if "hyde" in cfg.methods else "")
        if not set(cfg.methods) & {*SYNTHETIC, *DOC2QUERY} or "llm" not in self.kinds:
            return f"no LLM stage; {len(self.test.queries)} test queries over {len(self.corpus)} documents{hyde}"
        calls = min(cfg.sample, len(self.corpus)) * -(-cfg.candidates // 2)
        where = "your LLM server" if cfg.llm_base_url else "the embedded model"
        minutes = calls * SECONDS_PER_CALL / 60
        return (f"LLM stage: about {calls} calls to {where}" + ("" if cfg.llm_base_url else
                f", roughly {minutes:.0f} min on 2 free cores") + " (cached: a re-run pays only for new calls); "
                "the progress bar refines the estimate" + hyde)

    # ------------------------------------------------------------------------------------------------ pieces

    def _encoder(self):
        from qkrag.embed.encoders import make_encoder

        return make_encoder(self.config.model, base_url=self.config.embed_base_url)

    def _evaluate(self, method: str, search, train_seconds: float = 0.0, notes: str = "") -> Row:
        from qkrag.bench.chain import score
        from qkrag.evaluate.metrics import question_share

        hits, latency = _timed_search(search, list(self.test.queries.values()), 100)
        scored = score(self.test, hits, method)
        row = Row(method, scored.result, train_seconds, latency, scored.ece(), notes, calibration=scored.calibration)
        if self.question_docs is not None:
            row.extra["question_share@5"] = question_share(hits, self.question_docs, 5)
        self.rows.append(row)
        return row

    def _audit(self, row: Row, base: Row, positives: list[str]) -> None:
        """Seen/novel split of a trained row against its base (`chain.audit`)."""
        from qkrag.bench.chain import audit

        row.extra.update(audit(row.result, base.result, self.test.qrels, positives))
        row.extra["audit_base"] = base.method

    def _row(self, method: str) -> Row | None:
        return next((r for r in self.rows if r.method == method), None)

    # ------------------------------------------------------------------------------------------------ the run

    def run(self) -> list[Row]:
        cfg = self.config
        cfg.out.mkdir(parents=True, exist_ok=True)
        methods = set(cfg.methods)
        self.encoder = encoder = self._encoder()

        from qkrag.embed.encoders import embed
        from qkrag.retrieval.bm25 import BM25Retriever
        from qkrag.retrieval.factory import make_retriever
        from qkrag.retrieval.build import build_index
        from qkrag.retrieval.connection import IndexConfig

        self.doc_vectors = embed(encoder, self.corpus.contents, "document", desc="embed corpus")
        chroma = IndexConfig(collection=f"{self.test.name or 'bench'}-raw"[:63], path=cfg.out / "chroma")
        t0 = time.perf_counter()
        self.raw_index = build_index(self.corpus, encoder, chroma, progress=cfg.progress)
        self.info["index_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        self.bm25 = BM25Retriever(self.corpus)
        bm25_seconds = time.perf_counter() - t0
        self.cosine_retriever = make_retriever(encoder, self.raw_index)

        cosine = self._evaluate("cosine", self.cosine_retriever.search, 0.0, "Chroma, cosine space")
        self._write()
        if methods & {"bm25", "doc2query"}:  # doc2query's audit base
            self._evaluate("bm25", self.bm25.search, bm25_seconds, "bm25s, index time as train time")
            self._write()

        synthetic = {"query_adapter", "qk_synthetic", "hybrid_qk_synthetic", "finetune", *DOC2QUERY}
        needs_pairs = bool(methods & synthetic) or ("hybrid" in methods and self.train is None)
        dataset = self._generate(encoder) if needs_pairs else None
        pairs = None
        if dataset is not None:  # the generated rows as vectors, once: the hybrid's validation and every trained row
            from qkrag.projection.data import pairs_from_dataset

            pairs = pairs_from_dataset(dataset, self.corpus, encoder, documents=self.doc_vectors, source="synthetic")
        if methods & {"hybrid", "qk_synthetic", "hybrid_qk_synthetic", "hybrid_qk_human"}:
            self._evaluate_hybrid("hybrid", self.cosine_retriever, self._hybrid_validation(pairs))
        self._registered_rows(methods)
        for name, transform_name in (("centered_cosine", "CenteredCosine"), ("whitened_cosine", "Whitening")):
            if name in methods:
                self._evaluate_transform(name, transform_name, encoder, self.doc_vectors, self.raw_index)
                self._write()
        if pairs is not None:
            self._synthetic_rows(pairs, methods)
        if methods & {"qk_human", "hybrid_qk_human"} and self.train is not None:
            self._human_rows(methods)
        if "finetune" in methods and dataset is not None:
            self._evaluate_finetune(dataset, pairs.positive_ids())
        self._llm_baselines(dataset, methods)
        self._compare(cosine)
        self.rows = [r for r in self.rows if r.method in methods]  # hybrid may run only as a teacher and base
        self._write()
        return self.rows

    def _registered_rows(self, methods: set[str]) -> None:
        """Rows of the further retrievers registered in `retrieval.factory.RETRIEVERS`, built as `qkrag eval` builds
        them, over the bench's Chroma vectors."""
        from qkrag.retrieval.factory import retriever_for_folder

        for name in (m for m in baselines() if m in methods and m not in OWN_ROWS):
            retriever, _ = retriever_for_folder(name, self.corpus, self.encoder, data=self.config.data,
                                                split=self.config.split, index=self.raw_index)
            self._evaluate(name, retriever.search)
            self._write()

    def _compare(self, cosine: Row) -> None:
        """Every row against raw cosine, and the fused rows also against the untrained hybrid (`chain.paired`)."""
        from qkrag.bench.chain import paired

        hybrid = self._row("hybrid")
        for row in self.rows:
            if row is not cosine:
                c = paired(row.result, cosine.result)
                row.comparison = {"delta": c.difference, "delta_ci": list(c.ci), "p_value": c.p_value}
            if hybrid is not None and row.method.startswith("hybrid_"):
                c = paired(row.result, hybrid.result)
                row.extra.update({"vs_hybrid_delta": c.difference, "vs_hybrid_delta_ci": list(c.ci),
                                  "vs_hybrid_p_value": c.p_value})

    # ------------------------------------------------------------------------------------------------ hybrid

    def _hybrid_validation(self, pairs) -> tuple[list[str], list[str], dict[str, dict[str, int]]] | None:
        """Queries to choose the untrained hybrid's fusion on, as `qkrag index --hybrid` and `eval` choose it: the
        train split when there is one (`train_validation`), else held-out synthetic pairs (`pairs_validation`).
        Never the test split."""
        from qkrag.retrieval.hybrid import pairs_validation, train_validation

        if self.train is not None:
            return train_validation(self.train, self.config.seed)
        if pairs is None:
            return None
        return pairs_validation(pairs, seed=self.config.seed)

    def _evaluate_hybrid(self, method: str, dense, validation, train_seconds: float = 0.0, notes: str = "") -> Row:
        """BM25 fused with `dense`; the fusion setting chosen on `validation` (ids, texts, qrels). With fewer than
        MIN_FUSION_QUERIES validation queries a choice is noise, so a trained arm keeps the untrained hybrid's
        setting (RRF k=60, parameter-free, when there is none); ties also go to that setting."""
        from qkrag.evaluate.metrics import queries_are_documents
        from qkrag.retrieval.hybrid import (DEFAULT_GRID, MIN_FUSION_QUERIES, FusionConfig, HybridRetriever,
                                            select_fusion)

        t0 = time.perf_counter()
        config = self.fusions.get("hybrid", FusionConfig())
        chosen_on = "the untrained hybrid row" if "hybrid" in self.fusions else "none (RRF k=60, parameter-free)"
        if validation is not None and len(validation[0]) >= MIN_FUSION_QUERIES:
            grid = [config, *(c for c in DEFAULT_GRID if c.label() != config.label())]  # ties keep the hybrid's
            # a train split's query ids may collide with document ids by accident (as eval decides it)
            identical = queries_are_documents(self.train) if self.train is not None else True
            choice = select_fusion(dense, self.bm25, validation, "validation", grid=grid,
                                   ignore_identical_ids=identical)
            config = choice.config
            chosen_on = f"{choice.queries} validation queries (nDCG@10 {choice.score:.3f})"
        elif validation is not None:
            chosen_on += f"; {len(validation[0])} validation queries are too few to choose on"
        self.fusions[method] = config
        retriever = HybridRetriever(dense, self.bm25, config)
        seconds = train_seconds + time.perf_counter() - t0
        row = self._evaluate(method, retriever.search, seconds,
                             f"{notes}{'; ' if notes else ''}fusion {config.label()} chosen on {chosen_on}")
        row.extra["fusion"] = config.label()
        self._write()
        return row

    # ------------------------------------------------------------------------------------------------ trained rows

    def _synthetic_rows(self, train_pairs, methods: set[str]) -> None:
        positives = train_pairs.positive_ids()
        cosine, hybrid = self._row("cosine"), self._row("hybrid")
        if "query_adapter" in methods:
            trained = self._train(train_pairs, "query_adapter", ("infonce",), lambda q: q)
            self._trained_row("query_adapter", trained, cosine)
        if methods & {"qk_synthetic", "hybrid_qk_synthetic"}:
            trained = self._train(train_pairs, "qk_synthetic", self.config.losses, lambda q: q, self.config.recipes)
            if "qk_synthetic" in methods:
                self._trained_row("qk_synthetic", trained, cosine)
            if "hybrid_qk_synthetic" in methods and hybrid is not None:
                if self.train is not None:  # the synthetic map never saw the train split: choose fusion there
                    trained.validation = self._hybrid_validation(None)
                self._trained_row("hybrid_qk_synthetic", trained, hybrid, hybrid=True)
        self.info["synthetic_positives"] = len(positives)

    def _human_rows(self, methods: set[str]) -> None:
        from qkrag.projection.data import pairs_from_collection

        assert self.train is not None
        human = pairs_from_collection(self.train, self.encoder, documents=self.doc_vectors)
        trained = self._train(human, "qk_human", ("infonce",), self.train.queries.__getitem__)
        if "qk_human" in methods:
            self._trained_row("qk_human", trained, self._row("cosine"))
        hybrid = self._row("hybrid")
        if "hybrid_qk_human" in methods and hybrid is not None:
            self._trained_row("hybrid_qk_human", trained, hybrid, hybrid=True)

    def _trained_row(self, method: str, trained: Trained, base: Row | None, hybrid: bool = False) -> None:
        if hybrid:
            row = self._evaluate_hybrid(method, trained.retriever, trained.validation, trained.seconds,
                                        trained.notes)
        else:
            row = self._evaluate(method, trained.retriever.search, trained.seconds, trained.notes)
        if base is not None:
            self._audit(row, base, trained.positives)
        self._write()

    def _train(self, pairs, method: str, losses: Sequence[str], text_of: Callable[[str], str],
               recipes: Sequence[str] = ("full",)) -> Trained:
        """Train a projection per (recipe, loss) and keep the best on held-out queries, then serve it. Held out are,
        in this order: the train split's judged queries when the collection has them and they did not train the map
        (validation data, never test); else a document-disjoint split of the pairs when it holds at least
        MIN_VALIDATION_QUERIES queries; else 5-fold cross-validation over all pairs (`train_with_cv`). Notes name
        every candidate's figure and what model selection decided."""
        from qkrag.projection.calibrate import describe
        from qkrag.projection.recipes import expand_recipes, left_out
        from qkrag.projection.select import train_best
        from qkrag.retrieval.factory import make_retriever

        t0 = time.perf_counter()
        judged = self._judged_validation() if method != "qk_human" else None
        train_on, validation, split = self._selection_split(pairs, judged)
        if any(TRAINING_LOSSES[loss].needs_teacher for loss in losses):
            train_on = self._with_teacher(train_on, text_of)
        configs = _candidates(expand_recipes(recipes, judged is not None), losses, self.config, len(self.corpus))
        best, projection, held_out = train_best(train_on, configs, validation=validation,
                                                folds=None if validation is not None else 5,
                                                variant="query_adapter" if method == "query_adapter" else "qk")
        seconds = time.perf_counter() - t0
        projection.save(self.config.out / "projections" / method)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in held_out.items())
        skipped = left_out(recipes, judged is not None)
        notes = (f"{len(pairs)} pairs ({split}); chose {best} (held-out nDCG@10: {scores}"
                 + (f"; {skipped}" if skipped else "") + f"); selected {projection.selected_}; probability "
                 f"{describe(projection.calibration_)}")
        # with CV every pair trained the served map, so no held-out queries are left to choose a fusion on; judged
        # queries are the train split, where _synthetic_rows chooses the fusion as the untrained hybrid does
        fusion_queries = None if validation is None or judged is not None else _as_queries(validation, text_of)
        trained = Trained(make_retriever(self.encoder, self.raw_index, projection=projection), pairs.positive_ids(),
                          fusion_queries)
        trained.seconds, trained.notes = seconds, notes
        return trained

    def _judged_validation(self):
        """The train split's judged queries as validation pairs, or None when the collection has no train split."""
        from qkrag.projection.data import pairs_from_collection

        if self.train is None:
            return None
        return pairs_from_collection(self.train, self.encoder, documents=self.doc_vectors)

    def _selection_split(self, pairs, judged) -> tuple[Any, Any, str]:
        """(pairs to train on, validation pairs or None for cross-validation, the choice in words)."""
        from qkrag.projection.train import MIN_VALIDATION_QUERIES

        if judged is not None:
            return pairs, judged, (f"all trained on; chosen and early-stopped on {judged.n_queries} judged queries "
                                   f"of the train split")
        fit_part, val_part = pairs.split(0.1, self.config.seed, by="document")
        if val_part.n_queries < MIN_VALIDATION_QUERIES:
            return pairs, None, (f"{pairs.n_queries} queries, 5-fold CV: {val_part.n_queries} held out would be "
                                 f"under {MIN_VALIDATION_QUERIES}")
        return fit_part, val_part, f"{len(fit_part)} train, {len(val_part)} validation, split by document"

    def _with_teacher(self, pairs, text_of: Callable[[str], str]):
        """Attach the untrained hybrid ranking as the distillation teacher (its fusion as chosen for the hybrid row)."""
        from qkrag.projection.teacher import hybrid_teacher
        from qkrag.retrieval.hybrid import FusionConfig, HybridRetriever

        teacher = HybridRetriever(self.cosine_retriever, self.bm25, self.fusions.get("hybrid", FusionConfig()))
        return hybrid_teacher(pairs, [text_of(q) for q in pairs.query_ids], teacher)

    def _llm_baselines(self, dataset, methods: set[str]) -> None:
        """The rows of `bench.llm_baselines`: doc2query over the generated pairs, HyDE with the configured LLM."""
        from qkrag.bench import llm_baselines

        baselines = []
        if dataset is not None and methods & set(DOC2QUERY):
            cfg = self.config
            if len(self.kinds) > 1:  # a passage's own sentence appended to it adds nothing: the LLM's queries only
                dataset = dataset.filter(lambda g: g != "ict", input_columns="generator")
            baselines += llm_baselines.doc2query_baselines(
                self.corpus, dataset, self.encoder, methods, self.info.get("generation", {}),
                -(-cfg.candidates // 2) if "llm" in self.kinds else 0, SECONDS_PER_CALL)
        for baseline in baselines:
            self._baseline_row(baseline)
        if "hyde" in methods:
            from qkrag.llm.local import open_llm

            self._baseline_row(llm_baselines.hyde_baseline(self.encoder, self.raw_index,
                                                           open_llm(self.config.llm_base_url, self.config.llm_model)))

    def _baseline_row(self, baseline) -> None:
        try:
            row = self._evaluate(baseline.method, baseline.search, baseline.seconds)
        finally:
            baseline.close()
        row.notes, extra = baseline.describe()
        row.extra.update(extra)
        base = self._row(baseline.base) if baseline.base else None
        if base is not None and baseline.positives is not None:
            self._audit(row, base, baseline.positives)
        self._write()

    def _evaluate_transform(self, name: str, transform_name: str, encoder, doc_vectors, raw_index) -> None:
        """A training-free fix of cosine (`retrieval.baselines`), fitted on the document vectors and served from a
        collection derived from the raw one (`derived_collection`, filled from the vectors already embedded)."""
        from qkrag.embed.encoders import embed
        from qkrag.retrieval import baselines
        from qkrag.retrieval.projected import derived_collection

        t0 = time.perf_counter()
        transform = getattr(baselines, transform_name)().fit(doc_vectors)
        derived = derived_collection(raw_index, f"{raw_index.name}-{name}"[:63], f"{encoder.fingerprint}|{name}",
                                     doc_vectors.shape[1], "cosine", transform.transform,
                                     pages=[(self.corpus.ids, doc_vectors, None)])
        seconds = time.perf_counter() - t0

        def search(queries, k):
            q = transform.transform(embed(encoder, list(queries), "query", _quiet()))
            return derived.search_vectors(q, k)

        self._evaluate(name, search, seconds, f"{transform_name} fitted on document vectors")

    def _evaluate_finetune(self, dataset, training_positives: list[str]) -> None:
        from qkrag.embed.encoders import embed
        from qkrag.embed.finetune import FinetuneConfig, finetune_encoder
        from qkrag.retrieval.exact import ExactIndex

        queries = list(dataset["query"])
        positive_texts = [self.corpus.get(str(p)).content for p in dataset["positive_id"]]
        negatives = self._finetune_negatives(dataset) if self.config.finetune_hard_negatives else None
        result = finetune_encoder(queries, positive_texts, self.config.model,
                                  FinetuneConfig(epochs=self.config.finetune_epochs, seed=self.config.seed,
                                                 progress=self.config.progress), negatives=negatives)
        vectors = embed(result.encoder, self.corpus.contents, "document", desc="re-embed corpus (fine-tuned)")
        exact = ExactIndex(self.corpus.ids, vectors, "cosine", fingerprint=result.encoder.fingerprint)

        def search(queries, k):
            return exact.search_vectors(embed(result.encoder, list(queries), "query", _quiet()), k)

        hard = ("each pair's first mined hard negative (a seeded random passage where it has none) beside the "
                "in-batch ones" if negatives is not None else "in-batch negatives only")
        row = self._evaluate("finetune", search, result.seconds,
                             f"MultipleNegativesRankingLoss, {result.steps} steps, {hard}; corpus re-embedding not "
                             "counted")
        self._audit(row, self._row("cosine"), training_positives)
        self._write()

    def _finetune_negatives(self, dataset) -> list[str]:
        """One negative passage per pair: its first mined hard negative, else a seeded random other passage."""
        rng = random.Random(self.config.seed)
        mined = dataset["negative_ids"] if "negative_ids" in dataset.column_names else [None] * len(dataset)
        out = []
        for positive, negs in zip(dataset["positive_id"], mined):
            doc = str(negs[0]) if negs else _random_other(rng, self.corpus.ids, str(positive))
            out.append(self.corpus.get(doc).content)
        return out

    def _generate(self, encoder):
        """Synthetic pairs from the corpus alone. "llm+ict" concatenates the LLM's pairs and ICT's, the ICT query ids
        prefixed "ict-" (both number a passage's queries from 0); info["generation"] stays the LLM's (doc2query's
        cost reads it), info["generation_ict"] holds ICT's."""
        import datasets

        t0 = time.perf_counter()
        parts = {kind: self._generate_one(encoder, kind) for kind in self.kinds}
        self.info["generation_seconds"] = round(time.perf_counter() - t0, 2)
        self.info["generation"] = parts[self.kinds[0]][1]
        if len(parts) == 1:
            return parts[self.kinds[0]][0]
        self.info["generation_ict"] = parts["ict"][1]
        ict = parts["ict"][0].map(lambda q: {"query_id": f"ict-{q}"}, input_columns="query_id")
        return datasets.concatenate_datasets([parts["llm"][0], ict])

    def _generate_one(self, encoder, kind: str):
        """One generator's pairs (`kind` "llm" or "ict") and its stats; few-shot examples come from the train split's
        queries, never test."""
        from qkrag.pairs.generate import generate_pairs
        from qkrag.pairs.config import GenerateConfig, draw_examples
        from qkrag.pairs.store import load_pairs

        cfg = self.config
        out_dir = cfg.out / f"pairs-{kind}"
        if kind == "ict":
            gen = GenerateConfig(sample=self._sample_of(kind), seed=cfg.seed, generator="ict",
                                 queries_per_passage=cfg.per_passage, progress=cfg.progress)
            result = generate_pairs(self.corpus, encoder, None, gen, out_dir)
        else:
            from qkrag.llm.local import open_llm

            examples = draw_examples(self.train.queries.values(), cfg.few_shot, cfg.seed) if self.train else ()
            gen = GenerateConfig(sample=cfg.sample, seed=cfg.seed, examples=examples, candidates=cfg.candidates,
                                 per_call=min(2, cfg.candidates), queries_per_passage=cfg.per_passage,
                                 progress=cfg.progress)
            with open_llm(cfg.llm_base_url, cfg.llm_model) as llm:
                result = generate_pairs(self.corpus, encoder, llm, gen, out_dir)
        dataset = load_pairs(out_dir)
        if len(dataset) == 0:
            raise fail(str(out_dir), "generation kept no pairs", "raise --sample, or check the generator's output")
        return dataset, getattr(result, "stats", {})

    # ------------------------------------------------------------------------------------------------ report

    def to_dict(self) -> dict[str, Any]:
        return report.summary(asdict(self.config), len(self.test.queries), len(self.corpus), self.info, self.rows)

    def header(self) -> str:
        cfg = self.config
        encoder = getattr(getattr(self, "encoder", None), "fingerprint", cfg.model or "default")
        generation, ict = self.info.get("generation", {}), self.info.get("generation_ict")
        if ict:  # llm+ict: the pairs trained on are both generators'
            llm_counts, ict_counts = generation.get("counts") or {}, ict.get("counts") or {}
            generation = {"counts": {"pairs": f"{llm_counts.get('pairs', '?')} (LLM) + {ict_counts.get('pairs', '?')} "
                                     f"(ICT, from {ict_counts.get('passages', '?')} passages)"},
                          "generator": f"{generation.get('generator', 'llm')} + ict"}
        return report.header(report.data_line(cfg.data, cfg.split, len(self.test.queries), len(self.corpus)),
                             encoder, generation, cfg.sample, cfg.generator)

    def table(self) -> str:
        return report.table(self.rows, questions=self.question_docs is not None)

    def _write(self) -> None:
        report.write(self.config.out, self.to_dict(), self.header(), self.table(), self.rows)


def _random_other(rng: random.Random, ids: Sequence[str], not_this: str) -> str:
    """A seeded random id of `ids` other than `not_this` (`not_this` itself only when it is the only id)."""
    others = [d for d in ids if d != not_this]
    return rng.choice(others) if others else not_this


def _candidates(recipes: Sequence[str], losses: Sequence[str], config: BenchConfig, n_documents: int) -> dict:
    """One TrainConfig per (recipe, loss), named by the loss alone for the "full" recipe."""
    from qkrag.projection.recipes import recipe_config

    return {(loss if recipe == "full" else f"{recipe} {loss}"): recipe_config(
                recipe, n_documents, seed=config.seed, progress=config.progress, loss=loss, epochs=config.epochs,
                residual_rank=config.residual_rank)
            for recipe in recipes for loss in losses}


def _as_queries(pairs, text_of: Callable[[str], str]) -> tuple[list[str], list[str], dict[str, dict[str, int]]]:
    """Pairs as evaluation queries: (ids, texts, qrels), one query per distinct query id."""
    qrels: dict[str, dict[str, int]] = {}
    for qid, row in zip(pairs.query_ids, pairs.positives):
        qrels.setdefault(qid, {})[pairs.doc_ids[int(row)]] = 1
    ids = list(qrels)
    return ids, [text_of(q) for q in ids], qrels


def _quiet():
    from qkrag.embed.encoders import EmbedOptions

    return EmbedOptions(progress=False)


def run_bench(config: BenchConfig) -> Bench:
    bench = Bench(config)
    bench.run()
    return bench

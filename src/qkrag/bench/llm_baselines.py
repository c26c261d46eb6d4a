"""The LLM baselines a user picks instead of training a map, as bench rows with their cost:

* `hyde`: the LLM writes a hypothetical answer per test query; the mean of the query's and the answer's embeddings
  is searched in the raw dense index (`qkrag.retrieval.hyde`). One LLM call per query at search time, so it is
  opt-in: on a few dozen queries minutes on a CPU, on a few hundred the better part of an hour.
* `doc2query` (BM25, the classic setting) and `doc2query_dense`: the generated queries the pairs stage kept for
  each sampled passage are appended to it and the expanded corpus is indexed (`qkrag.retrieval.doc2query`). No LLM
  call at search time, and the queries are the ones the synthetic rows already paid for, so these rows run by
  default wherever pairs are generated. Only the sampled passages are expanded; each row's notes say what covering
  the whole corpus would cost at the measured rate.

Each row is a `Baseline`: the search to evaluate, the row its leakage audit compares against, the passages whose
generated queries it used (its "seen" documents), and a `describe` called after evaluation for the notes and the
cost figures, which HyDE only knows once it has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DOC2QUERY = ("doc2query", "doc2query_dense")


@dataclass
class Baseline:
    method: str
    search: Callable
    seconds: float  # building the row (expansion, indexing); generation is the synthetic rows' cost, not counted
    base: str | None = None  # the row the leakage audit compares against
    positives: list[str] | None = None  # passages whose generated queries the row used; None: nothing to audit
    describe: Callable[[], tuple[str, dict[str, Any]]] = lambda: ("", {})
    close: Callable[[], None] = field(default=lambda: None)


def seconds_per_passage(generation: dict[str, Any], fallback: float) -> tuple[float, str]:
    """The generation stage's wall seconds per sampled passage as this run measured it, or `fallback` (an estimate)
    when its LLM outputs came from the cache or journal."""
    calls = (generation.get("llm") or {}).get("calls_made") or 0
    seconds = (generation.get("seconds") or {}).get("llm_stage") or 0.0
    passages = (generation.get("counts") or {}).get("passages") or 0
    if calls and seconds and passages:
        return seconds / passages, f"measured this run over {passages} passages"
    return fallback, "estimated: this run's generation came from the cache"


def coverage_note(expanded: int, corpus: int, calls_per_passage: int, rate: tuple[float, str],
                  counts: dict[str, Any] | None = None) -> str:
    """What expanding every passage would cost: LLM calls, and hours at `rate` (seconds per passage, how it was
    known). `counts` (the generation's): passages sampled, and those the answer-form check keeps out of the pool
    (question-form posts are never generated for), so the cost counts only the passages a generation would take."""
    counts = counts or {}
    sampled = counts.get("passages", expanded)
    eligible = corpus - counts.get("skipped_no_answer", 0)
    remaining = max(0, eligible - sampled)
    left_out = f" ({corpus - eligible} question-form passages are never generated for)" if eligible < corpus else ""
    return (f"{expanded} of {corpus} passages expanded ({sampled} sampled of {eligible} eligible{left_out}); the "
            f"other {remaining} eligible need {remaining * calls_per_passage} more LLM calls (~"
            f"{remaining * rate[0] / 3600:.1f} h at {rate[0]:.1f} s/passage, {rate[1]})")


def doc2query_baselines(corpus, dataset, encoder, methods: set[str], generation: dict[str, Any],
                        calls_per_passage: int, seconds_per_call: float) -> list[Baseline]:
    """The doc2query rows asked for in `methods`: BM25 (`doc2query`) and dense (`doc2query_dense`, exact search) over
    `corpus` with each passage's kept generated queries (`dataset`: a pairs table) appended."""
    from qkrag.embed.encoders import EmbedOptions, embed
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.doc2query import expand_corpus, queries_by_passage
    from qkrag.retrieval.exact import ExactIndex

    t0 = time.perf_counter()
    queries = queries_by_passage(dataset["positive_id"], dataset["query"])
    expanded = expand_corpus(corpus, queries)
    expand_seconds = time.perf_counter() - t0
    per_passage = sum(map(len, queries.values())) / max(1, len(queries))
    cost = (f"{per_passage:.1f} kept generated queries appended per expanded passage; 0 LLM calls per query; "
            + coverage_note(len(queries), len(corpus), calls_per_passage,
                            seconds_per_passage(generation, calls_per_passage * seconds_per_call),
                            generation.get("counts")))
    positives = sorted(queries)
    rows = []
    if "doc2query" in methods:
        t1 = time.perf_counter()
        bm25 = BM25Retriever(expanded)
        rows.append(Baseline("doc2query", bm25.search, expand_seconds + time.perf_counter() - t1, "bm25", positives,
                             lambda: (f"BM25 over the expanded corpus; {cost}", {"llm_calls_per_query": 0.0})))
    if "doc2query_dense" in methods:
        t1 = time.perf_counter()
        vectors = embed(encoder, expanded.contents, "document", EmbedOptions(progress=False))
        exact = ExactIndex(expanded.ids, vectors, "cosine", fingerprint=encoder.fingerprint)

        def search(texts, k):
            return exact.search_vectors(embed(encoder, list(texts), "query", EmbedOptions(progress=False)), k)

        rows.append(Baseline("doc2query_dense", search, expand_seconds + time.perf_counter() - t1, "cosine",
                             positives, lambda: (f"dense (exact) over the expanded corpus; {cost}",
                                                 {"llm_calls_per_query": 0.0})))
    return rows


def hyde_baseline(encoder, index, llm, max_words: int | None = None) -> Baseline:
    """HyDE over the raw dense `index` with `llm` (closed with the row). Its notes give LLM calls per query, requests
    sent and cached, failures, and the LLM's measured seconds per request."""
    from qkrag.retrieval.hyde import DEFAULT_MAX_WORDS, HydeRetriever

    hyde = HydeRetriever(encoder, index, llm, max_words=max_words or DEFAULT_MAX_WORDS)

    def describe() -> tuple[str, dict[str, Any]]:
        s = hyde.stats
        rate = (f"{s.seconds_per_sent:.2f} s of LLM per sent request, included in ms/query"
                if s.seconds_per_sent is not None else
                "every answer came from the cache, so ms/query leaves the LLM out (a first run pays one call per query)")
        notes = (f"query (query side) and hypothetical answer (document side, at most {hyde.max_words} words) "
                 f"averaged, searched in the raw index; {s.calls_per_query:.2f} LLM calls per query ({s.sent} sent, "
                 f"{s.cached} cached, {s.failed} unusable: query alone) with {llm.config.model}; {rate}"
                 + (f"; the queries go through the LLM's {llm.config.concurrency} parallel slots, so ms/query is per "
                    "query of a batch, below one query's own latency" if llm.config.concurrency > 1 else
                    "; one request at a time, so ms/query is one query's latency"))
        return notes, {"llm_calls_per_query": s.calls_per_query, "hyde": s.as_dict()}

    return Baseline("hyde", hyde.search, 0.0, describe=describe, close=llm.close)

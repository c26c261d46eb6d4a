"""HyDE (Gao et al. 2022): an LLM writes a short hypothetical answer to each query, and the dense index is searched
with that answer's embedding averaged with the query's. The LLM baseline a user picks instead of training anything:
it pays an LLM call per query at search time.

Sides: the query is embedded on the query side and the hypothetical answer on the document side. The answer is a
passage, written to look like the documents it should find, so it belongs where documents are embedded (an encoder
with prefixes, such as E5's "query: "/"passage: ", puts it beside the corpus); the query keeps its own side so the
average still carries what was asked, which a small model's answer may drift from. Both vectors are made unit length
before averaging, so neither dominates by its norm.

LLM outputs are cached by the LLM client (a content hash of model, prompt and parameters), so a re-run sends no
request; `HydeStats` counts what was sent, served from the cache, and failed. A query whose answer is unusable (a
refusal, nothing left after cleaning, no answer after the client's retries) is searched with its own vector alone,
and counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.errors import fail
from qkrag.llm.prompts import PromptTemplate, is_refusal, load_template
from qkrag.llm.rewrite import clean_output
from qkrag.ranking import Hit, unit_rows

DEFAULT_MAX_WORDS = 80
#: ~1.3 tokens per English word, with slack so the last sentence can finish.
_TOKENS_PER_WORD = 2


@dataclass
class HydeStats:
    """What the LLM side of HyDE cost: completions asked for (one per query searched), requests sent, answers served
    from the cache, answers unusable (searched with the query alone), and wall seconds spent waiting on the LLM."""

    queries: int = 0
    sent: int = 0
    cached: int = 0
    failed: int = 0
    llm_seconds: float = 0.0

    @property
    def calls_per_query(self) -> float:
        """LLM completions per query: one by design; a cached one costs no request."""
        return (self.sent + self.cached) / self.queries if self.queries else 0.0

    @property
    def seconds_per_sent(self) -> float | None:
        """Measured wall seconds per request actually sent (None when every answer came from the cache)."""
        return self.llm_seconds / self.sent if self.sent else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calls_per_query": self.calls_per_query, "seconds_per_sent": self.seconds_per_sent}


class HydeRetriever:
    """`Retriever`: query text -> LLM's hypothetical answer -> mean of the unit query vector (query side) and the unit
    answer vector (document side) -> the index's top k. `index` is anything with `search_vectors` (Chroma or exact).
    `weight` is the answer's share of the average (0.5: the plain mean)."""

    def __init__(self, encoder: Any, index: Any, llm: Any, *, template: str | Path | PromptTemplate = "hyde",
                 max_words: int = DEFAULT_MAX_WORDS, weight: float = 0.5, progress: bool = False):
        self.encoder, self.index, self.llm = encoder, index, llm
        self.template = template if isinstance(template, PromptTemplate) else load_template(template)
        if not {"query"} <= self.template.variables <= {"query", "max_words"}:
            raise fail(f"HyDE template {self.template.name!r}", f"it takes {sorted(self.template.variables)}",
                       "a HyDE template needs a {query} slot and may have {max_words}, nothing else")
        if not 0.0 <= weight <= 1.0:
            raise fail("HyDE weight", f"{weight!r} is outside [0, 1]", "pass the answer's share, e.g. 0.5")
        if not isinstance(max_words, int) or max_words < 1:
            raise fail("HyDE max_words", f"{max_words!r} is not a positive integer", "pass e.g. max_words=80")
        self.max_words, self.weight, self.progress = max_words, weight, progress
        self.stats = HydeStats()

    def answers(self, queries: Sequence[str]) -> list[str | None]:
        """The LLM's hypothetical answer per query (cleaned to one paragraph), None where it gave none usable."""
        variables = {"max_words": self.max_words} if "max_words" in self.template.variables else {}
        prompts = [self.template.render(query=q, **variables) for q in queries]
        before = self.llm.calls_made
        t0 = time.perf_counter()
        results = self.llm.complete_many(prompts, on_error="skip", progress=self.progress, desc="HyDE",
                                         max_tokens=_TOKENS_PER_WORD * self.max_words + 16)
        seconds = time.perf_counter() - t0
        out: list[str | None] = []
        for result in results:
            text = clean_output(result.text) if result is not None else ""
            out.append(text if text.strip() and not is_refusal(text) else None)
        self.stats.queries += len(queries)
        self.stats.sent += sum(r is not None and not r.cached for r in results)
        self.stats.cached += sum(r is not None and r.cached for r in results)
        self.stats.failed += sum(a is None for a in out)
        if self.llm.calls_made > before:
            self.stats.llm_seconds += seconds
        return out

    def vectors(self, queries: Sequence[str]) -> np.ndarray:
        """The search vectors: each query's unit vector averaged with its answer's (the query's alone without one)."""
        from qkrag.embed.encoders import EmbedOptions, embed

        options = EmbedOptions(progress=False)
        q = unit_rows(embed(self.encoder, list(queries), "query", options))
        answers = self.answers(queries)
        have = [i for i, a in enumerate(answers) if a is not None]
        out = q.copy()
        if have:
            a = unit_rows(embed(self.encoder, [answers[i] for i in have], "document", options))
            out[have] = (1 - self.weight) * q[have] + self.weight * a
        return out

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        if not queries:
            return []
        return self.index.search_vectors(self.vectors(queries), k)

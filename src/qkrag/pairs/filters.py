"""The generation filters, and the text measures they use: how much a query copies its passage (`copy_score`,
`ngram_copy`), rare-term masking (`mask_rare_terms`), the LLM-free Inverse Cloze Task candidates (`ict_candidates`),
and the form of queries against the examples they should imitate (`off_form`, `form_summary`).

`FILTERS` is the one table of filters: generation runs them in order on every candidate query and counts each drop
as `dropped_<name>` in the pairs folder's stats, which the report and the web page list as they find them. A new
filter is a function here and a row of the table (plus its threshold in `GenerateConfig`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qkrag.cache import content_hash
from qkrag.data import Document
from qkrag.text import is_question, normalize, sentences, word_overlap, words

if TYPE_CHECKING:
    from qkrag.pairs.config import GenerateConfig


def copy_score(query: str, passage: str) -> float:
    """Longest run of consecutive query words found verbatim in `passage`, as a share of the query's words.

    1.0 is a copied sentence or title; a paraphrase scores low even when it shares many single words.
    """
    q, p = words(query), words(passage)
    if not q:
        return 0.0
    where: dict[str, list[int]] = {}
    for i, w in enumerate(p):
        where.setdefault(w, []).append(i)
    best, prev = 0, {}  # prev: passage position -> length of the run ending there with the previous query word
    for w in q:
        cur = {i: prev.get(i - 1, 0) + 1 for i in where.get(w, ())}
        if cur:
            best = max(best, max(cur.values()))
        prev = cur
    return best / len(q)


def ngram_copy(query: str, passage: str, n: int = 3) -> float:
    """Share of the query's word n-grams that occur in `passage` (n shrinks for queries shorter than n words)."""
    q, p = words(query), words(passage)
    if not q:
        return 0.0
    n = min(n, len(q))
    grams = [tuple(q[i : i + n]) for i in range(len(q) - n + 1)]
    have = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    return sum(g in have for g in grams) / len(grams)


def mask_rare_terms(query: str, passage: str, doc_freq: Mapping[str, int], max_df: int) -> str | None:
    """`query` without the words it shares with `passage` that at most `max_df` documents contain, or None when that
    removes nothing. Those exact rare terms (gene names, drug names, numbers) let cosine match trivially; without
    them the query has to be matched on meaning, which is what the projection should learn."""
    passage_words = set(words(passage))
    kept, dropped = [], 0
    for token in query.split():
        core = words(token)
        if core and all(w in passage_words and doc_freq.get(w, 0) <= max_df for w in core):
            dropped += 1
            continue
        kept.append(token)
    if not dropped:
        return None
    masked = " ".join(kept).strip(" ,;:-")
    return masked or None


def ict_candidates(doc: Document, n: int, seed: int, min_words: int = 5, max_words: int = 40) -> list[tuple[str, str]]:
    """Inverse Cloze Task: up to `n` (sentence, passage without that sentence) pairs, sentences drawn seeded."""
    parts = sentences(doc.text)
    if len(parts) < 2:
        return []
    usable = [i for i, s in enumerate(parts) if min_words <= len(words(s)) <= max_words]
    rng = random.Random(content_hash("ict", seed, doc.id))
    picked = sorted(rng.sample(usable, min(n, len(usable))))
    rest = lambda i: " ".join(parts[:i] + parts[i + 1 :])  # noqa: E731
    return [(parts[i], f"{doc.title} {rest(i)}".strip()) for i in picked]


def off_form(query: str, examples: Sequence[str]) -> bool:
    """True when `query` is a question and (nearly) none of the user's examples are, or the other way round. Small
    models turn claims into questions half the time; a projection trained on questions then meets claims at test."""
    if not examples:
        return False
    share = sum(map(is_question, examples)) / len(examples)
    return (share <= 0.25 and is_question(query)) or (share >= 0.75 and not is_question(query))


def form_summary(queries: Sequence[str], passages: Sequence[str]) -> dict[str, float]:
    """How queries look next to their passages: mean length in words, question share, copied word-trigram share,
    copy score."""
    if not queries:
        return {"mean_words": 0.0, "question_share": 0.0, "ngram_copy": 0.0, "copy_score": 0.0}
    return {"mean_words": float(np.mean([len(words(q)) for q in queries])),
            "question_share": float(np.mean([is_question(q) for q in queries])),
            "ngram_copy": float(np.mean([ngram_copy(q, p) for q, p in zip(queries, passages)])),
            "copy_score": float(np.mean([copy_score(q, p) for q, p in zip(queries, passages)]))}


def echoes_example(query: str, config: GenerateConfig) -> bool:
    """True when `query` is one of the user's examples or nearly: the same words once normalised, a long run copied
    from one (`copy_score`), or most of one's content words (`word_overlap`). A small model hands the examples back
    with a word added or dropped ("Who did Denver beat in the AFC Championship game"), which breaks a copied run but
    not the overlap; such a query is the user's own, not one about the passage."""
    key = normalize(query)
    return any(key == normalize(e) or copy_score(query, e) >= config.max_copy
               or word_overlap(query, e) >= config.max_example_overlap for e in config.examples)


def borrowed_terms(query: str, doc_words: set[str], example_terms: set[str]) -> set[str]:
    """The query's words that come from the examples' uncommon words and appear nowhere in its passage."""
    return (set(words(query)) & example_terms) - doc_words


@dataclass(frozen=True)
class Seen:
    """What a filter sees of one candidate query: its text and kind ("llm", "masked" or "ict"), the passage it was
    written from, and the example words that are rare in this corpus."""

    text: str
    kind: str
    title: str
    positive_text: str
    doc_words: frozenset[str]
    example_terms: frozenset[str]
    config: GenerateConfig


@dataclass(frozen=True)
class PairFilter:
    """One row of `FILTERS`: a candidate is dropped (and counted as `dropped_<name>`) when `drops` says so.
    `before_dedupe` filters run before duplicates are removed, so a dropped text never hides a later good copy."""

    name: str
    drops: Callable[[Seen], bool]
    before_dedupe: bool = False


def bad_length(c: Seen) -> bool:
    return not c.config.min_words <= len(words(c.text)) <= c.config.max_words


def copies_passage(c: Seen) -> bool:
    """A long run copied from the passage, or most of a title of three words or more: matched by any encoder."""
    return copy_score(c.text, c.positive_text) >= c.config.max_copy or bool(
        c.title and len(words(c.title)) >= 3 and copy_score(c.text, c.title) >= c.config.max_title_copy)


def copies_example(c: Seen) -> bool:
    """Small models echo the few-shot examples back (ICT sentences cannot)."""
    return c.kind != "ict" and echoes_example(c.text, c.config)


def borrows_example_terms(c: Seen) -> bool:
    """A query that uses an example's rare word its passage lacks took it from the example: such a pair is wrong,
    not hard (e.g. "Egr3 suppresses p53" for a passage on MDMX when an example was about Egr3)."""
    return c.kind != "ict" and bool(c.example_terms) and bool(borrowed_terms(c.text, set(c.doc_words),
                                                                             set(c.example_terms)))


FILTERS: tuple[PairFilter, ...] = (
    PairFilter("length", bad_length, before_dedupe=True),
    PairFilter("copy", copies_passage),
    PairFilter("example_copy", copies_example),
    PairFilter("example_terms", borrows_example_terms),
)


def first_drop(c: Seen, before_dedupe: bool) -> str | None:
    """The name of the first filter of that phase that drops `c`, or None when it passes them all."""
    return next((f.name for f in FILTERS if f.before_dedupe == before_dedupe and f.drops(c)), None)

"""Before embedding: rewrite texts, or describe one aspect of them, with an LLM.

Similarity has to be asked "in which sense?". Two answers, both as encoders that wrap any `qkrag.embed.encoders.Encoder`, so
every stage (`embed()`, `build_index`, projections) gets them with no change:

* `RewritingEncoder` rewrites each text "in plain English, content only, at most N words" and embeds the rewrite.
  Two texts that share a style, typos, markup or boilerplate but not content stop matching on those; two texts with
  the same content in different dress start matching.
* `AspectEncoder` asks the LLM for one aspect of each text ("the climate of the place described", or any string with
  a `{text}` slot) and embeds the answer, so "nearest by climate" and "nearest by cuisine" become different queries
  over the same items.

    >>> from qkrag.embed.encoders import make_encoder, embed
    >>> from qkrag.llm.local import default_llm
    >>> from qkrag.llm.rewrite import AspectEncoder, RewritingEncoder
    >>> with default_llm() as llm:
    ...     by_climate = embed(AspectEncoder(make_encoder(), llm, "climate"), corpus.contents, "document")
    ...     plain = embed(RewritingEncoder(make_encoder(), llm, max_words=60), corpus.contents, "document")

LLM outputs are cached by the LLM layer and vectors by `embed()`, so a re-run sends no request and embeds nothing.
A text the LLM failed to rewrite (no usable answer after its retries, a refusal, nothing left after cleaning) is an
error, never its original text passed off as a rewrite: that original would be embedded and cached under the
rewriting encoder's name, and a later run with the LLM healthy would never rewrite it. `rewrite_texts` and
`aspect_texts` can instead leave such texts out (`on_failure="skip"`: `None` in their place, counted in
`RewriteStats.failed`); the encoders cannot leave a text out of a batch, so they always raise. The one fallback to the
original is an aspect's "none" (the text says nothing about it): an answer, counted in `RewriteStats.fallbacks`.
Each wrapper's `fingerprint` names the base encoder, the LLM model and its sampling settings, the template's hash and
every parameter, so caches and Chroma indexes never mix vectors of different rewrites (an index built with one
refuses an encoder with another).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.embed.encoders import SIDES, EmbedOptions, Encoder, Side, check_side, embed
from qkrag.errors import LLMError, fail
from qkrag.llm.prompts import PromptTemplate, aspect_description, aspect_template, is_refusal, load_template, parse_candidates

if TYPE_CHECKING:
    from qkrag.data import Corpus
    from qkrag.llm.client import LLM

__all__ = [
    "AspectEncoder",
    "ExtractiveAspectEncoder",
    "RewriteStats",
    "RewritingEncoder",
    "aspect_embeddings",
    "aspect_neighbours",
    "aspect_texts",
    "clean_output",
    "load_labelled_corpus",
    "make_rewriting_encoder",
    "nearest_neighbours",
    "neighbour_agreement",
    "pca_2d",
    "plot_aspect_maps",
    "rewrite_texts",
    "similarity_by_pair_kind",
]

log = logging.getLogger(__name__)

#: Bumped when the cleaning of LLM outputs changes: it changes the texts embedded, so it is part of the fingerprint.
_CLEANING_VERSION = "clean-v1"
DEFAULT_MAX_WORDS = 60
#: Aspect answers are asked to be "one or two plain sentences"; more tokens would only let a small model ramble.
ASPECT_MAX_TOKENS = 96

# Answers meaning "the text says nothing about this aspect" (the aspect template asks for exactly "none").
_NO_ASPECT = re.compile(
    r"^\W*(none|n/?a|not (?:mentioned|specified|stated|given|provided)|unknown|no information)\b\W*$"
    r"|^\W*the (?:text|passage|description) does not (?:mention|say|specify|describe|provide|give)",
    re.IGNORECASE,
)


@dataclass
class RewriteStats:
    """What rewriting did: texts sent, texts rewritten, texts that failed (left out) and fallbacks, by reason.

    Failure reasons: `unusable` (the LLM gave no usable output after its retries: server down, empty, refusal or
    garbled), `empty` (nothing left after removing preambles and fences), `refusal`. Fallback reason (the original
    text is kept, on purpose): `none`, an aspect the text does not mention.
    """

    texts: int = 0
    rewritten: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    @property
    def fallback_total(self) -> int:
        return sum(self.fallbacks.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def add(self, other: RewriteStats) -> None:
        self.texts += other.texts
        self.rewritten += other.rewritten
        self.fallbacks.update(other.fallbacks)
        self.failed.update(other.failed)

    def as_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "rewritten": self.rewritten, "fallbacks": dict(self.fallbacks),
                "failed": dict(self.failed)}


#: What to do with a text the LLM failed to rewrite: raise an `LLMError`, or leave it out (None in its place).
ON_FAILURE = ("error", "skip")


# ---------------------------------------------------------------------------------------------------- cleaning


def clean_output(text: str | None) -> str:
    """An LLM answer as one plain paragraph: fences, list preambles ("Here is the rewritten text:"), labels, bullets
    and quotes removed, lines joined. Bullets go too, so a list and the same content as prose embed alike."""
    return " ".join(parse_candidates(text, min_chars=1)) if text else ""


def _usable(raw: str | None, *, aspect: bool) -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, why not: a failure reason, or "none" for an aspect not mentioned)."""
    if raw is None:
        return None, "unusable"
    cleaned = clean_output(raw)
    if not cleaned.strip():
        return None, "refusal" if is_refusal(raw) else "empty"
    if is_refusal(cleaned):
        return None, "refusal"
    if aspect and _NO_ASPECT.match(cleaned):
        # Embedding "none" would make every item without the aspect the nearest neighbour of every other one.
        return None, "none"
    return cleaned, None


def _run(texts: Sequence[str], llm: LLM, template: PromptTemplate, variables: Mapping[str, Any],
         params: Mapping[str, Any], *, aspect: bool, stats: RewriteStats | None, progress: bool, desc: str,
         on_failure: str = "error") -> list[str | None]:
    if on_failure not in ON_FAILURE:
        raise fail("on_failure", f"{on_failure!r} is not a choice", f"use one of {ON_FAILURE}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise fail(f"text #{i}", "is empty" if isinstance(text, str) else f"is {type(text).__name__}, not str",
                       "drop empty texts before rewriting; an empty text has nothing to rewrite")
    prompts = [template.render(text=t, **variables) for t in texts]
    # "raise": the first failed request stops the run with the LLM layer's own message (server down, HTTP 401...).
    results = llm.complete_many(prompts, on_error="raise" if on_failure == "error" else "skip", progress=progress,
                                desc=desc, **params)
    local = RewriteStats(texts=len(texts))
    out: list[str | None] = []
    first_failed: int | None = None
    for i, (text, result) in enumerate(zip(texts, results)):
        cleaned, reason = _usable(None if result is None else result.text, aspect=aspect)
        if cleaned is not None:
            local.rewritten += 1
            out.append(cleaned)
        elif reason == "none":  # an answer: the text says nothing about the aspect; keep it distinct, see _usable
            local.fallbacks[reason] += 1
            out.append(text)
        else:
            local.failed[reason or "unusable"] += 1
            first_failed = i if first_failed is None else first_failed
            out.append(None)
    if stats is not None:
        stats.add(local)
    if local.failed_total:
        _report_failures(local, first_failed, desc, on_failure)
    if local.fallback_total:
        log.warning("%s: %d of %d texts say nothing about the aspect and kept their original text", desc,
                    local.fallback_total, len(texts))
    return out


def _report_failures(local: RewriteStats, first: int | None, desc: str, on_failure: str) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(local.failed.items()))
    if on_failure == "skip":
        log.warning("%s: %d of %d texts got no usable answer from the LLM and are left out (%s)", desc,
                    local.failed_total, local.texts, reasons)
        return
    raise fail(desc, f"{local.failed_total} of {local.texts} texts got no usable answer from the LLM ({reasons}; "
               f"the first is text #{first})",
               "check the LLM's answers (a model too small for the prompt?), or leave such texts out with "
               "on_failure='skip' (they are counted); their original texts are never used in place of a rewrite",
               exc=LLMError)


def _rewrite_template(template: str | Path | PromptTemplate) -> PromptTemplate:
    tpl = template if isinstance(template, PromptTemplate) else load_template(template)
    if "text" not in tpl.variables or not tpl.variables <= {"text", "max_words"}:
        raise fail(f"rewrite template {tpl.name!r}", f"it takes {sorted(tpl.variables)}",
                   "a rewrite template needs a {text} slot and may have {max_words}, nothing else")
    return tpl


def _check_max_words(max_words: int) -> int:
    if not isinstance(max_words, int) or max_words < 1:
        raise fail("max_words", f"{max_words!r} is not a positive integer", "pass e.g. max_words=60")
    return max_words


def _rewrite_max_tokens(max_words: int) -> int:
    # ~1.3 tokens per English word; the slack lets a sentence finish instead of being cut mid-word.
    return 2 * max_words + 16


def rewrite_texts(texts: Sequence[str], llm: LLM, *, template: str | Path | PromptTemplate = "rewrite",
                  max_words: int = DEFAULT_MAX_WORDS, stats: RewriteStats | None = None,
                  progress: bool = True, on_failure: str = "error") -> list[str | None]:
    """Each text rewritten by `llm` with `template` (default: plain English, content only, at most `max_words`).

    Requests go through `llm.complete_many` (cached: a re-run sends none; a progress bar counts them). A text with
    no usable rewrite (no usable answer after the LLM's retries, a refusal, nothing left after cleaning) raises an
    `LLMError`; with `on_failure="skip"` it is left out instead: `None` in its place, counted by reason in
    `stats.failed` (when given) and logged. Its original text is never returned as its rewrite.
    """
    tpl = _rewrite_template(template)
    variables = {"max_words": _check_max_words(max_words)} if "max_words" in tpl.variables else {}
    return _run(texts, llm, tpl, variables, {"max_tokens": _rewrite_max_tokens(max_words)}, aspect=False,
                stats=stats, progress=progress, desc="rewrite", on_failure=on_failure)


def aspect_texts(texts: Sequence[str], llm: LLM, aspect: str, *, stats: RewriteStats | None = None,
                 progress: bool = True, on_failure: str = "error") -> list[str | None]:
    """What each text says about one `aspect`: a built-in name ("climate", see `prompts.builtin_aspects()`) or a
    string with a `{text}` slot ("Which sports teams does {text} have?").

    A text that does not mention the aspect (the model answers "none") keeps its original text - counted in
    `stats.fallbacks` and logged - so such items stay distinct instead of all collapsing onto the embedding of
    "none". A text with no usable answer is an `LLMError`, or with `on_failure="skip"` `None`, as in `rewrite_texts`.
    """
    tpl = aspect_template(aspect)
    return _run(texts, llm, tpl, {}, {"max_tokens": ASPECT_MAX_TOKENS}, aspect=True, stats=stats,
                progress=progress, desc=f"aspect {_aspect_label(aspect)}", on_failure=on_failure)


def _aspect_label(aspect: str) -> str:
    return aspect if "{" not in aspect else " ".join(aspect.split())[:40]


# ---------------------------------------------------------------------------------------------------- encoders


def _check_sides(sides: Sequence[str]) -> tuple[Side, ...]:
    sides = tuple(sides)
    if not sides:
        raise fail("sides", "no side is given", f"pass some of {SIDES}")
    for side in sides:
        check_side(side)
    return tuple(s for s in SIDES if s in sides)  # canonical order, so ("document", "query") fingerprints as both


class _WrappingEncoder(Encoder):
    """An encoder that embeds, with `base`, a transform of each text on its chosen sides; the fingerprint names the
    transform and ends with the base's, so a reader sees which vectors these are made from."""

    kind = ""

    def __init__(self, base: Encoder, sides: Sequence[str]):
        if not isinstance(base, Encoder):
            raise fail("base encoder", f"{type(base).__name__} is not a qkrag Encoder",
                       "wrap an encoder from qkrag.embed.encoders.make_encoder()")
        self.base = base
        self.sides = _check_sides(sides)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.kind}:{self.base.name}"

    @property
    def dimension(self) -> int:
        return self.base.dimension

    def warm_up(self) -> None:
        self.base.warm_up()

    def _describe(self) -> list[str]:
        """What the transform is (template, aspect, parameters)."""
        raise NotImplementedError

    def _settings(self) -> list[str]:
        """What else changes its output (the LLM and its sampling); placed after `_describe` in the fingerprint."""
        return []

    def _versions(self) -> list[str]:
        return []

    @property
    def fingerprint(self) -> str:
        parts = [*self._describe(), *self._settings(), "sides=" + "+".join(self.sides), *self._versions()]
        return f"{self.kind}[{','.join(parts)}]|{self.base.fingerprint}"

    @property
    def cache_key(self) -> str:
        # Besides the fingerprint, the servers behind it: the base's (an API model) and the LLM's, whose answers
        # differ from another server's model of the same name. Nothing added when there is none to add, so the
        # vectors cached for a local base and the embedded LLM stay valid.
        extra = [*self._servers()]
        if self.base.cache_key != self.base.fingerprint:
            extra.append(f"base={self.base.cache_key}")
        return "|".join([self.fingerprint, *extra])

    def _servers(self) -> list[str]:
        return []

    def transform(self, texts: Sequence[str]) -> list[str]:
        """The texts this encoder embeds instead of `texts` (on its sides)."""
        raise NotImplementedError

    def embed_batch(self, texts: Sequence[str], side: Side) -> np.ndarray:
        check_side(side)
        if side in self.sides:
            texts = self.transform(texts)
        return self.base.embed_batch(texts, side)


class _LLMEncoder(_WrappingEncoder):
    """Shared by both LLM wrappers: LLM texts on the chosen sides, counted outcomes, the LLM in the fingerprint."""

    def __init__(self, base: Encoder, llm: LLM, sides: Sequence[str], progress: bool):
        super().__init__(base, sides)
        self.llm = llm
        self.progress = progress
        self.stats = RewriteStats()

    def _settings(self) -> list[str]:
        c = self.llm.config
        return [f"llm={c.model},temperature={c.temperature:g}"]

    def _servers(self) -> list[str]:
        scope = self.llm.cache_scope
        return [f"llm_server={scope}"] if scope else []

    def _versions(self) -> list[str]:
        return [_CLEANING_VERSION]


class RewritingEncoder(_LLMEncoder):
    """Embeds an LLM rewrite of each text ("plain English, content only, at most `max_words` words") with `base`.

    `sides`: which texts are rewritten; the default rewrites documents only, since a query rewrite costs an LLM call
    at search time. Pass `("query", "document")` when queries come in messy styles too. `template` is a shipped name,
    a path to a .toml file or a `PromptTemplate` with `{text}` (and optionally `{max_words}`). A text the LLM fails
    to rewrite raises an `LLMError` (nothing is embedded or cached for its batch); counts accumulate in `self.stats`.
    """

    kind = "rewrite"

    def __init__(self, base: Encoder, llm: LLM, *, template: str | Path | PromptTemplate = "rewrite",
                 max_words: int = DEFAULT_MAX_WORDS, sides: Sequence[str] = ("document",), progress: bool = True):
        super().__init__(base, llm, sides, progress)
        self.template = _rewrite_template(template)
        self.max_words = _check_max_words(max_words)

    def _describe(self) -> list[str]:
        return [f"template={self.template.name}@{self.template.hash[:12]}", f"max_words={self.max_words}",
                f"max_tokens={_rewrite_max_tokens(self.max_words)}"]

    def transform(self, texts: Sequence[str]) -> list[str]:
        # on_failure="error" (never "skip"): a batch of vectors cannot leave a text out. Raising also keeps the
        # failed batch out of the embedding cache, so a later run with the LLM up rewrites it.
        return rewrite_texts(texts, self.llm, template=self.template, max_words=self.max_words, stats=self.stats,
                             progress=self.progress)  # type: ignore[return-value]


class AspectEncoder(_LLMEncoder):
    """Embeds what the LLM says about one `aspect` of each text (built-in name or a string with `{text}`) with `base`.

    One aspect per encoder, so each aspect gets its own vectors, cache entries and index. Both sides by default: a
    query's aspect is compared with documents' aspects. "none" answers (kept as the original text) accumulate in
    `self.stats.fallbacks`; a text with no usable answer raises an `LLMError`.
    """

    kind = "aspect"

    def __init__(self, base: Encoder, llm: LLM, aspect: str, *, sides: Sequence[str] = SIDES, progress: bool = True):
        super().__init__(base, llm, sides, progress)
        self.template = aspect_template(aspect)  # validates the aspect now, not at the first batch
        self.aspect = aspect

    def _describe(self) -> list[str]:
        name = self.aspect if "{" not in self.aspect else "custom"
        return [f"aspect={name}", f"template={self.template.name}@{self.template.hash[:12]}",
                f"max_tokens={ASPECT_MAX_TOKENS}"]

    def transform(self, texts: Sequence[str]) -> list[str]:
        return aspect_texts(texts, self.llm, self.aspect, stats=self.stats, progress=self.progress)  # type: ignore


class ExtractiveAspectEncoder(_WrappingEncoder):
    """An aspect without an LLM: embed only the sentences of each text that are about `aspect`.

    Each text is split into sentences; the base encoder scores every sentence against the aspect's description
    (built-in names have one in prompts/aspects.toml; any other string is its own description); the `top` most similar
    sentences, in their original order, are embedded. A paragraph that mixes climate, food and size then yields a
    climate vector made of its climate sentences. Why it exists: a small local LLM asked "what is the climate of this
    place?" repeats names and boilerplate and misstates facts (benchmarks/results/aspect_demo.md), while selecting the
    text's own sentences cannot invent anything. A text of one sentence is embedded whole.
    """

    kind = "extract"

    def __init__(self, base: Encoder, aspect: str, *, top: int = 1, sides: Sequence[str] = ("document",)):
        if top < 1:
            raise fail("ExtractiveAspectEncoder top", f"{top} keeps no sentence", "keep at least 1 sentence")
        super().__init__(base, sides)
        self.aspect, self.top = aspect, top
        self.description = aspect_description(aspect)
        self._aspect_vector: np.ndarray | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.kind}:{self.aspect}|{self.base.name}"

    def _describe(self) -> list[str]:
        from qkrag.cache import content_hash

        return [f"aspect={self.aspect}", f"description={content_hash(self.description)[:12]}", f"top={self.top}"]

    def transform(self, texts: Sequence[str]) -> list[str]:
        """The sentences of each text that are most about the aspect, in their original order."""
        if self._aspect_vector is None:
            v = self.base.embed_batch([self.description], "query")[0]
            self._aspect_vector = v / max(float(np.linalg.norm(v)), 1e-12)
        from qkrag.pairs.generate import sentences as split_sentences  # pair generation's splitter (keeps "e.g. the" whole)

        split = [split_sentences(t) or [t] for t in texts]
        flat = [s for parts in split for s in parts]
        vectors = self.base.embed_batch(flat, "document")
        scores = vectors @ self._aspect_vector / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        out, start = [], 0
        for parts in split:
            own = scores[start : start + len(parts)]
            keep = sorted(np.argsort(-own, kind="stable")[: self.top])
            out.append(" ".join(parts[i] for i in keep))
            start += len(parts)
        return out


def make_rewriting_encoder(base: Encoder, llm: LLM, *, max_words: int | None = None, aspect: str | None = None,
                           template: str | Path | None = None, sides: Sequence[str] | None = None) -> Encoder:
    """The encoder behind `--rewrite` / `--aspect`: `base` unchanged when neither is asked for, a `RewritingEncoder`
    for a rewrite (`max_words` or `template` given), an `AspectEncoder` for an aspect. Not both: an aspect answer is
    already short plain text."""
    wants_rewrite = max_words is not None or template is not None
    if wants_rewrite and aspect is not None:
        raise fail("rewrite and aspect", "both were asked for",
                   "choose one: a rewrite (plain-English content) or an aspect (one sense of similarity)")
    if aspect is not None:
        return AspectEncoder(base, llm, aspect, **({"sides": sides} if sides else {}))
    if wants_rewrite:
        return RewritingEncoder(base, llm, template=template or "rewrite", max_words=max_words or DEFAULT_MAX_WORDS,
                                **({"sides": sides} if sides else {}))
    return base


# ---------------------------------------------------------------------------------------------------- neighbours


def load_labelled_corpus(path: str | Path, fields: Sequence[str], limit: int | None = None,
                         ids: Sequence[str] | None = None) -> tuple[Corpus, dict[str, list[str]]]:
    """A JSONL corpus whose rows also carry label fields (as `data/cities/cities.jsonl`: climate, cuisine, size):
    the corpus (only `ids`, in that order, or the first `limit` rows, when given) and `{field: [label per
    document]}`, in corpus order."""
    import json

    from qkrag.data import load_corpus

    corpus = load_corpus(path)
    rows = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows[str(row.get("_id", row.get("id")))] = row
    ids = list(ids) if ids is not None else corpus.ids[:limit] if limit else corpus.ids
    missing = [(i, f) for i in ids for f in fields if f not in rows.get(i, {})]
    if missing:
        raise fail(str(path), f"document {missing[0][0]!r} has no {missing[0][1]!r} label",
                   f"give every row the fields {list(fields)}")
    return corpus.subset(ids), {f: [str(rows[i][f]) for i in ids] for f in fields}


def nearest_neighbours(vectors: np.ndarray, ids: Sequence[str], k: int = 5) -> dict[str, list[str]]:
    """Each item's `k` nearest other items by cosine, best first (the item itself excluded)."""
    from qkrag.retrieval.base import similarity

    if len(ids) != len(vectors):
        raise fail("nearest_neighbours", f"{len(ids)} ids for {len(vectors)} vectors", "pass one id per vector")
    scores = similarity(vectors, vectors, "cosine").numpy()
    np.fill_diagonal(scores, -np.inf)
    k = min(k, len(ids) - 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {ids[i]: [ids[j] for j in row] for i, row in enumerate(order)}


def neighbour_agreement(vectors: np.ndarray, labels: Sequence[str]) -> float:
    """How often an item's nearest other item (cosine) has the same label: 1.0 = always."""
    ids = [str(i) for i in range(len(labels))]
    nearest = nearest_neighbours(vectors, ids, k=1)
    return float(np.mean([labels[int(nearest[i][0])] == labels[int(i)] for i in ids]))


def similarity_by_pair_kind(vectors: np.ndarray, content: Sequence[str], style: Sequence[str]) -> dict[str, float]:
    """Mean cosine over pairs of items by kind: same content in another style, same style with other content, and
    neither. Raw embeddings that match on style score the second kind high; a good rewrite scores the first."""
    from qkrag.retrieval.base import similarity

    scores = similarity(vectors, vectors, "cosine").numpy()
    kinds: dict[str, list[float]] = {"same content, other style": [], "same style, other content": [], "unrelated": []}
    for i in range(len(content)):
        for j in range(i + 1, len(content)):
            same_c, same_s = content[i] == content[j], style[i] == style[j]
            if same_c and not same_s:
                kinds["same content, other style"].append(scores[i, j])
            elif same_s and not same_c:
                kinds["same style, other content"].append(scores[i, j])
            elif not same_c and not same_s:
                kinds["unrelated"].append(scores[i, j])
    return {k: float(np.mean(v)) if v else float("nan") for k, v in kinds.items()}


def aspect_embeddings(texts: Sequence[str], base_encoder: Encoder, llm: LLM, aspects: Sequence[str], *,
                      options: EmbedOptions | None = None, stats: dict[str, RewriteStats] | None = None
                      ) -> dict[str, np.ndarray]:
    """`{aspect: vectors}`, one (len(texts), dim) array per aspect, embedded as documents through the caches.
    When `stats` is a dict, each aspect's `RewriteStats` (fallback counts) is put in it."""
    out = {}
    for aspect in aspects:
        encoder = AspectEncoder(base_encoder, llm, aspect, progress=options.progress if options else True)
        out[aspect] = embed(encoder, texts, "document", options, desc=f"embed {_aspect_label(aspect)}")
        if stats is not None:
            stats[aspect] = encoder.stats
    return out


def aspect_neighbours(corpus: Corpus, base_encoder: Encoder, llm: LLM, aspects: Sequence[str], *, k: int = 5,
                      options: EmbedOptions | None = None) -> dict[str, dict[str, list[str]]]:
    """`{aspect: {id: [k nearest ids]}}`: each item's nearest items in the sense of each aspect."""
    vectors = aspect_embeddings(corpus.contents, base_encoder, llm, aspects, options=options)
    return {aspect: nearest_neighbours(v, corpus.ids, k) for aspect, v in vectors.items()}


# ---------------------------------------------------------------------------------------------------- pictures


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of the unit-normalised vectors (cosine geometry), as (n, 2)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    # SVD signs are arbitrary; fix them so a re-run draws the same picture, not a mirror image.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return coords * np.where(signs == 0, 1, signs)


def plot_aspect_maps(embeddings: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]],
                     names: Sequence[str], *, path: str | Path | None = None, title: str | None = None):
    """One PCA map per embedding, points coloured by that embedding's label (`labels[key]`, or the label named after
    the key's last ":" part, as in "extract:climate", or the first label set for an embedding with no labels of its
    own, such as "raw") and annotated with `names`. Returns the figure;
    writes it to `path` (atomically) when given."""
    import matplotlib.pyplot as plt

    keys = list(embeddings)
    cols = min(3 if len(keys) > 4 else 2, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 6.5 * rows), squeeze=False)
    first_labels = next(iter(labels))
    for ax, key in zip(axes.flat, keys):
        label_key = next((k for k in (key, key.split(":")[-1]) if k in labels), first_labels)
        these = list(labels[label_key])
        coords = pca_2d(embeddings[key])
        palette = plt.get_cmap("tab10")
        for c, value in enumerate(sorted(set(these))):
            mask = np.array([v == value for v in these])
            ax.scatter(coords[mask, 0], coords[mask, 1], s=60, color=palette(c % 10), label=value,
                       edgecolor="black", linewidth=0.5, zorder=3)
        for (x, y), name in zip(coords, names):
            ax.annotate(name, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8, zorder=4)
        agreement = neighbour_agreement(embeddings[key], these)
        ax.set_title(f"{key} embedding, coloured by {label_key}\n(nearest neighbour shares it: {agreement:.0%})",
                     fontsize=11)
        ax.legend(fontsize=8, loc="best", framealpha=0.8, title=label_key, title_fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))  # leave the title its own band
    if path is not None:
        from qkrag.atomic import atomic_open

        with atomic_open(Path(path), "wb") as handle:
            fig.savefig(handle, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    return fig

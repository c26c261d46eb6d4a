"""LLM text transforms before embedding: rewrite texts "in plain English, content only, at most N words"
(`rewrite_texts`), or answer one aspect of each ("the climate of the place described", any string with a `{text}`
slot: `aspect_texts`). The encoders that embed these answers live in `qkrag.embed.wrappers`.

LLM outputs are cached by the LLM layer, so a re-run sends no request. A text the LLM failed to rewrite (no usable
answer after its retries, a refusal, nothing left after cleaning) is an error, never its original text passed off as
a rewrite: that original would be embedded and cached under the rewriting encoder's name, and a later run with the
LLM healthy would never rewrite it. `on_failure="skip"` leaves such texts out instead (`None` in their place, counted
in `RewriteStats.failed`). The one fallback to the original is an aspect's "none" (the text says nothing about it):
an answer, counted in `RewriteStats.fallbacks`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkrag.errors import LLMError, LLMUnavailableError, fail
from qkrag.llm.prompts import PromptTemplate, aspect_template, is_refusal, load_template, parse_candidates

if TYPE_CHECKING:
    from qkrag.data import Corpus
    from qkrag.llm.client import LLM

__all__ = ["RewriteStats", "aspect_texts", "clean_output", "rewrite_texts"]

log = logging.getLogger(__name__)

#: Bumped when the cleaning of LLM outputs changes: it changes the texts embedded, so it is part of the fingerprint.
CLEANING_VERSION = "clean-v1"
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


def rewrite_template(template: str | Path | PromptTemplate) -> PromptTemplate:
    tpl = template if isinstance(template, PromptTemplate) else load_template(template)
    if "text" not in tpl.variables or not tpl.variables <= {"text", "max_words"}:
        raise fail(f"rewrite template {tpl.name!r}", f"it takes {sorted(tpl.variables)}",
                   "a rewrite template needs a {text} slot and may have {max_words}, nothing else")
    return tpl


def check_max_words(max_words: int) -> int:
    if not isinstance(max_words, int) or max_words < 1:
        raise fail("max_words", f"{max_words!r} is not a positive integer", "pass e.g. max_words=60")
    return max_words


def rewrite_max_tokens(max_words: int) -> int:
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
    tpl = rewrite_template(template)
    variables = {"max_words": check_max_words(max_words)} if "max_words" in tpl.variables else {}
    return _run(texts, llm, tpl, variables, {"max_tokens": rewrite_max_tokens(max_words)}, aspect=False,
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
                progress=progress, desc=f"aspect {aspect_label(aspect)}", on_failure=on_failure)


def aspect_label(aspect: str) -> str:
    return aspect if "{" not in aspect else " ".join(aspect.split())[:40]


def rewrite_corpus(corpus: Corpus, llm: LLM, out: str | os.PathLike[str], *, aspect: str | None = None,
                   max_words: int = DEFAULT_MAX_WORDS, limit: int | None = None,
                   skip_failed: bool = False) -> dict[str, Any]:
    """What `qkrag rewrite` does: rewrite (or answer `aspect` of) the first `limit` documents of `corpus` and write
    JSONL (`_id`, `title`, `text` = the rewrite, `original`) to `out`, all or nothing. Returns what was written."""
    import json

    from qkrag.atomic import atomic_open

    if aspect and aspect.startswith("extract:"):
        raise fail(f"--aspect {aspect}", "extracts sentences at embedding time, with no LLM text to write",
                   f"use it where texts are embedded: `qkrag index CORPUS --aspect {aspect}`")
    docs = list(corpus)[:limit] if limit else list(corpus)
    stats = RewriteStats()
    texts = [d.content for d in docs]
    on_failure = "skip" if skip_failed else "error"
    try:
        new = aspect_texts(texts, llm, aspect, stats=stats, on_failure=on_failure) if aspect else \
            rewrite_texts(texts, llm, max_words=max_words, stats=stats, on_failure=on_failure)
    except LLMUnavailableError:
        raise  # the server is down: skipping items would skip them all
    except LLMError as err:  # one item's output was unusable: say how this command skips such items
        what, _, problem = str(err).partition(": ")
        raise fail(what, problem.split(". Fix:")[0], "check that the server answers this model with usable text, "
                   "or pass --skip-failed to leave out (and count) documents it fails on", exc=LLMError) from None
    with atomic_open(out) as handle:  # all or nothing: a killed run leaves no half file (the LLM cache keeps the work)
        for doc, text in zip(docs, new):
            if text is None:  # failed and skipped: counted in stats, never written as the original
                continue
            handle.write(json.dumps({"_id": doc.id, "title": "", "text": text, "original": doc.content},
                                    ensure_ascii=False) + "\n")
    return {"out": str(out), "written": sum(text is not None for text in new), "documents": len(docs),
            **stats.as_dict()}

"""Encoders that wrap another encoder: embed an LLM rewrite of each text (`RewritingEncoder`), one aspect of it
answered by the LLM (`AspectEncoder`), or, without an LLM, the sentence most about an aspect
(`ExtractiveAspectEncoder`). Every stage (`embed()`, `build_index`, projections) takes them unchanged. Each wrapper's
`fingerprint` names the base encoder, the LLM model and its sampling settings, the template's hash and every
parameter, so caches and Chroma indexes never mix vectors of different rewrites."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qkrag.embed.encoders import SIDES, Encoder, Side, check_side
from qkrag.errors import fail
from qkrag.llm.prompts import PromptTemplate, aspect_description, aspect_template
from qkrag.llm.rewrite import (ASPECT_MAX_TOKENS, CLEANING_VERSION, DEFAULT_MAX_WORDS, RewriteStats, aspect_texts,
                               check_max_words, rewrite_max_tokens, rewrite_template, rewrite_texts)

if TYPE_CHECKING:
    from qkrag.llm.client import LLM


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
        return [CLEANING_VERSION]


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
        self.template = rewrite_template(template)
        self.max_words = check_max_words(max_words)

    def _describe(self) -> list[str]:
        return [f"template={self.template.name}@{self.template.hash[:12]}", f"max_words={self.max_words}",
                f"max_tokens={rewrite_max_tokens(self.max_words)}"]

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
        from qkrag.text import sentences as split_sentences  # pair generation's splitter (keeps "e.g. the" whole)

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


class InstructionAspectEncoder(_WrappingEncoder):
    """An aspect as an instruction: embed "<the aspect's description>: <text>" with `base`, no LLM and no selection.

    The cheapest way to say which similarity is meant; how much an instruction moves the vectors depends on the base
    model (instruction-tuned encoders are trained to follow one, all-MiniLM-L6-v2 is not).
    """

    kind = "instruct"

    def __init__(self, base: Encoder, aspect: str, *, sides: Sequence[str] = ("document",)):
        super().__init__(base, sides)
        self.aspect = aspect
        self.instruction = aspect_description(aspect).rstrip(": ") + ": "

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.kind}:{self.aspect}|{self.base.name}"

    def _describe(self) -> list[str]:
        from qkrag.cache import content_hash

        return [f"aspect={self.aspect}", f"instruction={content_hash(self.instruction)[:12]}"]

    def transform(self, texts: Sequence[str]) -> list[str]:
        return [self.instruction + t for t in texts]


def aspect_method(aspect: str) -> tuple[str, str]:
    """How an `--aspect` value is embedded: `("extract", name)` for a plain name or "extract:NAME" (the default: the
    text's own sentence most about the aspect, no LLM), `("llm", aspect)` for "llm:NAME" or a template with a
    `{text}` slot (the LLM answers it). Extraction is the default because it beats raw embeddings on every aspect of
    benchmarks/results/aspect_bench.md while the LLM methods, the instruction prefix and the aspect maps trained on raw
    vectors (from LLM-judged pairs, or even from true labels) do not, at a fraction of their cost."""
    if not isinstance(aspect, str) or not aspect.strip():
        raise fail("aspect", "it is empty", 'give a name (e.g. "climate"), "llm:climate", or a string with {text}')
    if aspect.startswith("llm:"):
        return "llm", aspect.removeprefix("llm:")
    if "{" in aspect:
        return "llm", aspect
    return "extract", aspect.removeprefix("extract:")


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

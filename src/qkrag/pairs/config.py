"""How to generate pairs: `GenerateConfig` (every knob of the pipeline, with why its default), and the few-shot
examples drawn for it (`draw_examples`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from qkrag.errors import fail
from qkrag.ranking import Space, check_space

if TYPE_CHECKING:
    pass

#: Share of human SciFact train claims whose passage ranks 1 / 2-10 / 11-100 under all-MiniLM-L6-v2 cosine
#: (0.46, 0.79 - 0.46, 0.935 - 0.79), renormalised over the top 100: what `policy="target"` aims for by default.
HUMAN_RANK_TARGET = (0.49, 0.355, 0.155)




Policy = Literal["target", "hardest", "none"]


Generator = Literal["llm", "ict"]


AnswerCheck = Literal["form", "llm", "both", "none"]


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate and how hard to make it. Fields that change the LLM requests (prompt, seeds, temperature,
    passage text) key the journal and the cache; the rest only change the cheap deterministic stages after it."""

    generator: Generator = "llm"
    # -- which passages ------------------------------------------------------------------------------------------
    sample: int | None = None  # passages to sample (seeded); None = all of them (or the doc_ids given)
    seed: int = 0
    # Only a passage that carries an answer gets queries: "form" = `qkrag.text.carries_answer` (not a question, a
    # request or boilerplate; cheap, applied to every candidate before sampling), "llm" = ask the LLM
    # (`answer_check` template, one call per passage checked), "both" = form first, then the LLM; "none" = every
    # passage. Passages that fail stay in the corpus as negatives.
    answer_check: AnswerCheck = "form"
    # -- the LLM stage -------------------------------------------------------------------------------------------
    candidates: int = 4  # candidate queries sampled per passage ...
    per_call: int = 2  # ... asked for `per_call` at a time, so ceil(candidates / per_call) calls, each its own seed
    examples: tuple[str, ...] = ()  # up to 8 user example queries: the prompt imitates their form (few-shot)
    template: str | None = None  # None: query_few_shot with examples, query_zero_shot without
    temperature: float = 0.8  # sampled, so calls with different seeds give different candidates
    max_tokens: int = 160
    include_title: bool = False  # hiding the title removes the model's favourite thing to copy
    max_chars: int = 1500  # passage text is cut here: prompt length dominates a small CPU model's time
    # -- filters -------------------------------------------------------------------------------------------------
    min_words: int = 3
    max_words: int = 40
    max_copy: float = 0.75  # drop a query whose longest run of words copied from the passage is >= this share of it
    max_title_copy: float = 0.8  # ... or from the title
    near_duplicate: float = 0.95  # cosine above which two candidates for one passage count as one
    mask_terms: bool = True  # add a variant of each query without the passage's rare exact terms
    mask_df: float = 0.002  # a term is rare when at most this share of documents (and at least 1) contain it
    max_example_overlap: float = 0.6  # drop a query whose content words overlap an example's this much (Jaccard)
    # -- failures ------------------------------------------------------------------------------------------------
    max_failed_share: float = 0.5  # stop when more than this share of passages gets no usable LLM output
    # -- round trip and difficulty -------------------------------------------------------------------------------
    roundtrip_k: int = 100
    queries_per_passage: int = 1
    policy: Policy = "target"
    target: tuple[float, ...] = HUMAN_RANK_TARGET  # shares for ranks 1, 2-10, 11-roundtrip_k
    space: Space = "cosine"
    # -- hard negatives ------------------------------------------------------------------------------------------
    negatives: int = 4
    negative_depth: int = 50  # mined from the top of the ranking
    false_negative_ratio: float = 0.95  # a document scoring >= this share of the positive's score may be relevant
    judge_negatives: bool = False  # also ask the LLM (`judge` template) and drop negatives it calls relevant
    progress: bool = True

    def __post_init__(self) -> None:
        if self.generator not in ("llm", "ict"):
            raise fail("generate config generator", f"{self.generator!r} is not a generator", 'use "llm" or "ict"')
        if self.answer_check not in ("form", "llm", "both", "none"):
            raise fail("generate config answer_check", f"{self.answer_check!r} is not a check",
                       'use "form", "llm", "both" or "none"')
        for name in ("max_failed_share", "max_example_overlap"):
            if not 0 <= getattr(self, name) <= 1:
                raise fail(f"generate config {name}", f"{getattr(self, name)} is not a share", "give a value in [0, 1]")
        if self.policy not in ("target", "hardest", "none"):
            raise fail("generate config policy", f"{self.policy!r} is not a policy", 'use "target", "hardest" or "none"')
        for name in ("candidates", "per_call", "queries_per_passage", "roundtrip_k", "min_words", "max_chars"):
            if getattr(self, name) < 1:
                raise fail(f"generate config {name}", f"{getattr(self, name)} is below 1", f"set {name} >= 1")
        if self.negatives < 0:
            raise fail("generate config negatives", f"{self.negatives} is negative", "use 0 for no negatives")
        if self.sample is not None and self.sample < 1:
            raise fail("generate config sample", f"{self.sample} is below 1", "use None for all passages")
        if len(self.target) != 3 or min(self.target) < 0 or sum(self.target) <= 0:
            raise fail("generate config target", f"{self.target} is not three non-negative shares",
                       "give shares for ranks 1, 2-10 and 11-roundtrip_k, e.g. (0.49, 0.355, 0.155)")
        if len(self.examples) > 8:
            raise fail("generate config examples", f"{len(self.examples)} examples given",
                       "give at most 8: more cost a small model context and add little")
        check_space(self.space)
        object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def calls(self) -> int:
        return math.ceil(self.candidates / self.per_call)

    @property
    def template_name(self) -> str:
        return self.template or ("query_few_shot" if self.examples else "query_zero_shot")


def draw_examples(queries: Iterable[str], k: int, seed: int = 0) -> tuple[str, ...]:
    """`k` example queries drawn (seeded) from a user's own queries, for the few-shot prompt: what `qkrag bench` and
    the generation benchmark both use, so the same seed gives the same prompts and a rerun hits the LLM cache.
    Draw them from training queries only: an example that is also a test query leaks it into the pairs."""
    pool = list(queries)
    if k <= 0 or not pool:
        return ()
    rng = np.random.default_rng(seed)
    return tuple(pool[i] for i in rng.choice(len(pool), min(k, len(pool)), replace=False))

"""An LLM relevance judge: the probability that a passage is relevant to a query, read from the model's logits.

    >>> from qkrag.llm.judge import LLMJudge
    >>> judge = LLMJudge(llm)                       # any qkrag.llm.client.LLM: the embedded model or a server
    >>> judge.score(["does vitamin D prevent fractures"], ["We followed 2,000 women ..."])
    array([0.83])

The model is asked the `judge` template's yes/no question and answers one token; the judge reads that token's top
alternatives (chat completions with `logprobs=True, top_logprobs=N`, which llama.cpp's server and OpenAI give) and
returns P(yes) / (P(yes) + P(no)), the variants "Yes", " yes", "YES" pooled. A graded score ranks a candidate list
where a bare yes/no verdict would tie most of it. A server that returns no logprobs still gives its verdict: 1.0 for
yes, 0.0 for no. A pair the model answers neither way (no yes or no among the alternatives, or an output that failed
every retry) scores NaN, so a caller can tell "unknown" from "no".

Scoring the query likelihood log P(q | d) instead (UPR) needs the log probabilities of prompt tokens, which
OpenAI-compatible chat servers, llama.cpp's included, do not return; the yes/no probability is what they can give.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from qkrag.errors import fail
from qkrag.llm import prompts
from qkrag.text import cut_at_word

if TYPE_CHECKING:
    from qkrag.llm.client import LLM

__all__ = ["LLMJudge", "yes_probability"]


def yes_probability(alternatives: Mapping[str, float]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from one token's {token: log probability} alternatives, or None when neither a yes
    nor a no is among them. Case and surrounding spaces are ignored, and the variants' probabilities are summed."""
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in alternatives.items():
        word = token.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


class LLMJudge:
    """Relevance of (query, passage) pairs by an LLM: `score` gives P(relevant) per pair, in [0, 1], NaN if unknown.

    `template`: a yes/no prompt with `query` and `text` (default `judge`); `max_chars`: passages are cut here (the
    prompt's length is most of a small CPU model's time per pair); `top_logprobs`: alternatives asked per token.
    Answers go through the LLM's cache, so judging the same pairs again costs nothing.
    """

    def __init__(self, llm: LLM, *, template: str = "judge", max_chars: int = 1500, top_logprobs: int = 10):
        if max_chars < 1 or top_logprobs < 2:
            raise fail("LLMJudge", f"max_chars={max_chars}, top_logprobs={top_logprobs}",
                       "give max_chars >= 1 and top_logprobs >= 2 (a yes and a no)")
        self.llm, self.template = llm, prompts.load_template(template)
        self.max_chars, self.top_logprobs = max_chars, top_logprobs

    def score(self, queries: Sequence[str], texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        """P(relevant) of each (queries[i], texts[i]) pair."""
        if len(queries) != len(texts):
            raise fail("LLMJudge.score", f"{len(queries)} queries for {len(texts)} passages", "give one query per passage")
        rendered = [self.template.render(query=q, text=self.cut(t)) for q, t in zip(queries, texts)]
        answers = self.llm.complete_many(rendered, on_error="skip", progress=progress, desc="judge", temperature=0.0,
                                         max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        out = np.full(len(rendered), np.nan)
        for i, answer in enumerate(answers):
            if answer is None:
                continue
            p = yes_probability(answer.logprobs[0]) if answer.logprobs else None
            if p is None:
                verdict = prompts.parse_yes_no(answer.text)
                p = None if verdict is None else float(verdict)
            if p is not None:
                out[i] = p
        return out

    def cut(self, text: str) -> str:
        """The passage as the judge sees it: at most `max_chars` characters, cut at a word."""
        return cut_at_word(text, self.max_chars)

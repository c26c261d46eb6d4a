"""The LLM relevance judge: P(yes) read from the first answer token's logprobs, through the one client."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from qkrag.errors import QkragError
from qkrag.llm.client import LLM, LLMConfig
from qkrag.llm.judge import LLMJudge, yes_probability
from tests.fakes import FakeOpenAIServer, last_message


def overlap_logprobs(body: dict) -> dict[str, float]:
    """A fake model whose belief in "yes" grows with the query's words found in the passage."""
    prompt = last_message(body)
    passage, query = prompt.split("Query:", 1)
    words = set(re.findall(r"[a-z]+", query.split("\n")[0].lower()))
    share = len(words & set(re.findall(r"[a-z]+", passage.lower()))) / max(1, len(words))
    p = 0.05 + 0.9 * share
    return {"Yes": math.log(0.7 * p), " yes": math.log(0.3 * p), "No": math.log(1 - p), "The": math.log(1e-3)}


def judge_llm(server: FakeOpenAIServer, tmp_path) -> LLM:
    config = LLMConfig(model="fake-model", base_url=server.url, timeout=5.0, max_retries=1, backoff=0.0)
    return LLM(config, cache=tmp_path / "llm.sqlite")


def test_yes_probability_pools_the_variants_of_yes_and_no():
    assert yes_probability({"Yes": math.log(0.3), " yes": math.log(0.3), "NO": math.log(0.2), "x": 0.0}) == \
        pytest.approx(0.75)
    assert yes_probability({"The": -0.1, "A": -2.0}) is None


def test_judge_reads_graded_scores_from_logprobs_and_orders_passages(tmp_path):
    queries = ["bread dough rises with yeast"] * 3
    texts = ["Yeast makes bread dough rise.", "Dough rests before baking.", "Tides follow the moon."]
    with FakeOpenAIServer(chat=lambda body: "Yes", logprobs=overlap_logprobs) as server:
        with judge_llm(server, tmp_path) as llm:
            scores = LLMJudge(llm).score(queries, texts, progress=False)
            again = LLMJudge(llm).score(queries, texts, progress=False)  # from the cache, logprobs included
            hits = server.hits
    assert scores[0] > scores[1] > scores[2]
    assert 0 < scores[2] < scores[0] < 1  # graded, not the verdict's 0/1
    np.testing.assert_allclose(again, scores)
    assert hits == 3
    sent = server.requests[0]
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["top_logprobs"] == 10
    assert sent["temperature"] == 0.0


def test_judge_falls_back_to_the_verdict_without_logprobs_and_marks_unknowns(tmp_path):
    answers = {"about yeast": "yes", "about tides": "No.", "about ships": "Perhaps"}

    def chat(body):
        return next(a for k, a in answers.items() if k in last_message(body))

    with FakeOpenAIServer(chat=chat) as server, judge_llm(server, tmp_path) as llm:
        scores = LLMJudge(llm).score(["q"] * 3, ["about yeast", "about tides", "about ships"], progress=False)
    assert scores[0] == 1.0 and scores[1] == 0.0 and np.isnan(scores[2])


def test_judge_cuts_long_passages_and_refuses_mismatched_input(tmp_path):
    with FakeOpenAIServer(chat=lambda body: "no") as server, judge_llm(server, tmp_path) as llm:
        judge = LLMJudge(llm, max_chars=20)
        judge.score(["q"], ["word " * 100], progress=False)
        assert "word word word word ..." in last_message(server.requests[0])
        assert "word " * 6 not in last_message(server.requests[0])
        with pytest.raises(QkragError, match="2 queries for 1 passages"):
            judge.score(["a", "b"], ["c"])


@pytest.mark.slow
@pytest.mark.llm
def test_the_embedded_model_gives_graded_scores_through_logprobs(real_llm):
    """The shipped runtime returns the answer token's alternatives, so scores are graded, not the verdict's 0 or 1."""
    abstract = ("In a randomized trial of 2,686 adults aged 65 to 85, 100,000 IU of vitamin D3 every four months for "
                "five years reduced the rate of first fracture by 22% compared with placebo.")
    scores = LLMJudge(real_llm()).score(["vitamin D supplements reduce fractures in older adults",
                                         "how to bake sourdough bread at home"], [abstract, abstract], progress=False)
    assert all(0 < s < 1 for s in scores), scores
    assert scores[0] > scores[1], scores

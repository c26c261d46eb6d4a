"""qkrag.pairs.steer: ranking positives and steering which candidate queries are kept (by rank bucket and form)."""

from __future__ import annotations

from qkrag.pairs.config import GenerateConfig
from qkrag.pairs.filters import form_summary
from qkrag.pairs.steer import rank_positives, rank_summary

from tests.fakes import make_corpus


def test_rank_helpers(fake_encoder):
    corpus = make_corpus()
    ranks = rank_positives(fake_encoder, corpus, [corpus[0].content, corpus[3].content], ["d0", "d3"])
    assert list(ranks) == [1, 1]
    s = rank_summary([1, 1, 5, 50, 500])
    assert (s["rank1"], s["top10"], s["top100"], s["n"]) == (0.4, 0.6, 0.8, 5)
    f = form_summary(["a b c", "d e"], ["a b c", "x y"])
    assert f["mean_words"] == 2.5 and f["ngram_copy"] == 0.5


def test_target_steering_picks_the_candidate_in_the_drawn_bucket():
    from qkrag.pairs.steer import Candidate, steer_candidates

    def cands(*ranks):
        return [Candidate("d0", f"q{r}", "p", "m", "llm", "", i, rank=r) for i, r in enumerate(ranks)]

    def pick(target, *ranks):
        return steer_candidates(cands(*ranks), GenerateConfig(target=target))[0].rank

    assert pick((1, 0, 0), 40, 3, 1) == 1
    assert pick((0, 1, 0), 40, 3, 1) == 3
    assert pick((0, 0, 1), 40, 3, 1) == 40
    assert pick((0, 0, 1), 1, 3, 7) == 7  # nothing that hard: the hardest there is
    assert pick((1, 0, 0), 90, 12, 30) == 12  # nothing that easy: the easiest there is
    assert steer_candidates(cands(5, 9), GenerateConfig(policy="hardest"))[0].rank == 9


def test_target_steering_meets_the_target_over_all_passages():
    # Half the passages have only a rank-1 candidate, half can give rank 1 or rank 5. Target: half at rank 1. Drawing
    # a bucket per passage gives ~75% rank 1 (the flexible half draws rank 1 half the time); the target is reachable
    # exactly by giving every flexible passage its rank-5 candidate.
    from qkrag.pairs.steer import Candidate, steer_candidates

    cands = []
    for p in range(40):
        ranks = (1,) if p % 2 else (1, 5)
        cands += [Candidate(f"d{p}", f"q{p}-{r}", "p", "m", "llm", "", i, rank=r) for i, r in enumerate(ranks)]
    chosen = steer_candidates(cands, GenerateConfig(target=(0.5, 0.5, 0.0)))
    assert len(chosen) == 40 and len({c.doc_id for c in chosen}) == 40
    assert sum(c.rank == 1 for c in chosen) == 20
    assert [c.doc_id for c in chosen] == [f"d{p}" for p in range(40)]  # passage order kept
    # two per passage where there are two: all 60 candidates, whatever the target
    assert len(steer_candidates(cands, GenerateConfig(target=(0.5, 0.5, 0.0), queries_per_passage=2))) == 60
    # the human default: the 20 flexible passages can't all go hard, so rank 1 ends as near 0.49 as it can
    hard = sum(c.rank > 1 for c in steer_candidates(cands, GenerateConfig()))
    assert hard == 20


def test_steering_prefers_the_examples_form_within_a_rank_bucket():
    from qkrag.pairs.steer import Candidate, steer_candidates

    config = GenerateConfig(target=(1, 0, 0), examples=("A claim.", "Another claim."))
    cands = [Candidate("d0", "Is it so?", "p", "m", "llm", "", 0, rank=1, off_form=True),
             Candidate("d0", "It is so.", "p", "m", "llm", "", 1, rank=1, copy_score=0.5),
             Candidate("d0", "It is not so.", "p", "m", "llm", "", 2, rank=4)]
    assert steer_candidates(cands, config)[0].text == "It is so."  # in form beats less copied; the rank bucket beats both
    assert steer_candidates(cands, GenerateConfig(target=(0, 1, 0), examples=config.examples))[0].text == "It is not so."

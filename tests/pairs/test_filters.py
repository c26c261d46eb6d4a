"""qkrag.pairs.filters: the text measures and filters of pair generation (copied runs, rare terms, inverse cloze
candidates, the examples' form)."""

from __future__ import annotations

import pytest

from qkrag.data import Document
from qkrag.pairs.filters import copy_score, ict_candidates, mask_rare_terms, ngram_copy

from tests.fakes import make_corpus


def test_copy_score_measures_longest_copied_run():
    passage = "Insulin is made by beta cells of the pancreas and lowers blood glucose."
    assert copy_score("insulin is made by beta cells", passage) == 1.0
    assert copy_score("which organ makes insulin", passage) == pytest.approx(1 / 4)
    assert copy_score("what lowers blood glucose levels", passage) == pytest.approx(3 / 5)
    assert copy_score("", passage) == 0.0
    assert ngram_copy("beta cells of the pancreas", passage) == 1.0
    assert ngram_copy("cells that regulate sugar", passage) == 0.0


def test_mask_rare_terms_drops_only_rare_passage_terms():
    df = {"insulin": 1, "beta": 2, "cells": 40, "how": 90, "work": 50}
    assert mask_rare_terms("how do insulin beta cells work", "insulin beta cells work", df, max_df=2) == \
        "how do cells work"
    assert mask_rare_terms("how do cells work", "insulin beta cells work", df, max_df=2) is None


def test_ict_cuts_a_sentence_out_of_the_passage():
    doc = make_corpus()[0]
    pairs = ict_candidates(doc, n=2, seed=0)
    assert len(pairs) == 2
    for sentence, rest in pairs:
        assert sentence in doc.text and sentence not in rest
        assert rest.startswith(doc.title)
    assert ict_candidates(doc, n=2, seed=0) == pairs  # seeded
    assert ict_candidates(Document("x", "Only one sentence here."), n=2, seed=0) == []


def test_off_form_follows_the_examples():
    from qkrag.pairs.filters import off_form

    claims = ["Egr3 regulates B cells.", "Statins lower LDL."]
    questions = ["what lowers ldl?", "how do statins work?"]
    assert off_form("Does Egr3 regulate B cells?", claims) and not off_form("Egr3 regulates T cells.", claims)
    assert off_form("Statins lower LDL.", questions) and not off_form("why do statins work?", questions)
    assert not off_form("anything?", []) and not off_form("anything?", claims + questions)  # no clear form: no say


def test_filters_table_drives_generation_and_its_counts(monkeypatch, tmp_path):
    """A row added to FILTERS is run on every candidate and counted as dropped_<name>, with no other change."""
    from qkrag.pairs import filters
    from qkrag.pairs.config import GenerateConfig
    from qkrag.pairs.generate import generate_pairs
    from tests.fakes import FakeEncoder

    corpus = make_corpus()
    config = GenerateConfig(generator="ict", sample=None, candidates=2, negatives=2, progress=False)
    kept = generate_pairs(corpus, FakeEncoder(64), None, config, tmp_path / "a").stats["counts"]
    assert kept["candidates"] > 2 and "dropped_odd_length" not in kept
    planted = filters.PairFilter("odd_length", lambda c: len(c.text) % 2 == 1)
    monkeypatch.setattr(filters, "FILTERS", filters.FILTERS + (planted,))
    result = generate_pairs(corpus, FakeEncoder(64), None, config, tmp_path / "b")
    counts = result.stats["counts"]
    assert counts["dropped_odd_length"] > 0 and counts["candidates"] < kept["candidates"]
    assert result.dataset["query"] and all(len(q) % 2 == 0 for q in result.dataset["query"])


def test_first_drop_names_the_first_filter_of_its_phase():
    from qkrag.pairs.config import GenerateConfig
    from qkrag.pairs.filters import Seen, first_drop

    config = GenerateConfig(min_words=3, max_words=40)
    short = Seen("too short", "llm", "", "a passage", frozenset(), frozenset(), config)
    assert first_drop(short, before_dedupe=True) == "length"
    copied = Seen("a passage about bread rising in a warm kitchen", "llm", "", "a passage about bread rising in a "
                  "warm kitchen overnight", frozenset(), frozenset(), config)
    assert first_drop(copied, before_dedupe=True) is None and first_drop(copied, before_dedupe=False) == "copy"

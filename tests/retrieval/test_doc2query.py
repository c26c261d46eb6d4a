"""doc2query expansion: generated queries appended to their passages, and what that does to BM25."""

import pytest

from qkrag.data import Corpus
from qkrag.errors import InputError
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.retrieval.doc2query import expand_corpus, queries_by_passage

CORPUS = Corpus.from_texts({"tea": "green leaves steeped in hot water", "bread": "flour and yeast baked in an oven",
                            "rain": "clouds release droplets"})


def test_queries_group_by_passage_in_order_without_repeats():
    got = queries_by_passage(["tea", "bread", "tea", "tea"], ["morning drink", "loaf", "morning  drink", "brew"])
    assert got == {"tea": ["morning drink", "brew"], "bread": ["loaf"]}


def test_expansion_appends_queries_and_leaves_other_passages_alone():
    expanded = expand_corpus(CORPUS, {"tea": ["morning drink", "brew"]})
    assert expanded.get("tea").text == "green leaves steeped in hot water morning drink brew"
    assert expanded.get("bread") == CORPUS.get("bread") and expanded.ids == CORPUS.ids
    assert "1 passages expanded" in expanded.source


def test_bm25_finds_an_expanded_passage_by_the_words_people_ask_with():
    before = BM25Retriever(CORPUS).search(["morning drink"], 3)[0]
    assert all(hit.score <= 0 for hit in before)  # no passage shares a word with the query
    expanded = expand_corpus(CORPUS, queries_by_passage(["tea"], ["morning drink"]))
    assert BM25Retriever(expanded).search(["morning drink"], 1)[0][0].id == "tea"


def test_queries_for_another_corpus_are_refused():
    with pytest.raises(InputError, match="'toast'"):
        expand_corpus(CORPUS, {"toast": ["crisp"]})

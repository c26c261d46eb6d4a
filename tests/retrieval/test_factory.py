"""One way to build the retriever a command measures."""

import pytest

from qkrag.data import load_beir
from qkrag.errors import InputError
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.retrieval.factory import check_kind, dense_index, make_retriever, retriever_for_folder
from qkrag.retrieval.hybrid import FusionConfig, HybridRetriever
from qkrag.retrieval.index import DenseRetriever, ExactIndex


def test_kinds_compose(tiny_beir, fake_encoder):
    corpus = load_beir(tiny_beir).corpus
    index = dense_index("exact", corpus, fake_encoder)
    assert isinstance(index, ExactIndex) and len(index.ids) == len(corpus)
    assert isinstance(make_retriever(fake_encoder, index), DenseRetriever)
    fused = make_retriever(fake_encoder, index, lexical=BM25Retriever(corpus), fusion=FusionConfig("rrf"))
    assert isinstance(fused, HybridRetriever)
    assert fused.search(["why does bread rise"], 2)[0][0].id == "d4"


def test_named_retrievers_and_their_refusals(tiny_beir, fake_encoder):
    corpus = load_beir(tiny_beir).corpus
    bm25, info = retriever_for_folder("bm25", corpus, None, data=tiny_beir)
    assert isinstance(bm25, BM25Retriever) and info == {}
    hybrid, info = retriever_for_folder("hybrid", corpus, fake_encoder, data=tiny_beir)
    assert isinstance(hybrid, HybridRetriever) and info["fusion_chosen_on"].startswith("default")
    with pytest.raises(InputError, match="not a retriever"):
        check_kind("colbert")
    with pytest.raises(InputError, match="BM25 has no embeddings"):
        retriever_for_folder("bm25", corpus, None, data=tiny_beir, projection="p")
    with pytest.raises(InputError, match="only apply to the hybrid"):
        retriever_for_folder("exact", corpus, fake_encoder, data=tiny_beir, fusion="rrf")


def test_a_registered_retriever_is_built_by_name_and_listed_as_a_baseline(tiny_beir, fake_encoder, monkeypatch):
    from qkrag.retrieval.factory import RETRIEVERS, FolderRequest, RetrieverKind, baselines

    corpus = load_beir(tiny_beir).corpus
    asked: list[FolderRequest] = []

    def build(request):
        asked.append(request)
        return BM25Retriever(request.corpus), {"built": "by the test"}

    monkeypatch.setitem(RETRIEVERS, "fake", RetrieverKind(build, "a test's retriever"))
    found, info = retriever_for_folder("fake", corpus, None, data=tiny_beir, split="test")
    assert isinstance(found, BM25Retriever) and info == {"built": "by the test"}
    assert asked[0].kind == "fake" and asked[0].corpus is corpus and asked[0].split == "test"
    assert check_kind("fake") == "fake" and baselines() == ("cosine", "bm25", "hybrid", "fake")
    with pytest.raises(InputError, match="only apply to the hybrid"):  # a kind fuses only when its row says so
        retriever_for_folder("fake", corpus, None, data=tiny_beir, fusion="rrf")


def test_an_unknown_retriever_fails_naming_the_choices():
    with pytest.raises(InputError, match=r"--retriever 'colbert': is not a retriever\. Fix: use one of exact, chroma, "
                                         r"bm25, hybrid"):
        check_kind("colbert")

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

"""qkrag.projection.data: Pairs refuse bad input, build from a collection or a dataset, and split by query or by
document."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.data import load_beir
from qkrag.errors import InputError
from qkrag.projection.data import Pairs, pairs_from_collection, pairs_from_dataset


def test_empty_pairs_are_refused():
    with pytest.raises(InputError, match="no pairs.*Fix:"):
        Pairs(np.zeros((0, 8), np.float32), np.zeros(0, np.int64), np.ones((3, 8), np.float32))


def test_positive_outside_the_documents_is_refused():
    with pytest.raises(InputError, match=r"pair #1: positive row 5 is outside the 3 documents"):
        Pairs(np.ones((2, 8), np.float32), np.array([0, 5]), np.ones((3, 8), np.float32))


def test_pairs_from_collection(tiny_beir, fake_encoder):
    collection = load_beir(tiny_beir, "test")
    pairs = pairs_from_collection(collection, fake_encoder)
    assert len(pairs) == 3 and pairs.documents.shape == (5, 32) and pairs.encoder == "fake-encoder"
    assert [pairs.doc_ids[p] for p in pairs.positives] == ["d1", "d2", "d4"]
    assert pairs.query_ids == ("q1", "q2", "q3")


def test_pairs_from_dataset_and_unknown_ids(tiny_beir, fake_encoder):
    import datasets

    corpus = load_beir(tiny_beir).corpus
    rows = {"query": ["cat on a mat", "cat on a mat", "rising bread"], "positive_id": ["d1", "d5", "d4"],
            "negative_ids": [["d2"], [], ["d1", "d3"]]}
    pairs = pairs_from_dataset(datasets.Dataset.from_dict(rows), corpus, fake_encoder)
    assert len(pairs) == 3 and pairs.n_queries == 2
    assert pairs.negatives.tolist() == [[1, -1], [-1, -1], [0, 2]]
    rows["positive_id"][2] = "d99"
    with pytest.raises(InputError, match=r"row 2: positive_id 'd99' is not in the corpus.*Fix:"):
        pairs_from_dataset(datasets.Dataset.from_dict(rows), corpus, fake_encoder)
    rows["positive_id"][2], rows["negative_ids"][0] = "d4", ["nope"]
    with pytest.raises(InputError, match=r"row 0: negative id 'nope'"):
        pairs_from_dataset(datasets.Dataset.from_dict(rows), corpus, fake_encoder)
    with pytest.raises(InputError, match="no pairs"):
        pairs_from_dataset(datasets.Dataset.from_dict({"query": [], "positive_id": []}), corpus, fake_encoder)


def _pairs() -> Pairs:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(40, 8)).astype(np.float32)
    positives = np.arange(60) % 40
    queries = docs[positives] + 0.1 * rng.normal(size=(60, 8)).astype(np.float32)
    return Pairs(queries, positives, docs, query_ids=tuple(f"q{i}" for i in range(60)),
                 doc_ids=tuple(f"d{i}" for i in range(40)))


def test_a_document_split_keeps_validation_documents_out_of_training():
    train, val = _pairs().split(0.2, seed=1, by="document")
    assert set(train.positive_ids()).isdisjoint(val.positive_ids())
    assert len(train) + len(val) == 60 and len(val) > 0


def test_a_query_split_may_share_documents():
    train, val = _pairs().split(0.2, seed=1, by="query")
    assert not set(train.positive_ids()).isdisjoint(val.positive_ids())  # why the document split exists


def test_pairs_say_whether_they_are_judged_or_synthetic(tiny_beir, fake_encoder):
    from qkrag.data import load_beir
    from qkrag.projection.data import pairs_from_dataset

    collection = load_beir(tiny_beir, "test")
    judged = pairs_from_collection(collection, fake_encoder)
    assert judged.origin == "judged queries" and judged.split(0.5, by="query")[1].origin == "judged queries"
    doc = next(iter(collection.corpus)).id
    synthetic = pairs_from_dataset([{"query": "a question", "positive_id": doc}], collection.corpus, fake_encoder)
    assert synthetic.origin == "synthetic pairs"

"""BM25: it finds the obvious document; saved indexes reload identically and refuse other documents; the streamed
build (`build_bm25`) scores exactly as bm25s's in-memory index for every variant, whatever the chunk size, and
loads without the corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkrag.data import Corpus
from qkrag.errors import IndexMismatchError, InputError
from qkrag.retrieval.bm25 import BM25Retriever, CorpusDigest, build_bm25, saved_source

from tests.fakes import TOPIC_DOCS

DOCS = TOPIC_DOCS


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(DOCS)


def test_bm25_ranks_the_matching_document_first(corpus) -> None:
    bm25 = BM25Retriever(corpus)
    hits = bm25.search(["why does bread rise", "oiling a bicycle chain", "how do plants make sugar"], k=3)
    assert [row[0].id for row in hits] == ["bread", "bikes", "plants"]
    assert hits[0][0].text == DOCS["bread"]
    assert all(row[i].score >= row[i + 1].score for row in hits for i in range(len(row) - 1))


def test_bm25_stems_when_pystemmer_is_there(corpus) -> None:
    pytest.importorskip("Stemmer")
    bm25 = BM25Retriever(corpus)
    assert bm25.stemmed
    assert bm25.search(["rising breads"], k=1)[0][0].id == "bread"  # rises/rising, bread/breads share a stem
    assert BM25Retriever(corpus, stemmer=None).search(["rising breads"], k=1) == [[]]


def test_bm25_queries_without_known_words_get_no_hits(corpus) -> None:
    bm25 = BM25Retriever(corpus)
    hits = bm25.search(["the of and", "zebra quantum", "cat"], k=10)
    assert hits[0] == [] and hits[1] == []
    assert [h.id for h in hits[2]] == ["cat"]  # only documents sharing a term, not zero-scored filler
    assert len(bm25.search(["carbon dioxide"], k=100)[0]) == 2  # k above the corpus size is fine


def test_bm25_bad_input(corpus) -> None:
    with pytest.raises(InputError, match="one string"):
        BM25Retriever(corpus).search("bread")
    with pytest.raises(InputError, match="k1="):
        BM25Retriever(corpus, k1=-1)
    with pytest.raises(InputError, match="Snowball"):
        pytest.importorskip("Stemmer")
        BM25Retriever(corpus, stemmer="klingon")



PASSAGES = {f"d{i}": f"Topic{i % 7} passage number {i} is about subject{i % 5} and theme{i % 3}. It covers "
            f"matter{i % 11}." for i in range(30)}
QUERIES = ["topic3 subject1", "matter7 theme2", "passage number 12", "the of and"]


def test_bm25_save_load_round_trip_gives_identical_hits(tmp_path):
    corpus = Corpus.from_texts(PASSAGES)
    built = BM25Retriever(corpus, k1=1.5, b=0.6)
    assert built.save(tmp_path / "bm25") == tmp_path / "bm25"
    loaded = BM25Retriever.load(tmp_path / "bm25", corpus)
    assert loaded.search(QUERIES, k=5) == built.search(QUERIES, k=5)
    assert (loaded.k1, loaded.b, loaded.method, loaded.stopwords, loaded.stemmed) == (1.5, 0.6, "lucene", "en",
                                                                                       built.stemmed)
    manifest = json.loads((tmp_path / "bm25" / BM25Retriever.MANIFEST).read_text())
    assert manifest["settings"]["stemmer"] == built.stemmer_name and manifest["documents"] == 30
    # saving again replaces the folder atomically and leaves no temporary folder behind
    built.save(tmp_path / "bm25")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]


def test_bm25_load_refuses_other_documents(tmp_path):
    corpus = Corpus.from_texts(PASSAGES)
    BM25Retriever(corpus).save(tmp_path / "bm25")
    changed = Corpus.from_texts({**PASSAGES, "d3": "a different text entirely"})
    with pytest.raises(IndexMismatchError, match="other documents.*Fix: rebuild it"):
        BM25Retriever.load(tmp_path / "bm25", changed)
    reordered = Corpus.from_texts(dict(reversed(list(PASSAGES.items()))))
    with pytest.raises(IndexMismatchError):
        BM25Retriever.load(tmp_path / "bm25", reordered)  # positions would name the wrong documents
    with pytest.raises(InputError, match="no BM25 index there"):
        BM25Retriever.load(tmp_path / "nowhere", corpus)


# ------------------------------------------------------------------------------------------------ streamed build
def corpus_of_varied_lengths() -> Corpus:
    """Documents of different lengths with repeated words, an empty one, non-ASCII ids: every path of the scoring."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)] + ["carbon", "carbons", "dioxide", "the", "and"]
    texts = {f"doc-{i}-é": " ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for i in range(80)}
    texts["doc-empty"] = "the and of"  # only stopwords: no tokens at all
    return Corpus.from_texts(texts)


def all_scores(retriever: BM25Retriever, queries: list[str]) -> list[dict[str, float]]:
    return [{h.id: h.score for h in row} for row in retriever.search(queries, k=10_000)]


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_streamed_build_scores_as_bm25s_does(tmp_path, method):
    corpus = corpus_of_varied_lengths()
    queries = ["w1 w2 carbon", "dioxide w7 w7", "carbons", "w59 w3 w11 w12", "nothing here"]
    in_memory = BM25Retriever(corpus, method=method, k1=1.4, b=0.7)
    build_bm25(((d.id, d.content) for d in corpus), tmp_path / "bm25", method=method, k1=1.4, b=0.7, chunk=7)
    streamed = BM25Retriever.load(tmp_path / "bm25", corpus)
    for want, got in zip(all_scores(in_memory, queries), all_scores(streamed, queries)):
        assert want.keys() == got.keys()
        assert np.allclose([want[i] for i in want], [got[i] for i in want], rtol=1e-6, atol=1e-6)


def test_streamed_build_does_not_depend_on_the_chunk_size(tmp_path):
    docs = [(d.id, d.content) for d in corpus_of_varied_lengths()]
    for chunk in (1, 13, 1000):
        build_bm25(iter(docs), tmp_path / f"c{chunk}", chunk=chunk)
    for name in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", BM25Retriever.IDS):
        first = np.load(tmp_path / "c1" / name)
        assert all(np.array_equal(first, np.load(tmp_path / f"c{c}" / name)) for c in (13, 1000)), name


def test_streamed_build_reads_the_documents_once_in_chunks_and_loads_without_them(tmp_path):
    corpus = Corpus.from_texts(PASSAGES)
    pulled, seen = [], []

    def documents():
        for doc in corpus:
            pulled.append(doc.id)
            yield doc.id, doc.content

    build_bm25(documents(), tmp_path / "bm25", chunk=8, progress=seen.append, source="key-1")
    assert pulled == corpus.ids and seen == [8, 16, 24, 30]
    assert saved_source(tmp_path / "bm25") == "key-1" and saved_source(tmp_path / "none") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]  # no spill or temporary folder left behind
    lookups = []

    def texts(ids):
        lookups.append(list(ids))
        return {i: PASSAGES[i] for i in ids}

    bare = BM25Retriever.load(tmp_path / "bm25", mmap=True, texts=texts)
    assert isinstance(bare.ids, np.memmap)
    want = BM25Retriever(corpus).search(QUERIES, k=5)
    assert bare.search(QUERIES, k=5) == want and lookups  # same ids, scores and texts, looked up by id
    assert [[h.text for h in row] for row in BM25Retriever.load(tmp_path / "bm25").search(QUERIES, k=5)] == \
        [[None] * len(row) for row in want]  # no corpus, no lookup: hits without texts


def test_streamed_build_is_checked_against_the_corpus_it_read(tmp_path):
    build_bm25(((i, t) for i, t in PASSAGES.items()), tmp_path / "bm25")
    manifest = json.loads((tmp_path / "bm25" / BM25Retriever.MANIFEST).read_text())
    assert manifest["corpus_hash"] == CorpusDigest.of(Corpus.from_texts(PASSAGES)) and manifest["documents"] == 30
    with pytest.raises(IndexMismatchError, match="other documents"):
        BM25Retriever.load(tmp_path / "bm25", Corpus.from_texts({**PASSAGES, "d3": "changed"}))


def test_streamed_build_bad_input_leaves_the_old_index(tmp_path):
    build_bm25(iter(PASSAGES.items()), tmp_path / "bm25")
    before = (tmp_path / "bm25" / BM25Retriever.MANIFEST).read_text()
    with pytest.raises(InputError, match="'d2'.*not an \\(id, text\\) pair.*NoneType"):
        build_bm25(iter([("d1", "fine"), ("d2", None)]), tmp_path / "bm25")
    with pytest.raises(InputError, match="got no documents"):
        build_bm25(iter([]), tmp_path / "bm25")
    with pytest.raises(InputError, match="k1="):
        build_bm25(iter(PASSAGES.items()), tmp_path / "bm25", k1=-1)
    with pytest.raises(InputError, match="not a BM25 variant"):
        build_bm25(iter(PASSAGES.items()), tmp_path / "bm25", method="tfidf")
    assert (tmp_path / "bm25" / BM25Retriever.MANIFEST).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]


def test_an_index_saved_before_ids_were_recorded_still_loads_with_its_corpus(tmp_path):
    """Format 1 (qkrag before streamed builds): no ids file, the corpus hashed as one JSON document."""
    from qkrag.cache import content_hash

    corpus = Corpus.from_texts(PASSAGES)
    BM25Retriever(corpus).save(tmp_path / "old")
    path = tmp_path / "old" / BM25Retriever.MANIFEST
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "format": 1, "corpus_hash": content_hash(corpus.ids, corpus.contents)}))
    (tmp_path / "old" / BM25Retriever.IDS).unlink()
    assert BM25Retriever.load(tmp_path / "old", corpus).search(QUERIES) == BM25Retriever(corpus).search(QUERIES)
    with pytest.raises(InputError, match="older qkrag without its document ids.*pass the corpus"):
        BM25Retriever.load(tmp_path / "old")

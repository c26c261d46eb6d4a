import json

import pytest

from qkrag.data import Corpus, Document, check_qrels, load_beir, load_corpus, load_qrels, load_queries, splits
from qkrag.errors import InputError


def test_load_beir_reads_corpus_queries_and_judgments(tiny_beir):
    col = load_beir(tiny_beir, "test")
    assert len(col.corpus) == 5
    assert set(col.queries) == {"q1", "q2", "q3"}
    assert col.qrels["q2"] == {"d2": 1}
    assert splits(tiny_beir) == ["test"]


def test_document_content_joins_title_and_text_like_mteb():
    assert Document("a", "body", "Title").content == "Title body"
    assert Document("a", "body").content == "body"


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": oops}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2.*not valid JSON.*Fix"):
        load_corpus(p)


def test_duplicate_ids_are_refused(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two"}\n')
    with pytest.raises(InputError, match="duplicate document id 'a'"):
        load_corpus(p)


def test_empty_text_is_refused(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "   "}\n')
    with pytest.raises(InputError, match="document 'b' has empty text"):
        load_corpus(p)


def test_missing_text_field_lists_what_was_found(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "body": "one"}\n')
    with pytest.raises(InputError, match="no text field.*found _id, body"):
        load_corpus(p)


def test_qrels_naming_unknown_ids_are_refused(tiny_beir):
    with (tiny_beir / "qrels" / "test.tsv").open("a") as f:
        f.write("q1\tnot-a-doc\t1\n")
    with pytest.raises(InputError, match="judged document id.*not-a-doc"):
        load_beir(tiny_beir, "test")


def test_qrels_naming_unknown_queries_are_refused(tiny_beir):
    corpus = load_corpus(tiny_beir)
    with pytest.raises(InputError, match="judged query id"):
        check_qrels({"q-missing": {"d1": 1}}, corpus, load_queries(tiny_beir), "qrels")


def test_unknown_split_names_the_available_ones(tiny_beir):
    with pytest.raises(InputError, match=r"no split 'train'.*\['test'\]"):
        load_beir(tiny_beir, "train")


def test_bad_qrels_line_is_named(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(InputError, match=r"q\.tsv:2"):
        load_qrels(p)


def test_csv_and_tsv_corpora(tmp_path):
    (tmp_path / "c.csv").write_text('id,title,text\n1,T,"hello, world"\n2,,second\n')
    corpus = load_corpus(tmp_path / "c.csv")
    assert corpus.get("1").content == "T hello, world"
    (tmp_path / "q.tsv").write_text("id\ttext\nx\twhat is up\n")
    assert load_queries(tmp_path / "q.tsv") == {"x": "what is up"}


def test_hugging_face_dataset_on_disk_and_parquet(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": ["a", "b"], "text": ["first doc", "second doc"]})
    ds.save_to_disk(str(tmp_path / "hf"))
    ds.to_parquet(str(tmp_path / "c.parquet"))
    assert load_corpus(tmp_path / "hf").ids == ["a", "b"]
    assert load_corpus(tmp_path / "c.parquet").get("b").text == "second doc"


def test_corpus_lookup_and_subset():
    corpus = Corpus.from_texts({"x": "one", "y": "two"})
    assert "x" in corpus and "z" not in corpus
    assert corpus.subset(["y"]).ids == ["y"]
    with pytest.raises(InputError, match="no document with id 'z'"):
        corpus.get("z")


def test_jsonl_row_that_is_not_an_object(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(["a", "b"]) + "\n")
    with pytest.raises(InputError, match="expected a JSON object"):
        load_corpus(p)


def test_skip_empty_leaves_empty_documents_out_but_keeps_their_judgments(tiny_beir):
    with (tiny_beir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "empty", "title": "", "text": ""}) + "\n")
    with (tiny_beir / "qrels" / "test.tsv").open("a") as f:
        f.write("q1\tempty\t1\n")
    with pytest.raises(InputError, match="empty text.*skip_empty"):
        load_beir(tiny_beir, "test")
    col = load_beir(tiny_beir, "test", skip_empty=True)
    assert "empty" not in col.corpus and col.corpus.skipped == ("empty",)
    assert col.qrels["q1"] == {"d1": 1, "empty": 1}

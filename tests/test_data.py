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


# ------------------------------------------------------------------------------------------------ unreadable files


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_the_fix(tmp_path):
    latin1 = tmp_path / "docs.jsonl"
    latin1.write_bytes(b'{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"docs.jsonl:2: is not UTF-8 text \(byte 0xe9 at position 26\)\. "
                                         r"Fix: convert the file to UTF-8, e.g. `iconv"):
        load_corpus(latin1)
    csv_file = tmp_path / "docs.csv"
    csv_file.write_bytes(b"id,text\nd1,fine\nd2,na\xefve\n")
    with pytest.raises(InputError, match=r"docs.csv:3: is not UTF-8 text"):
        load_corpus(csv_file)
    qrels = tmp_path / "test.tsv"
    qrels.write_bytes(b"query-id\tcorpus-id\tscore\nq\xe91\td1\t1\n")
    with pytest.raises(InputError, match=r"test.tsv:2: is not UTF-8 text"):
        load_qrels(qrels)
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"queries.jsonl:1: is not UTF-8"):
        load_queries(queries)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "d1", "text": "from notepad"}\n')
    assert load_corpus(path).get("d1").text == "from notepad"
    csv_file = tmp_path / "docs.csv"
    csv_file.write_bytes(b'\xef\xbb\xbfid,text\nd1,"from ""excel"", multi\nline"\n')
    assert load_corpus(csv_file).get("d1").text == 'from "excel", multi\nline'


@pytest.mark.parametrize("damage", ["truncated", "not parquet"])
def test_a_corrupt_parquet_file_is_one_clear_error(tmp_path, damage):
    import datasets

    path = tmp_path / "c.parquet"
    datasets.Dataset.from_dict({"id": ["a", "b"], "text": ["first doc", "second doc"]}).to_parquet(str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"id,text\na,not parquet at all\n")
    with pytest.raises(InputError, match=r"c.parquet: is not readable as a parquet file \(Arrow\w+: .*\)\. "
                                         r"Fix: check the file: re-export or re-download it"):
        load_corpus(path)


def test_a_corrupt_saved_dataset_is_one_clear_error(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"id": ["a"], "text": ["first doc"]}).save_to_disk(str(tmp_path / "hf"))
    for arrow in (tmp_path / "hf").glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:40])
    with pytest.raises(InputError, match=r"hf: is not readable as a Hugging Face dataset .*Fix: check the file"):
        load_corpus(tmp_path / "hf")


def test_reading_parquet_leaves_nothing_in_the_hugging_face_cache(tmp_path, monkeypatch):
    import datasets

    path = tmp_path / "c.parquet"
    datasets.Dataset.from_dict({"id": ["a", "b"], "text": ["first doc", "second doc"]}).to_parquet(str(path))
    hf_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    assert load_corpus(path).ids == ["a", "b"]
    assert not hf_cache.exists() or not any(hf_cache.rglob("*.arrow"))


def test_messages_name_what_is_wrong(tmp_path):
    import json

    from qkrag.data import load_beir, load_corpus
    from qkrag.errors import InputError

    (tmp_path / "null.jsonl").write_text(json.dumps({"_id": "a", "text": None}) + "\n")
    with pytest.raises(InputError, match="text field 'text' is null"):
        load_corpus(tmp_path / "null.jsonl")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InputError, match="BEIR folder without queries.jsonl"):
        load_beir(beir)


# ------------------------------------------------------------------------------------------------ CorpusFile
def write_corpus(path, rows, bom=False):
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\n\n", 1).encode("utf-8"))
    return path


ROWS = [{"_id": "d1", "title": "Bread", "text": "Yeast makes dough rise."},
        {"_id": "dé", "text": "Ünïcode text, and a \"quote\"."},
        {"_id": "d3", "title": "", "text": "Plain."},
        {"_id": "d4", "text": "Last one."}]


def test_corpus_file_reads_what_load_corpus_reads_without_holding_the_texts(tmp_path):
    from qkrag.data import CorpusFile, FileTexts, open_corpus

    path = write_corpus(tmp_path / "corpus.jsonl", ROWS, bom=True)  # a BOM and a blank line: offsets must hold
    whole, lazy = load_corpus(path), CorpusFile(tmp_path)  # a folder holding corpus.jsonl works too
    assert lazy.ids == whole.ids and len(lazy) == 4 and isinstance(lazy.contents, FileTexts)
    assert list(lazy.contents) == whole.contents
    assert lazy.contents[1] == whole.contents[1] and lazy.contents[-1] == whole.contents[-1]
    assert lazy.contents[1:3] == whole.contents[1:3] and lazy.contents[5:9] == []
    with pytest.raises(IndexError):
        lazy.contents[4]
    assert isinstance(open_corpus(path), CorpusFile)


def test_open_corpus_leaves_csv_and_parquet_texts_on_disk_through_a_jsonl_copy(tmp_path):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from qkrag.data import CorpusFile, open_corpus

    csv_path = tmp_path / "c.csv"
    csv_path.write_text('id,title,text\na,,hello\nb,Multi,"two\nlines, quoted"\n')
    parquet_path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet_path, row_group_size=2)
    for source in (csv_path, parquet_path):
        whole, lazy = load_corpus(source), open_corpus(source)
        assert isinstance(lazy, CorpusFile) and lazy.source == str(source) and lazy.path != source
        assert lazy.ids == whole.ids and list(lazy.contents) == whole.contents
    again = open_corpus(csv_path)
    assert again.path == open_corpus(csv_path).path  # the copy is reused while the source stays as it was
    csv_path.write_text("id,text\na,hello again\n")
    os.utime(csv_path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert list(open_corpus(csv_path).contents) == ["hello again"]  # an edited source gets a new copy


def test_open_corpus_names_the_original_file_of_a_copy_in_its_errors(tmp_path):
    from qkrag.data import open_corpus

    (tmp_path / "dup.csv").write_text("id,text\na,x\nb,y\na,z\n")
    with pytest.raises(InputError, match=r"dup\.csv.*duplicate document id 'a'"):
        open_corpus(tmp_path / "dup.csv")
    (tmp_path / "notext.csv").write_text("id,body\na,x\n")
    with pytest.raises(InputError, match=r"notext\.csv:2.*no text field"):
        open_corpus(tmp_path / "notext.csv")
    from qkrag.cache import default_cache_dir

    assert not list((default_cache_dir() / "corpora").glob(".*"))  # the refused copy left no half-written file


def test_corpus_file_refuses_what_load_corpus_refuses(tmp_path):
    from qkrag.data import CorpusFile

    with pytest.raises(InputError, match="duplicate document id 'd1'"):
        CorpusFile(write_corpus(tmp_path / "dup.jsonl", [*ROWS, ROWS[0]]))
    empty = [*ROWS, {"_id": "e", "text": "  "}]
    with pytest.raises(InputError, match="'e' has empty text.*skip_empty"):
        CorpusFile(write_corpus(tmp_path / "empty.jsonl", empty))
    assert CorpusFile(tmp_path / "empty.jsonl", skip_empty=True).skipped == ("e",)
    with pytest.raises(InputError, match="contains no documents"):
        CorpusFile(write_corpus(tmp_path / "none.jsonl", [{"_id": "e", "text": ""}]), skip_empty=True)
    with pytest.raises(InputError, match="not valid JSON"):
        (tmp_path / "bad.jsonl").write_text('{"_id": "a", "text": "x"}\n{oops\n')
        CorpusFile(tmp_path / "bad.jsonl")


def test_corpus_file_notices_a_file_that_changed_after_its_scan(tmp_path):
    from qkrag.data import CorpusFile

    path = write_corpus(tmp_path / "corpus.jsonl", ROWS)
    lazy = CorpusFile(path)
    write_corpus(path, [{"_id": "x", "text": "something else entirely"}, *ROWS])
    with pytest.raises(InputError, match="changed while it was being read.*run it again"):
        lazy.contents[:2]



# ------------------------------------------------------------------ one validated path from a row to (id, text)


def test_a_csv_row_with_more_fields_than_the_header_is_refused_naming_its_line(tmp_path):
    (tmp_path / "r.csv").write_text("_id,text\nd1,fine\nd2,hello, world\n")
    with pytest.raises(InputError, match=r"r\.csv:3: has 3 fields but the header has 2.*Fix"):
        load_corpus(tmp_path / "r.csv")


def test_an_unterminated_csv_quote_is_refused_not_merged_into_one_document(tmp_path):
    (tmp_path / "q.csv").write_text('_id,text\nd1,"hello\nd2,world\nd3,x\n')
    with pytest.raises(InputError, match=r"q\.csv:2: is not valid CSV.*quote"):
        load_corpus(tmp_path / "q.csv")


def test_a_csv_field_longer_than_csvs_default_limit_is_read(tmp_path):
    (tmp_path / "big.csv").write_text("_id,text\nd1," + "a" * 200_000 + "\n")
    assert len(load_corpus(tmp_path / "big.csv").get("d1").text) == 200_000


@pytest.mark.parametrize("column, values, problem", [
    ("text", [b"bytes one", b"two"], "text is of type bytes"),
    ("text", [1, 2], "text is of type int"),
    ("text", [["a", "b"], ["c"]], "text is of type list"),
    ("_id", [["a"], ["b"]], "id is of type list"),
])
def test_parquet_values_that_are_not_text_are_refused_unless_coerced_or_skipped(tmp_path, column, values, problem):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qkrag.data import open_corpus

    table = {"_id": ["a", "b"], "text": ["x", "y"]}
    table[column] = values
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(InputError, match=rf"c\.parquet\[0\] field '{column}': {problem}.*--bad-rows"):
        load_corpus(path)
    with pytest.raises(InputError, match=problem):
        open_corpus(path)
    coerced = open_corpus(path, bad_rows="coerce")
    assert all(isinstance(t, str) for t in coerced.contents) and all(isinstance(i, str) for i in coerced.ids)
    with pytest.raises(InputError, match="contains no documents"):  # every row is bad: skipping leaves nothing
        load_corpus(path, bad_rows="skip")


def test_skipped_bad_rows_are_listed_with_their_place(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": 7}\n{"_id": "", "text": "no id"}\n')
    corpus = load_corpus(p, bad_rows="skip")
    assert corpus.ids == ["a"]
    assert len(corpus.rejected) == 2 and "c.jsonl:2" in corpus.rejected[0] and "c.jsonl:3" in corpus.rejected[1]
    with pytest.raises(InputError, match="--bad-rows 'maybe'"):
        load_corpus(p, bad_rows="maybe")


@pytest.mark.parametrize("line, problem", [
    ('{"_id": "a", "text": "x\\ud800y"}', "lone surrogate"),
    ('{"_id": "", "text": "x"}', "id is empty"),
    ('{"_id": "a", "text": "x", "title": 5}', "title is of type int"),
])
def test_rows_that_cannot_be_stored_are_refused_naming_the_row_and_field(tmp_path, line, problem):
    from qkrag.data import CorpusFile

    p = tmp_path / "c.jsonl"
    p.write_text(line + "\n")
    for read in (load_corpus, CorpusFile):
        with pytest.raises(InputError, match=rf"c\.jsonl:1 field .*{problem}"):
            read(p)


def test_a_missing_local_looking_path_is_no_such_file_never_a_hub_name(tmp_path, monkeypatch):
    import sys

    from qkrag.data import looks_local, open_corpus

    monkeypatch.setitem(sys.modules, "datasets", None)  # any hub lookup would fail on import
    for name in ("nosuch.jsonl", "nosuch.csv", "nosuch.parquet", str(tmp_path / "folder"), "./x", "a/b"):
        assert looks_local(name)
        for read in (load_corpus, open_corpus):
            with pytest.raises(InputError, match="no such file or folder"):
                read(name)
    assert not looks_local("hf:BeIR/scifact") and looks_local("scifact")  # a CLI turns "./scifact" into "scifact"
    with pytest.raises(InputError, match="no such file or folder"):
        load_corpus("scifact")


def test_conflicting_duplicate_qrels_lines_are_refused_identical_ones_are_fine(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq1\td1\t1\n")
    assert load_qrels(p) == {"q1": {"d1": 1, "d2": 1}}
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq1\td1\t0\n")
    with pytest.raises(InputError, match=r"q\.tsv:4: judges query 'q1' / document 'd1' 0, but line 2 judged it 2"):
        load_qrels(p)

"""data/homeqa, the demo's mixed corpus, must stay valid: scripts/demo.sh, its benchmark and the README run on it."""

import csv
import json
import re
from pathlib import Path

import pytest

from qkrag.data import load_beir
from qkrag.text import carries_answer, question_form

HOMEQA = Path(__file__).resolve().parents[1] / "data" / "homeqa"
EXAMPLE_QUERY, EXAMPLE_ANSWER = "q009", "bake-01"  # the README's example, see data/homeqa/README.md


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (HOMEQA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _qrels(split: str) -> list[tuple[str, str, str]]:
    with open(HOMEQA / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    return [tuple(r) for r in rows[1:]]


def test_ids_are_unique_and_no_field_is_empty():
    docs, queries = _rows("corpus.jsonl"), _rows("queries.jsonl")
    assert len({d["_id"] for d in docs}) == len(docs)
    assert len({q["_id"] for q in queries}) == len(queries)
    assert all(d["title"].strip() and d["text"].strip() for d in docs)
    assert all(q["text"].strip() for q in queries)


def test_every_judgment_names_a_known_query_and_a_known_answer_passage():
    docs, queries = {d["_id"] for d in _rows("corpus.jsonl")}, {q["_id"] for q in _rows("queries.jsonl")}
    for split in ("train", "test"):
        for q, d, score in _qrels(split):
            assert q in queries and d in docs and score == "1", (split, q, d)
            assert not d.startswith("post-"), f"{q} judges the question post {d}: posts are never relevant"


def test_splits_are_disjoint_by_query_and_by_document_with_one_to_three_relevant_each():
    train, test = _qrels("train"), _qrels("test")
    assert not {q for q, _, _ in train} & {q for q, _, _ in test}
    assert not {d for _, d, _ in train} & {d for _, d, _ in test}, "a passage is judged in one split only"
    for rows in (train, test):
        per_query: dict[str, int] = {}
        for q, _, _ in rows:
            per_query[q] = per_query.get(q, 0) + 1
        assert all(1 <= n <= 3 for n in per_query.values())


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_beir_reads_both_splits(split):
    col = load_beir(HOMEQA, split)
    assert len(col.queries) >= 55
    assert len(col.corpus) == len(_rows("corpus.jsonl"))


def test_posts_ask_without_answering_and_answer_passages_answer():
    """Generation skips a text that fails `carries_answer`, so no synthetic query is ever written for a post."""
    col = load_beir(HOMEQA, "test")
    posts = [d for d in col.corpus if d.id.startswith("post-")]
    judged = {d for _, d, _ in _qrels("train") + _qrels("test")}
    assert len(posts) >= 3 * len(judged)
    assert all(question_form(d.content) and not carries_answer(d.text) for d in posts)
    assert all(carries_answer(d.text) for d in col.corpus if not d.id.startswith("post-"))


def test_posts_paraphrase_the_queries_instead_of_copying_them():
    def tokens(s: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", s.lower())

    queries = [set(tokens(q["text"])) for q in _rows("queries.jsonl")]
    for d in _rows("corpus.jsonl"):
        if d["_id"].startswith("post-"):
            words = tokens(d["title"] + " " + d["text"])
            worst = max(sum(w in q for w in words) / len(words) for q in queries)
            assert worst <= 0.6, f"{d['_id']} shares {worst:.0%} of its words with a query"


def test_the_readme_example_is_a_test_query_judged_against_its_answer():
    col = load_beir(HOMEQA, "test")
    assert EXAMPLE_ANSWER in col.qrels[EXAMPLE_QUERY]
    assert f"`{EXAMPLE_QUERY}`" in (HOMEQA / "README.md").read_text(encoding="utf-8")

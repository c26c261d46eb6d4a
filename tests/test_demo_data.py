"""The data that ships in the repo must stay valid: the main job and the aspect demo depend on it."""

import json
from pathlib import Path

from qkrag.data import load_beir, load_corpus

DATA = Path(__file__).resolve().parents[1] / "data"


def test_demo_collection_loads_with_disjoint_splits_and_no_judged_distractors():
    test, train = load_beir(DATA / "demo", "test"), load_beir(DATA / "demo", "train")
    assert len(test.queries) >= 50 and len(train.queries) >= 50
    assert not set(test.queries) & set(train.queries)
    for col in (test, train):
        judged = {d for row in col.qrels.values() for d in row}
        assert not any(d.startswith("post-") for d in judged), "unanswered forum questions are never relevant"
    assert sum(d.id.startswith("post-") for d in test.corpus) >= 30


def test_cities_have_labels_for_every_aspect():
    rows = [json.loads(line) for line in (DATA / "cities" / "cities.jsonl").read_text().splitlines() if line.strip()]
    assert len(load_corpus(DATA / "cities" / "cities.jsonl")) == len(rows) >= 20
    for aspect in ("climate", "cuisine", "size"):
        values = [r[aspect] for r in rows]
        assert all(values) and all(values.count(v) >= 3 for v in set(values))

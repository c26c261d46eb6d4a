"""Does training against the batch's own queries (TrainConfig.query_negatives) lift answers above question posts?

    python query_negatives.py --run homeqa=../data/homeqa:/tmp/mj/homeqa-llm/pairs-llm \
        --run squad-mix-ict=../../shared/data/squad-mix:/tmp/q/squad-mix-ict --seeds 0,1,2,3

Each run names a BEIR folder with a train and a test split and a pairs folder generated from its corpus (a bench
run's `pairs-<generator>`). The "low_rank" recipe and "low_rank_qneg" (the same with query_negatives) are trained on
the same pairs with the same seeds, early-stopped and selected on the train split's judged queries, as `qkrag bench`
does. Reported per seed: validation nDCG@10 and question share in the top 5 (what model selection sees), then the
test figures (never used to choose). Question documents are those `qkrag.text.question_form` calls questions, as in
bench. Writes results/query_negatives.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from _common import markdown_table, save

from qkrag.data import load_beir
from qkrag.embed.encoders import embed, make_encoder
from qkrag.evaluate.metrics import binary_ndcg
from qkrag.evaluate.stats import sign_flip_p_value
from qkrag.projection.data import pairs_from_collection, pairs_from_folder
from qkrag.projection.model import train_projection
from qkrag.projection.recipes import recipe_config
from qkrag.ranking import exact_search
from qkrag.text import question_form

RECIPES = ("low_rank", "low_rank_qneg")


def judged(collection, encoder) -> tuple[np.ndarray, list[set[int]]]:
    """`collection`'s judged queries, embedded once: their vectors and each one's relevant document rows."""
    qids = list(collection.qrels)
    vectors = embed(encoder, [collection.queries[q] for q in qids], "query", None, desc="embed queries")
    rows = {d: i for i, d in enumerate(collection.corpus.ids)}
    return vectors, [{rows[d] for d, g in collection.qrels[q].items() if g > 0} for q in qids]


def scored(projection, queries: tuple[np.ndarray, list[set[int]]], docs, is_question) -> tuple[np.ndarray, np.ndarray]:
    """Per judged query (`judged`): nDCG@10 of the projection's ranking and its question share in the top 5."""
    vectors, relevant = queries
    _, top = exact_search(projection.transform_queries(vectors), projection.transform_documents(docs), 10, "ip")
    return binary_ndcg(top, relevant, 10), is_question[top[:, :5]].mean(1)


def one_run(name: str, folder: str, pairs_folder: str, seeds: list[int]) -> list[dict]:
    encoder = make_encoder(None)
    train = load_beir(folder, "train")
    test = load_beir(folder, "test", corpus=train.corpus)
    pairs, corpus = pairs_from_folder(pairs_folder, encoder, corpus=train.corpus)
    validation = pairs_from_collection(train, encoder, documents=pairs.documents)
    is_question = np.array([question_form(d.content) for d in corpus])
    on_train, on_test = judged(train, encoder), judged(test, encoder)
    rows, test_scores = [], {}
    for seed in seeds:
        for recipe in RECIPES:
            config = dataclasses.replace(recipe_config(recipe, len(corpus), seed=seed), progress=False)
            t0 = time.perf_counter()
            projection = train_projection(pairs, config, validation=validation)
            seconds = time.perf_counter() - t0
            v_ndcg, v_share = scored(projection, on_train, pairs.documents, is_question)
            t_ndcg, t_share = scored(projection, on_test, pairs.documents, is_question)
            test_scores[(seed, recipe)] = t_ndcg
            rows.append({"run": name, "pairs": len(pairs), "seed": seed, "recipe": recipe,
                         "val_ndcg": float(v_ndcg.mean()), "val_share": float(v_share.mean()),
                         "test_ndcg": float(t_ndcg.mean()), "test_share": float(t_share.mean()),
                         "selected": projection.selected_, "seconds": round(seconds, 1)})
            print(rows[-1], flush=True)
        diff = test_scores[(seed, RECIPES[1])] - test_scores[(seed, RECIPES[0])]
        rows[-1]["test_delta_p"] = sign_flip_p_value(diff, seed=seed)
    return rows


def reading(rows: list[dict]) -> list[str]:
    """One line per run: how often validation prefers the query negatives, and the mean changes it sees and test."""
    lines = []
    for name in dict.fromkeys(r["run"] for r in rows):
        by_seed: dict[int, dict[str, dict]] = {}
        for r in rows:
            if r["run"] == name:
                by_seed.setdefault(r["seed"], {})[r["recipe"]] = r
        pairs = [(s[RECIPES[0]], s[RECIPES[1]]) for s in by_seed.values()]
        wins = sum(b["val_ndcg"] > a["val_ndcg"] for a, b in pairs)
        mean = {k: float(np.mean([b[k] - a[k] for a, b in pairs])) for k in
                ("val_ndcg", "val_share", "test_ndcg", "test_share")}
        lines.append(f"- **{name}**: validation prefers low_rank_qneg in {wins} of {len(pairs)} seeds; mean change "
                     f"with it: validation nDCG@10 {mean['val_ndcg']:+.3f}, share {mean['val_share']:+.3f}; test "
                     f"nDCG@10 {mean['test_ndcg']:+.3f}, share {mean['test_share']:+.3f}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=BEIR_FOLDER:PAIRS_FOLDER")
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for spec in args.run:
        name, paths = spec.split("=", 1)
        folder, pairs_folder = paths.split(":", 1)
        rows += one_run(name, folder, pairs_folder, seeds)
    columns = ["run", "pairs", "seed", "recipe", "val_ndcg", "val_share", "test_ndcg", "test_share", "test_delta_p",
               "selected", "seconds"]
    body = ("low_rank against low_rank_qneg (the same recipe with each batch's queries as negatives), same pairs and "
            "seeds, selected on the train split's judged queries; test figures are reported, never used to choose. "
            "test_delta_p: paired sign-flip p of the test nDCG@10 change, per seed.\n\n"
            + markdown_table(rows, columns) + "\n\n## Reading\n\n" + "\n".join(reading(rows)) + "\n")
    save("query_negatives", {"rows": rows}, body)


if __name__ == "__main__":
    main()

"""Does the answer check tell documents that ask from documents that answer? Precision and recall of the form test
(`qkrag.text.question_form` / `carries_answer`), and of the LLM check on a small stratified sample.

    python benchmarks/answer_check.py --data /work/shared/data --llm-sample 30

Ground truth comes from how the collections were built, never seen by the measures themselves: in squad-mix a
`post-` document is a SQuAD question posted as a document (never relevant), every other one a paragraph; in
`data/demo` the `post-` documents are forum posts with no answer in them. SciFact and Cranfield hold no questions,
so every document the test calls question-form there is a false positive. The positive class is "asks" (the
documents generation must skip): precision = share of the skipped documents that really ask, recall = share of the
asking documents skipped. The LLM check sees the same text generation gives it (the passage text, cut at 1,500
characters), with the embedded local model unless --base-url is given; its outputs are cached, so a rerun is free.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from _common import markdown_table, save

from qkrag.text import carries_answer, question_form

ROOT = Path(__file__).resolve().parents[1]


def load(folder: Path) -> list[dict]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    # What generation checks: the text (a forum post's title is often its question, an article's title no statement).
    return [{"id": d["_id"], "text": d.get("text") or d.get("title", ""), "asks": d["_id"].startswith("post-")}
            for d in docs]


def scores(truth: list[bool], said: list[bool]) -> dict:
    tp = sum(t and s for t, s in zip(truth, said))
    fp = sum(s and not t for t, s in zip(truth, said))
    fn = sum(t and not s for t, s in zip(truth, said))
    return {"n": len(truth), "asking": sum(truth), "flagged": sum(said), "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "accuracy": sum(t == s for t, s in zip(truth, said)) / len(truth) if truth else None}


def form_test(name: str, docs: list[dict]) -> dict:
    t0 = time.perf_counter()
    skipped = [not carries_answer(d["text"]) for d in docs]
    seconds = time.perf_counter() - t0
    form = [question_form(d["text"]) for d in docs]
    truth = [d["asks"] for d in docs]
    missed = [d for d, s in zip(docs, skipped) if d["asks"] and not s]
    wrong = [d for d, s in zip(docs, skipped) if s and not d["asks"]]
    return {"collection": name, "question_form": scores(truth, form),
            "skipped_by_carries_answer": scores(truth, skipped),
            "docs_per_second": round(len(docs) / seconds), "missed_examples": [d["text"][:200] for d in missed[:5]],
            "wrongly_skipped_examples": [d["text"][:200] for d in wrong[:5]]}


def stratified(collections: dict[str, list[dict]], k: int, seed: int) -> list[tuple[str, dict]]:
    """`k` documents, as many asking as answering, two thirds from squad-mix and a third from demo; seeded, and
    interleaved so that a smaller k is a prefix of a larger one (and reuses its cached verdicts)."""
    rng = random.Random(seed)
    strata = []
    for name in ("squad-mix", "demo"):
        for asks in (True, False):
            pool = [d for d in collections.get(name, []) if d["asks"] == asks]
            rng.shuffle(pool)
            strata.append([(name, d) for d in pool])
    weights = [2, 2, 1, 1]  # squad-mix posts, paragraphs, demo posts, answers
    order = []
    while any(strata) and len(order) < k:
        for stratum, w in zip(strata, weights):
            order += [stratum.pop(0) for _ in range(min(w, len(stratum)))]
    return order[:k]


def llm_check(sample: list[tuple[str, dict]], base_url: str | None) -> dict:
    from qkrag.llm import prompts
    from qkrag.llm.local import open_llm

    texts = [d["text"][:1500] for _, d in sample]
    t0 = time.perf_counter()
    with open_llm(base_url) as llm:
        started = time.perf_counter()
        # The parameters generation's answer check uses: deterministic, a one-word answer, retried if neither.
        outs = llm.complete_many([prompts.render("answer_check", text=t) for t in texts], on_error="skip",
                                 check=lambda t: prompts.parse_yes_no(t) is not None, temperature=0.0, max_tokens=4,
                                 desc="answer check")
        seconds = time.perf_counter() - started
        model, calls, hits = llm.config.model, llm.calls_made, llm.cache_hits
    verdicts = [None if o is None else prompts.parse_yes_no(o.text) for o in outs]
    truth = [d["asks"] for _, d in sample]
    judged = [i for i, v in enumerate(verdicts) if v is not None]
    form = [not carries_answer(d["text"]) for _, d in sample]
    rows = [{"collection": c, "asks": d["asks"], "llm_says_answer": v, "form_says_answer": not f,
             "text": d["text"][:120]} for (c, d), v, f in zip(sample, verdicts, form)]
    return {"model": model, "n": len(sample), "calls_made": calls, "cache_hits": hits,
            "unjudged": len(sample) - len(judged),
            "seconds": round(seconds, 1), "startup_seconds": round(started - t0, 1),
            "seconds_per_call": round(seconds / calls, 2) if calls else None,
            "llm": scores([truth[i] for i in judged], [not verdicts[i] for i in judged]),
            "form_same_docs": scores(truth, form), "rows": rows}


def markdown(result: dict) -> str:
    cols = ["collection", "docs", "asking", "skipped", "precision", "recall", "accuracy", "docs/s"]
    table = [{"collection": r["collection"], "docs": r["skipped_by_carries_answer"]["n"],
              "asking": r["skipped_by_carries_answer"]["asking"], "skipped": r["skipped_by_carries_answer"]["flagged"],
              "precision": r["skipped_by_carries_answer"]["precision"] or "—",
              "recall": r["skipped_by_carries_answer"]["recall"] or "—",
              "accuracy": r["skipped_by_carries_answer"]["accuracy"], "docs/s": r["docs_per_second"]}
             for r in result["form"]]
    body = ["Documents generation skips as carrying no answer (`not carries_answer(text)`); the positive class is "
            "\"asks\" (squad-mix / demo: a `post-` document). SciFact and Cranfield hold no questions: any skip "
            "there is a false positive (Cranfield has two empty documents, skipped as stating nothing).", "",
            markdown_table(table, cols), ""]
    body += ["The form test's rules were written while reading these collections (squad-mix's and demo's posts, "
             "SciFact's abstracts that open with a question), so these are in-sample numbers, not a held-out estimate; "
             "`tests/test_text.py` checks it on hand-written questions, posts and statements of other kinds.", ""]
    for r in result["form"]:
        for key in ("missed_examples", "wrongly_skipped_examples"):
            if r[key]:
                body.append(f"- {r['collection']}, {key.replace('_', ' ')}: " + "; ".join(f"`{t}`" for t in r[key]))
    if result.get("llm_check"):
        c = result["llm_check"]
        spent = (f"{c['calls_made']} calls in {c['seconds']} s ({c['seconds_per_call']} s per call), "
                 if c["calls_made"] else "no call: ")
        body += ["", f"## LLM check ({c['model']}, {c['n']} documents, stratified)", "",
                 f"{spent}{c['cache_hits']} verdicts from the LLM cache (of earlier runs of this command); "
                 f"{c['unjudged']} without a usable yes/no. The `answer_check` prompt, temperature 0, as generation "
                 "asks it. Positive class: the LLM says the text carries no answer.", "",
                 markdown_table([{"check": "llm", **c["llm"]}, {"check": "form (same docs)", **c["form_same_docs"]}],
                                ["check", "n", "asking", "flagged", "tp", "fp", "fn", "precision", "recall",
                                 "accuracy"]), ""]
        body.append(markdown_table(c["rows"], ["collection", "asks", "llm_says_answer", "form_says_answer", "text"]))
    return "\n".join(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data", help="folder holding squad-mix, scifact, cranfield")
    parser.add_argument("--llm-sample", type=int, default=30, help="documents for the LLM check (0: skip it)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server (default: the embedded model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = Path(args.data)
    collections = {name: load(data / name) for name in ("squad-mix", "scifact", "cranfield")
                   if (data / name / "corpus.jsonl").exists()}
    collections["demo"] = load(ROOT / "data" / "demo")
    result: dict = {"form": [form_test(name, docs) for name, docs in collections.items()]}
    if args.llm_sample > 0:
        result["llm_check"] = llm_check(stratified(collections, args.llm_sample, args.seed), args.base_url)
    save("answer_check", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

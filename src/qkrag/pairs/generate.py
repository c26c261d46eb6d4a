"""Synthetic (query, passage) pairs that are worth training on.

Easy pairs teach nothing. A small model asked for queries copies the title or the first sentence, and 90% of its
queries then retrieve their own passage at rank 1 under raw cosine - a projection trained on them learns nothing the
base encoder did not already know. Small models also ignore instructions like "make it harder", so difficulty comes
from the pipeline, not the prompt:

    keep passages that carry an answer (`answer_check`: not a question, a request or boilerplate; they stay in the
      corpus as negatives), then sample among them (seeded)
      -> prompt the LLM: several calls per passage with different seeds, the title hidden   [journaled, cached]
      -> parse; drop refusals, exact/near duplicates, near-copies of the passage (copy_score) and echoes of the
         user's few-shot examples
      -> term masking: a variant of each query without the passage's rare exact terms
      -> embed the queries, rank the whole corpus by raw cosine (exact search)
      -> round trip: keep a query only if its passage ranks in the top k
      -> difficulty steering: pick each passage's candidates so that, over all passages, the positives' ranks
         (1 / 2-10 / 11-k) follow a target distribution (the human one by default) as far as the candidates allow,
         so rank-1 pairs stop dominating; among equals, one in the form of the user's examples (claim or question)
      -> hard negatives from the same ranking, minus likely false negatives (too close to the positive's score, or
         judged relevant by the LLM)

The LLM stage is the slow one (seconds per call on a laptop), so it is resumable: every passage's raw outputs go to an
append-only journal (`out_dir/journal.jsonl`, one fsynced line per passage) and the LLM layer caches every output. A
run killed at any point (SIGKILL included) continues where it stopped, and because everything after the LLM stage is a
deterministic function of the journal, the resumed run ends with exactly the pairs of an uninterrupted one. Only a
passage whose every call succeeded is journaled: a call that failed (timed out, garbled output) is asked again by the
next run. A passage whose calls all fail is skipped and counted; the run stops only when more than
`max_failed_share` of the passages fail, saying what the failures were. Final outputs are staged in a temporary
folder and renamed into place, `stats.json` last, as the completion mark.

An LLM-free baseline, the Inverse Cloze Task (`generator="ict"`: a sentence cut out of the passage is the query, the
rest of the passage the positive), goes through the same filters, ranking and steering.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.atomic import file_lock
from qkrag.cache import content_hash, quiet
from qkrag.data import Corpus, Document, load_corpus
from qkrag.embed.encoders import EmbedOptions, Encoder, embed
from qkrag.errors import LLMError, fail
from qkrag.pairs.config import GenerateConfig, draw_examples
from qkrag.pairs.filters import (FILTERS, Seen, copy_score, first_drop, form_summary, ict_candidates, mask_rare_terms,
                                 ngram_copy, off_form)
from qkrag.pairs.steer import (Candidate, document_vectors, drop_near_duplicates, hard_negatives, rank_candidates,
                               rank_summary, steer_candidates)
from qkrag.pairs.store import ANSWER_JOURNAL, JOURNAL, Journal, write_pairs
from qkrag.text import carries_answer, cut_at_word, normalize, words

if TYPE_CHECKING:
    import datasets

    from qkrag.llm.client import LLM

__all__ = ["GenerateConfig", "GenerationResult", "draw_examples", "generate_from_beir", "generate_pairs"]


_COUNTS = ("pool", "skipped_no_answer", "skipped_no_answer_form", "skipped_no_answer_llm", "answer_check_failed",
           "passages", "failed_passages", "failed_calls", "parsed", *(f"dropped_{f.name}" for f in FILTERS),
           "dropped_duplicate", "dropped_near_duplicate", "masked_variants", "candidates", "off_form",
           "roundtrip_kept", "negatives_skipped_as_false", "negatives_judged_relevant")


@dataclass
class GenerationResult:
    out_dir: Path
    dataset: datasets.Dataset
    stats: dict[str, Any]

    def __len__(self) -> int:
        return len(self.dataset)


def _candidate_pool(corpus: Corpus, config: GenerateConfig, doc_ids: Sequence[str] | None) -> list[str]:
    """The passages generation may use, in the order it takes them: all (or `doc_ids`) in order, or, when sampling, a
    seeded shuffle of them - so a larger sample extends a smaller one (and reuses its cached LLM outputs)."""
    ids = list(doc_ids) if doc_ids is not None else corpus.ids
    for d in ids:
        corpus.get(d)  # a clear error for an unknown id
    if len(set(ids)) != len(ids):
        raise fail("doc_ids", "contain duplicates", "pass each passage once")
    if not ids:
        raise fail("generate_pairs", "no passages to generate for", "give a non-empty corpus or doc_ids")
    if config.sample is not None and config.sample < len(ids):
        ids = list(ids)
        random.Random(config.seed).shuffle(ids)
    return ids


def _choose_passages(corpus: Corpus, config: GenerateConfig, doc_ids: Sequence[str] | None, llm: LLM | None,
                     out: Path, counts: Counter) -> list[str]:
    """The passages to write queries for: up to `config.sample` of the pool that carry an answer (see
    `GenerateConfig.answer_check`). The form test is cheap, so it runs over the whole pool before sampling; the LLM
    check costs a call per passage, so it walks the sampling order until it has enough."""
    pool = _candidate_pool(corpus, config, doc_ids)
    counts["pool"] = len(pool)
    if config.answer_check in ("form", "both"):
        passing = [d for d in pool if carries_answer(_check_text(corpus.get(d)))]
        counts["skipped_no_answer_form"] = len(pool) - len(passing)
        pool = passing
    want = len(pool) if config.sample is None else min(config.sample, len(pool))
    if config.answer_check in ("llm", "both"):
        assert llm is not None
        ids = _llm_answer_check(llm, corpus, pool, want, config, Journal(out / ANSWER_JOURNAL), counts)
    else:
        ids = pool[:want]
    counts["skipped_no_answer"] = counts["skipped_no_answer_form"] + counts["skipped_no_answer_llm"]
    if not ids:
        raise fail("generate_pairs", f"none of the {counts['pool']} candidate passages carries an answer "
                   f"(answer_check={config.answer_check!r}: {counts['skipped_no_answer_form']} failed the form test, "
                   f"{counts['skipped_no_answer_llm']} the LLM check)",
                   "give passages that state something (not questions or requests), or answer_check='none'")
    return ids


def _check_text(doc: Document) -> str:
    # The text, not title + text: a forum post's title is often its question, an article's title is no statement.
    return doc.text or doc.content


def _passage_text(doc: Document, config: GenerateConfig) -> str:
    text = doc.content if config.include_title else doc.text or doc.content
    return cut_at_word(text, config.max_chars)


def _prompts(doc: Document, config: GenerateConfig) -> list:
    from qkrag.llm import prompts

    template = prompts.load_template(config.template_name)
    variables: dict[str, Any] = {"text": _passage_text(doc, config), "n": config.per_call}
    if "examples" in template.variables:
        variables["examples"] = prompts.few_shot_examples(config.examples)
    variables = {k: v for k, v in variables.items() if k in template.variables}
    return [template.render(**variables)] * config.calls


# ------------------------------------------------------------------------------------------------ LLM calls

def _ask_all(llm: LLM, prompts: Sequence[Any], check: Callable[[str], bool], params: Mapping[str, Any]
             ) -> list[tuple[str | None, str | None]]:
    """Complete `prompts`, `llm.config.concurrency` at a time, in order: (text, None) for each that succeeded,
    (None, the `LLMError` message) for each that failed after its retries. `LLM.complete_many(on_error="skip")` leaves
    only a None; keeping the message lets a failing run say whether the model wrote garbage or the server was down."""
    def one(prompt: Any) -> tuple[str | None, str | None]:
        try:
            return llm.complete(prompt, check=check, **params).text, None
        except LLMError as exc:
            return None, str(exc)

    workers = min(llm.config.concurrency, len(prompts))
    if workers <= 1:
        return [one(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qkrag-generate") as pool:
        return list(pool.map(one, prompts))


# What an LLMError says went wrong, in words for a person; `qkrag.llm.client` names the last problem as "(last: ...)".
_FAILURE_KINDS = (("garbled", "garbled output"), ("refusal", "refusals"), ("empty", "empty output"),
                  ("rejected by check", "output with nothing usable in it"), ("timed out", "timeouts"),
                  ("cannot connect", "connection errors"), ("malformed", "malformed responses"))
_TRANSPORT = {"timeouts", "connection errors", "malformed responses"}


def _failure_kind(message: str) -> str:
    last = message.split("(last: ", 1)[-1]
    for needle, name in _FAILURE_KINDS:
        if needle in last:
            return name
    status = re.search(r"HTTP (\d+)", last)
    return f"HTTP {status.group(1)} errors" if status else "other errors"


class _Failures:
    """Passages tried and failed so far, and why their calls failed: enough to stop a run that mostly fails, and to
    say what happened instead of guessing."""

    def __init__(self, total: int, share: float, tried: int = 0):
        self.total, self.share, self.tried, self.failed = total, share, tried, 0
        self.reasons: Counter = Counter()  # failed calls by kind
        self.example = ""

    def record(self, problems: Sequence[str | None]) -> None:
        """One passage's calls: None for each that succeeded, else its error message. It fails when all did."""
        bad = [p for p in problems if p is not None]
        for problem in bad:
            self.reasons[_failure_kind(problem)] += 1
            self.example = self.example or problem.split(". Fix:")[0]
        self.tried += 1
        self.failed += bool(problems) and len(bad) == len(problems)

    def too_many(self) -> bool:
        # Judged as the run goes, over at least 10 passages (or all of them when fewer): a dead server stops the run
        # after a few passages instead of timing out on every one of thousands.
        return self.failed > self.share * max(self.tried, min(self.total, 10))

    def error(self, stage: str, model: str) -> Exception:
        calls = sum(self.reasons.values())
        transport = sum(n for k, n in self.reasons.items() if k in _TRANSPORT or k.startswith("HTTP"))
        fix = ("check that the LLM server is up and answering this model (raise its timeout for a slow one)"
               if 2 * transport >= calls else
               "the model writes unusable text for these prompts: try a larger model (--base-url) or another "
               "template, or raise max_failed_share to skip such passages")
        return fail(f"LLM {model!r}, {stage}",
                    f"{self.failed} of the {self.tried} passages tried so far ({self.total} in all) failed, more than "
                    f"max_failed_share = {self.share:g}; failed calls: "
                    + ", ".join(f"{n} {k}" for k, n in self.reasons.most_common()) + f" (e.g. {self.example})",
                    fix + "; finished passages are kept and a re-run retries only the failed ones", exc=LLMError)


# ------------------------------------------------------------------------------------------------ answer check

def _llm_answer_check(llm: LLM, corpus: Corpus, pool: list[str], want: int, config: GenerateConfig,
                      journal: Journal, counts: Counter) -> list[str]:
    """The first `want` passages of `pool` that the LLM says state an answer. It checks a little more than it still
    needs at a time (some will fail), so a sample of N costs about N/(share passing) calls, not one per pool passage."""
    done = journal.read()
    failures = _Failures(total=len(pool), share=config.max_failed_share)
    kept: list[str] = []
    start = 0
    while len(kept) < want and start < len(pool):
        size = max(llm.config.concurrency, math.ceil(1.25 * (want - len(kept))))
        batch, start = pool[start : start + size], start + size
        for doc_id, verdict in zip(batch, _verdicts(llm, corpus, batch, config, journal, done, failures)):
            if verdict is None:
                counts["answer_check_failed"] += 1  # not judged: left out of this run, asked again by the next
            elif not verdict:
                counts["skipped_no_answer_llm"] += 1
            elif len(kept) < want:
                kept.append(doc_id)
        if failures.too_many():
            raise failures.error("answer check", llm.config.model)
    return kept


def _verdicts(llm: LLM, corpus: Corpus, batch: list[str], config: GenerateConfig, journal: Journal,
              done: dict[str, dict], failures: _Failures) -> list[bool | None]:
    """The LLM's yes/no per passage: from the journal, else asked (cache first); new verdicts are journaled."""
    from qkrag.llm import prompts

    model = llm.config.model
    rendered = [prompts.render("answer_check", text=_passage_text(corpus.get(d), config)) for d in batch]
    keys = [f"{d}\0" + content_hash("qkrag-answer-check-v1", model, p.messages) for d, p in zip(batch, rendered)]
    verdicts: list[bool | None] = [done[k]["verdict"] if k in done else None for k in keys]
    todo = [i for i, k in enumerate(keys) if k not in done]
    failures.tried += len(batch) - len(todo)
    answers = _ask_all(llm, [rendered[i] for i in todo], lambda t: prompts.parse_yes_no(t) is not None,
                       {"temperature": 0.0, "max_tokens": 4})
    new = []
    for i, (text, problem) in zip(todo, answers):
        failures.record([problem])
        if text is not None:
            verdicts[i] = prompts.parse_yes_no(text)
            new.append({"doc_id": batch[i], "fingerprint": keys[i].split("\0", 1)[1], "verdict": verdicts[i]})
    journal.append(new)
    return verdicts


# ------------------------------------------------------------------------------------------------ the LLM stage

def _llm_stage(llm: LLM, corpus: Corpus, ids: list[str], config: GenerateConfig, journal: Journal
               ) -> tuple[dict, Counter, _Failures]:
    """Raw LLM outputs per passage, from the journal where it has them, else from the LLM (cache first).

    A passage is journaled once every call of it succeeded. One with a failed call (a timeout, garbled output) is
    kept for this run with None for that call, and asked again by the next run, its good calls then from the cache.
    """
    from tqdm.auto import tqdm

    from qkrag.llm.prompts import parse_candidates

    model = llm.config.model
    params = {"temperature": config.temperature, "max_tokens": config.max_tokens}
    todo_prompts, records = {}, {}
    done = journal.read()
    for doc_id in ids:
        prompts = _prompts(corpus.get(doc_id), config)
        fingerprint = content_hash("qkrag-generate-v1", model, [p.messages for p in prompts], params, config.seed)
        record = done.get(doc_id + "\0" + fingerprint)
        if record is not None and None not in record["outputs"]:  # older journals hold failed calls as None
            records[doc_id] = record
        else:
            todo_prompts[doc_id] = (prompts, fingerprint)
    check = lambda text: bool(parse_candidates(text))  # noqa: E731 - output with no candidate in it is retried
    failures = _Failures(len(ids), config.max_failed_share, tried=len(records))
    # Passages go `concurrency` at a time, all calls of a passage within its chunk. With one request at a time (the
    # embedded server) that puts a passage's calls back to back: their prompts are identical, so llama.cpp reuses
    # the evaluated prompt and the second call costs only its new tokens. Interleaving passages (A, B, A, B) made
    # every call evaluate its whole prompt again.
    chunk = max(1, llm.config.concurrency)
    todo = list(todo_prompts)
    with tqdm(total=len(ids), initial=len(records), desc="generate", unit="passage", disable=quiet() or not config.progress,
              dynamic_ncols=True, smoothing=0.1) as bar:
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            results: dict[str, list] = {d: [] for d in batch}
            for call in range(config.calls):  # one seed per call index, so the calls for a passage differ
                answers = _ask_all(llm, [todo_prompts[d][0][call] for d in batch], check,
                                   {**params, "seed": config.seed * 1000 + call})
                for d, answer in zip(batch, answers):
                    results[d].append(answer)
            new = [{"doc_id": d, "fingerprint": todo_prompts[d][1], "model": model,
                    "prompt_hash": todo_prompts[d][0][0].template_hash, "outputs": [t for t, _ in results[d]]}
                   for d in batch]
            for d in batch:
                failures.record([problem for _, problem in results[d]])
            journal.append(r for r in new if None not in r["outputs"])
            records.update({r["doc_id"]: r for r in new})
            bar.update(len(batch))
            bar.set_postfix(calls=llm.calls_made, cached=llm.cache_hits, failed=failures.failed, refresh=False)
            if failures.too_many():
                raise failures.error("writing queries", model)
    counts = Counter(failed_calls=sum(o is None for r in records.values() for o in r["outputs"]),
                     failed_passages=failures.failed)
    return records, counts, failures


def _candidates(corpus: Corpus, ids: list[str], config: GenerateConfig, records: dict, doc_freq: Counter,
                counts: Counter) -> list[Candidate]:
    """Parse, filter and deduplicate candidates; add masked variants. Deterministic, in passage order."""
    from qkrag.llm.prompts import parse_candidates

    max_df = max(1, int(config.mask_df * len(corpus)))
    # Words of the examples that are not everyday words of this corpus (in at most 1% of its documents): a query
    # that uses one its passage lacks took it from an example, e.g. "Egr3 suppresses p53" for a passage on MDMX when
    # an example was about Egr3. Such a pair is wrong, not hard.
    common_df = max(1, int(0.01 * len(corpus)))
    example_terms = frozenset(w for e in config.examples for w in words(e) if doc_freq.get(w, 0) <= common_df)
    seen: set[str] = set()
    out: list[Candidate] = []
    for doc_id in ids:
        doc = corpus.get(doc_id)
        doc_words = frozenset(words(doc.title + " " + doc.content)) if example_terms else frozenset()  # once a passage
        raw: list[tuple[str, str, str]] = []  # (query, positive text, variant)
        if config.generator == "ict":
            for query, rest in ict_candidates(doc, config.candidates, config.seed, max(5, config.min_words),
                                              config.max_words):
                raw.append((query, rest, "ict"))
            generator, prompt_hash = "ict", ""
        else:
            record = records[doc_id]
            generator, prompt_hash = record["model"], record["prompt_hash"]
            for text in record["outputs"]:
                # A model may write more lines than asked: keep a few extra, they are candidates like the rest.
                for query in parse_candidates(text, max_items=2 * config.per_call + 1):
                    raw.append((query, doc.content, "llm"))
        counts["parsed"] += len(raw)
        index = 0
        for query, positive_text, variant in raw:
            variants = [(query, variant)]
            if config.mask_terms:
                if (masked := mask_rare_terms(query, doc.content, doc_freq, max_df)) is not None:
                    variants.append((masked, "masked"))
                    counts["masked_variants"] += 1
            for text, kind in variants:
                seen_as = Seen(text, kind, doc.title, positive_text, doc_words, example_terms, config)
                if dropped := first_drop(seen_as, before_dedupe=True):
                    counts[f"dropped_{dropped}"] += 1
                    continue
                key = normalize(text)
                if key in seen:
                    counts["dropped_duplicate"] += 1
                    continue
                c = Candidate(doc_id, text, positive_text, generator, kind, prompt_hash, index,
                               copy_score(text, positive_text), copy_score(text, doc.title) if doc.title else 0.0,
                               ngram_copy(text, positive_text))
                index += 1
                if dropped := first_drop(seen_as, before_dedupe=False):
                    counts[f"dropped_{dropped}"] += 1
                    continue
                c.off_form = off_form(text, config.examples)
                counts["off_form"] += c.off_form
                seen.add(key)
                out.append(c)
    return out


def generate_pairs(corpus: Corpus, encoder: Encoder, llm: LLM | None, config: GenerateConfig | None = None,
                   out_dir: str | os.PathLike[str] = "pairs", *, doc_ids: Sequence[str] | None = None
                   ) -> GenerationResult:
    """Generate training pairs for `corpus` (or for its passages `doc_ids`) into `out_dir`; see the module docstring.

    Resumable: run it again with the same arguments after an interruption and it continues. Returns the pairs as a
    `datasets.Dataset` (also in `out_dir/pairs.parquet`) with `stats.json` and a BEIR export beside it. A run that
    keeps no pair returns an empty dataset; `stats["no_pairs"]` then says where the candidates went.
    """
    out = Path(out_dir)
    # One generation per folder at a time: a second run would redo the first's LLM work (the journal is written as
    # answers come back, so it could not skip them); it is refused at once, naming the running one.
    with file_lock(out / LOCK, 0, f"pairs folder {out}"):
        return _generate(corpus, encoder, llm, config or GenerateConfig(), out, doc_ids)


#: The lock file a generation holds in its folder while it runs.
LOCK = ".qkrag-generate.lock"


def _generate(corpus: Corpus, encoder: Encoder, llm: LLM | None, config: GenerateConfig, out: Path,
              doc_ids: Sequence[str] | None) -> GenerationResult:
    started = time.perf_counter()
    if llm is None and (config.generator == "llm" or config.answer_check in ("llm", "both")):
        raise fail("generate_pairs", f"generator={config.generator!r}, answer_check={config.answer_check!r} needs an "
                   "LLM and none was given", "pass llm=qkrag.llm.local.default_llm() (or any qkrag.llm.client.LLM), or use "
                   "GenerateConfig(generator='ict', answer_check='form')")
    if len(corpus) < 2:
        raise fail(corpus.source, "has fewer than 2 documents", "ranking needs a corpus to rank the passage against")
    counts: Counter = Counter(dict.fromkeys(_COUNTS, 0))
    llm_before = llm.stats() if llm is not None else {}
    ids = _choose_passages(corpus, config, doc_ids, llm, out, counts)
    counts["passages"] = len(ids)
    records: dict = {}
    failures = None
    if config.generator == "llm":
        assert llm is not None
        records, llm_counts, failures = _llm_stage(llm, corpus, ids, config, Journal(out / JOURNAL))
        counts.update(llm_counts)
    llm_seconds = time.perf_counter() - started

    doc_freq: Counter = Counter()
    if config.mask_terms or config.examples:
        for doc in corpus:
            doc_freq.update(set(words(doc.content)))
    cands = _candidates(corpus, ids, config, records, doc_freq, counts)
    chosen, cands, top_scores, top_pos = _rank_and_steer(corpus, encoder, cands, config, counts)
    negatives = hard_negatives(chosen, top_scores, top_pos, corpus, config, llm, counts)
    rows = [_row(c, neg) for c, neg in zip(chosen, negatives)]
    stats = _stats(corpus, encoder, llm, config, counts, records, cands, rows, failures)
    stats["llm"] = None if llm is None else _spent(llm_before, llm.stats())
    stats["seconds"] = {"llm_stage": round(llm_seconds, 2), "total": round(time.perf_counter() - started, 2)}
    dataset = write_pairs(out, rows, stats, config.progress, texts=dict(zip(corpus.ids, corpus.contents)))
    return GenerationResult(out, dataset, stats)


def _rank_and_steer(corpus: Corpus, encoder: Encoder, cands: list[Candidate], config: GenerateConfig,
                    counts: Counter) -> tuple[list[Candidate], list[Candidate], np.ndarray, np.ndarray]:
    """Embed the candidates, drop near duplicates, rank the corpus for each (the round trip) and steer: the chosen
    candidates, all ranked candidates, and each one's top-scoring other documents (for the negatives)."""
    doc_vecs = document_vectors(encoder, corpus, config.progress)
    if not cands:
        return [], [], np.zeros((0, 0)), np.zeros((0, 0))
    qvecs = embed(encoder, [c.text for c in cands], "query", EmbedOptions(progress=config.progress),
                  desc="embed queries")
    cands, qvecs = drop_near_duplicates(cands, qvecs, config.near_duplicate, counts)
    counts["candidates"] = len(cands)
    positions = np.array([corpus.position(c.doc_id) for c in cands], dtype=np.int64)
    pos_vecs = doc_vecs[positions].copy()
    own = [i for i, c in enumerate(cands) if c.positive_text != corpus.get(c.doc_id).content]
    if own:  # ICT: the positive is the passage without the cut sentence
        pos_vecs[own] = embed(encoder, [cands[i].positive_text for i in own], "document",
                              EmbedOptions(progress=config.progress), desc="embed ICT passages")
    ranks, scores, top_scores, top_pos = rank_candidates(qvecs, pos_vecs, positions, doc_vecs, config.space,
                                               max(config.negative_depth, 1))
    for i, c in enumerate(cands):
        c.rank, c.score, c.row = int(ranks[i]), float(scores[i]), i
    roundtrip = [c for c in cands if c.rank <= config.roundtrip_k]
    counts["roundtrip_kept"] = len(roundtrip)
    return steer_candidates(roundtrip, config), cands, top_scores, top_pos


def _row(c: Candidate, negatives: list[str]) -> dict[str, Any]:
    """One pair as a row of `SCHEMA`."""
    return {"query_id": f"gen-{c.doc_id}-{c.index}", "query": c.text, "positive_id": c.doc_id,
            "positive_text": c.positive_text, "negative_ids": negatives, "base_rank": c.rank,
            "positive_score": c.score, "generator": c.generator, "variant": c.variant, "prompt_hash": c.prompt_hash,
            "copy_score": c.copy_score, "title_copy": c.title_copy, "ngram_copy": c.ngram_copy,
            "words": len(words(c.text)), "off_form": c.off_form, "candidate": c.index}


def _stats(corpus: Corpus, encoder: Encoder, llm: LLM | None, config: GenerateConfig, counts: Counter,
           records: dict, cands: list[Candidate], rows: list[dict], failures: _Failures | None) -> dict[str, Any]:
    ranks = [c.rank for c in cands]
    stats: dict[str, Any] = {
        "generator": "ict" if config.generator == "ict" else llm.config.model,  # type: ignore[union-attr]
        "template": None if config.generator == "ict" else config.template_name,
        "template_hash": next((r["prompt_hash"] for r in records.values()), None),
        "encoder": encoder.fingerprint,
        # where the pairs' ids point: `qkrag train PAIRS_DIR` reloads the corpus from here
        "corpus": str(Path(corpus.source).resolve()) if Path(corpus.source).exists() else corpus.source,
        "config": _jsonable(asdict(config)),
        "counts": dict(counts, pairs=len(rows)),
        "llm_failures": dict(failures.reasons) if failures is not None else {},
        "kept_fraction": counts["roundtrip_kept"] / len(ranks) if ranks else 0.0,
        "candidate_ranks": rank_summary(ranks),
        "candidate_ranks_by_variant": {v: rank_summary(c.rank for c in cands if c.variant == v)
                                       for v in sorted({c.variant for c in cands})},
        "pair_ranks": rank_summary(r["base_rank"] for r in rows),
        "form": form_summary([r["query"] for r in rows], [r["positive_text"] for r in rows]),
        "passages_with_pairs": len({r["positive_id"] for r in rows}),
    }
    if not rows:
        stats["no_pairs"] = _no_pairs_reason(counts, config)
    return stats


def _no_pairs_reason(counts: Counter, config: GenerateConfig) -> str:
    """Where the candidates of a run that kept no pair went, in one sentence."""
    drops = {k: v for k, v in counts.items() if k.startswith("dropped_") and v}
    worst = max(drops, key=drops.get) if drops else None  # type: ignore[arg-type]
    return (f"no pairs kept: {counts['passages']} passages ({counts['failed_passages']} with no usable LLM output) "
            f"gave {counts['parsed']} parsed candidates and {counts['masked_variants']} masked variants; "
            + (f"the filters dropped {sum(drops.values())}, most as {worst} ({drops[worst]}); " if worst else "")
            + f"{counts['roundtrip_kept']} of {counts['candidates']} ranked their passage in the top "
            f"{config.roundtrip_k}")


def _spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What this run spent: the LLM's counters after it minus before (the LLM may have served other work)."""
    out: dict[str, Any] = {"model": after["model"]}
    for key in ("calls_made", "cache_hits", "retries", "skipped", "prompt_tokens", "completion_tokens", "cost"):
        a, b = after.get(key), before.get(key)
        out[key] = None if a is None else round(a - (b or 0), 6) if isinstance(a, float) else a - (b or 0)
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def generate_from_beir(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, limit: int | None = None,
                       config: GenerateConfig | None = None, llm: LLM | None = None,
                       encoder: Encoder | None = None) -> GenerationResult:
    """What `qkrag generate DATA_DIR --limit N --out PAIRS_DIR` does: pairs for the first `limit` passages of a corpus
    (BEIR folder or any file `load_corpus` reads; those that carry no answer skipped, see
    `GenerateConfig.answer_check`), ranked against all of it, with the embedded local LLM unless `llm` is given (or
    `config.generator == "ict"`). An LLM started here is closed here."""
    from qkrag.embed.encoders import make_encoder

    corpus = load_corpus(data_dir)
    config = config or GenerateConfig()
    encoder = encoder or make_encoder()
    own_llm = None
    if config.generator == "llm" and llm is None:
        from qkrag.llm.local import default_llm

        llm = own_llm = default_llm()
    try:
        ids = corpus.ids[:limit] if limit is not None else None
        return generate_pairs(corpus, encoder, llm, config, out_dir, doc_ids=ids)
    finally:
        if own_llm is not None:
            own_llm.close()


"""Stage 2, generate: parsing and filters, round trip and steering, negatives, ICT, outputs, resume after SIGKILL, and
LLM faults. The LLM is a fake OpenAI-compatible HTTP server on 127.0.0.1 driving the real `qkrag.llm.client.LLM` class."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qkrag.data import Corpus, Document, load_qrels, load_queries
from qkrag.errors import InputError, LLMError
from qkrag.llm.client import LLM, LLMConfig
from qkrag.pairs.generate import generate_from_beir, generate_pairs
from qkrag.text import normalize
from qkrag.pairs.config import GenerateConfig
from qkrag.pairs.store import COLUMNS, load_pairs

from tests.fakes import TOPICS, FakeEncoder, FakeOpenAIServer, last_message, make_corpus, pair_answer

# ------------------------------------------------------------------------------------------------ fake LLM server


def llm_server(chat=pair_answer, **options) -> FakeOpenAIServer:
    return FakeOpenAIServer(chat=chat, **options)


@pytest.fixture
def server():
    with llm_server() as s:
        yield s


def make_llm(server: FakeOpenAIServer, cache, **overrides) -> LLM:
    cfg = dict(model="fake-model", base_url=server.url, api_key="sk-test", timeout=5.0, max_retries=1,
               backoff=0.0, concurrency=2)
    cfg.update(overrides)
    return LLM(LLMConfig(**cfg), cache=cache)


FAST = dict(progress=False, negative_depth=6, negatives=2, roundtrip_k=5)


def rows(ds) -> list[dict]:
    return [dict(r) for r in ds]


# ------------------------------------------------------------------------------------------------ the pipeline


def test_pipeline_parses_filters_ranks_and_writes_outputs(server, tmp_path):
    corpus = make_corpus()
    encoder = FakeEncoder(dim=64)
    llm = make_llm(server, tmp_path / "llm.sqlite")
    result = generate_pairs(corpus, encoder, llm, GenerateConfig(**FAST), tmp_path / "out")
    ds = load_pairs(tmp_path / "out")
    assert len(ds) == len(result) > 0
    for col in ("query", "positive_id", "positive_text", "negative_ids", "base_rank", "generator", "prompt_hash",
                "copy_score"):
        assert col in ds.column_names
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    c = stats["counts"]
    assert c["passages"] == len(corpus) and c["failed_calls"] == 0
    assert c["dropped_copy"] >= len(corpus)  # every answer ends with the passage's first sentence, copied
    assert c["candidates"] >= len(ds)
    assert c["parsed"] + c["masked_variants"] == c["candidates"] + sum(
        c[k] for k in ("dropped_length", "dropped_duplicate", "dropped_copy", "dropped_near_duplicate"))
    assert stats["generator"] == "fake-model" and stats["template"] == "query_zero_shot"
    assert len(stats["template_hash"]) == 64 and set(ds["prompt_hash"]) == {stats["template_hash"]}
    for r in rows(ds):
        assert not r["query"].lower().startswith(("here are", "1.", '"')) and r["copy_score"] < 0.75
        assert r["base_rank"] <= 5  # round trip with k = 5
        assert r["positive_id"] not in r["negative_ids"] and len(r["negative_ids"]) <= 2
        assert r["positive_text"] == corpus.get(r["positive_id"]).content
    assert len({normalize(q) for q in ds["query"]}) == len(ds)  # no duplicates
    assert stats["kept_fraction"] == c["roundtrip_kept"] / stats["candidate_ranks"]["n"]
    # BEIR export, readable by qkrag.data
    queries = load_queries(tmp_path / "out" / "gen-queries.jsonl")
    qrels = load_qrels(tmp_path / "out" / "gen-qrels.tsv")
    assert set(queries) == set(ds["query_id"]) == set(qrels)
    assert all(qrels[r["query_id"]] == {r["positive_id"]: 1} for r in rows(ds))
    # the title is hidden from the model by default
    assert server.hits == llm.calls_made > 0
    llm.close()


def test_rerun_makes_zero_llm_calls_and_same_pairs(server, tmp_path):
    corpus = make_corpus()
    config = GenerateConfig(**FAST, judge_negatives=True)
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        first = generate_pairs(corpus, FakeEncoder(64), llm, config, tmp_path / "out")
        assert llm.calls_made > 0
    sent = server.hits
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        second = generate_pairs(corpus, FakeEncoder(64), llm, config, tmp_path / "out")
        assert llm.calls_made == 0
    assert server.hits == sent
    spent, again = first.stats["llm"], second.stats["llm"]
    assert spent["calls_made"] == sent and spent["cache_hits"] == 0 and spent["skipped"] == 0
    # the re-run reads generation from its journal; only the judge's calls come (free) from the LLM cache
    assert again["calls_made"] == 0 and 0 < again["cache_hits"] < sent and again["completion_tokens"] == 0
    assert rows(first.dataset) == rows(second.dataset)
    # even with an empty LLM cache, the journal alone serves the generation stage
    with make_llm(server, tmp_path / "other.sqlite") as llm:
        third = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
        assert llm.calls_made == 0
    assert third.dataset["query"] == first.dataset["query"]


def test_hard_negatives_skip_positive_and_likely_false_negatives(server, tmp_path):
    # d0 and d12 are the same passage under two ids: d12 must never be a negative for d0's queries (and back).
    corpus = make_corpus()
    twin = Document("d12", corpus[0].text, corpus[0].title)
    corpus = Corpus(corpus.documents + (twin,), "twins")
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        ds = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**{**FAST, "negatives": 5}),
                            tmp_path / "out", doc_ids=["d0", "d1", "d2"]).dataset
    assert len(ds) > 0
    for r in rows(ds):
        assert r["positive_id"] not in r["negative_ids"]
        if r["positive_id"] == "d0":
            assert "d12" not in r["negative_ids"]
        assert len(r["negative_ids"]) == len(set(r["negative_ids"]))


def test_judge_drops_negatives_the_llm_calls_relevant(tmp_path):
    s = llm_server(lambda body: "Yes" if "Document:" not in last_message(body) else pair_answer(body))
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST, judge_negatives=True),
                                    tmp_path / "out")
        assert len(result) > 0 and all(r == [] for r in result.dataset["negative_ids"])
        assert result.stats["counts"]["negatives_judged_relevant"] > 0
    finally:
        s.close()


def test_steering_policies_change_which_candidates_are_kept(server, tmp_path):
    corpus = make_corpus()
    out = {}
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        for policy in ("none", "hardest"):
            cfg = GenerateConfig(**{**FAST, "roundtrip_k": 12}, policy=policy, candidates=6, per_call=3)
            out[policy] = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / policy).dataset
    assert len(out["none"]) == len(out["hardest"])
    hard = dict(zip(out["hardest"]["positive_id"], out["hardest"]["base_rank"]))
    easy = dict(zip(out["none"]["positive_id"], out["none"]["base_rank"]))
    assert all(hard[d] >= easy[d] for d in hard)
    assert sum(hard.values()) > sum(easy.values())  # the fake's candidates do differ in rank


def test_target_policy_follows_the_target_distribution(server, tmp_path):
    # With target all on rank 1, every passage that has a rank-1 candidate must get one.
    corpus = make_corpus()
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        cfg = GenerateConfig(**{**FAST, "roundtrip_k": 12}, candidates=6, per_call=3, target=(1.0, 0.0, 0.0))
        easy = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / "a").dataset
        cfg = GenerateConfig(**{**FAST, "roundtrip_k": 12}, candidates=6, per_call=3, target=(0.0, 0.0, 1.0))
        hard = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / "b").dataset
    assert sum(r == 1 for r in easy["base_rank"]) > sum(r == 1 for r in hard["base_rank"])


def test_few_shot_examples_reach_the_prompt(tmp_path):
    seen = []

    def spy(body):
        seen.append("\n".join(m["content"] for m in body["messages"]))  # examples: in the system part
        return pair_answer(body) + "\n- Coffee raises alertness."

    s = llm_server(spy)
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            cfg = GenerateConfig(**FAST, examples=("Coffee raises alertness.", "Sleep loss harms memory."))
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, cfg, tmp_path / "out", doc_ids=["d0"])
        assert result.stats["template"] == "query_few_shot"
        assert "Coffee raises alertness." not in result.dataset["query"]  # an echoed example is no query
        assert result.stats["counts"]["dropped_example_copy"] > 0
        assert seen and all("- Coffee raises alertness." in p for p in seen)
        assert all("Volcano report 0" not in p for p in seen)  # title hidden
    finally:
        s.close()


def test_queries_that_borrow_an_examples_terms_are_dropped(tmp_path):
    # "caffeine" is an example's uncommon word and not in the passage: the model took it from the example.
    s = llm_server(lambda body: "Caffeine changes magma over time.\nMagma temperature is measured with care.")
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            cfg = GenerateConfig(**FAST, examples=("Caffeine raises alertness in adults.",))
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, cfg, tmp_path / "out", doc_ids=["d0"])
    finally:
        s.close()
    assert result.stats["counts"]["dropped_example_terms"] > 0
    assert not any("caffeine" in q.lower() for q in result.dataset["query"])


def test_one_request_at_a_time_puts_a_passages_calls_back_to_back(tmp_path):
    # llama.cpp reuses an evaluated prompt only for the very next request: a passage's identical prompts must follow
    # each other (A, A, B, B), not interleave with another passage's (A, B, A, B).
    seen = []

    def spy(body):
        seen.append(last_message(body))
        return pair_answer(body)

    s = llm_server(spy)
    try:
        with make_llm(s, tmp_path / "llm.sqlite", concurrency=1) as llm:
            cfg = GenerateConfig(**FAST, candidates=6, per_call=2)  # three calls per passage
            generate_pairs(make_corpus(), FakeEncoder(64), llm, cfg, tmp_path / "out", doc_ids=["d0", "d1", "d2"])
    finally:
        s.close()
    assert len(seen) == 9 and len(set(seen)) == 3
    assert all(seen[i] == seen[i - i % 3] for i in range(9))  # runs of three identical prompts


def test_ict_generator_needs_no_llm(tmp_path):
    corpus = make_corpus()
    result = generate_pairs(corpus, FakeEncoder(64), None, GenerateConfig(**FAST, generator="ict"), tmp_path / "ict")
    ds = load_pairs(tmp_path / "ict")
    assert len(ds) > 0 and set(ds["generator"]) == {"ict"}
    for r in rows(ds):
        doc = corpus.get(r["positive_id"])
        assert r["query"] in doc.text and r["query"] not in r["positive_text"]  # cut out, not kept
    assert result.stats["llm"] is None


def test_generate_from_beir_takes_the_first_passages(server, tiny_beir, tmp_path):
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        result = generate_from_beir(tiny_beir, tmp_path / "out", limit=3, llm=llm, encoder=FakeEncoder(64),
                                    config=GenerateConfig(**{**FAST, "roundtrip_k": 5}))
    ds = load_pairs(tmp_path / "out")
    assert result.stats["counts"]["passages"] == 3 and set(ds["positive_id"]) <= {"d1", "d2", "d3"}
    assert {"query", "positive_id"} <= set(ds.column_names)


def test_llm_generator_without_llm_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="needs an LLM"):
        generate_pairs(make_corpus(), FakeEncoder(64), None, GenerateConfig(**FAST), tmp_path / "out")


def test_sampling_is_seeded(server, tmp_path):
    corpus = make_corpus()
    got = []
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        for run in range(2):
            ds = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST, sample=4, seed=7),
                                tmp_path / f"s{run}").dataset
            got.append(ds["positive_id"])
    assert got[0] == got[1] and len(set(got[0])) <= 4


# ------------------------------------------------------------------------------------------------ resume


def test_torn_journal_line_is_ignored_and_resume_matches(server, tmp_path):
    corpus = make_corpus()
    with make_llm(server, tmp_path / "a.sqlite") as llm:
        full = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "full").dataset
    # a run killed mid-write: 5 finished passages and half of the sixth line
    lines = (tmp_path / "full" / "journal.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "journal.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    with make_llm(server, tmp_path / "b.sqlite") as llm:
        resumed = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "resumed").dataset
        assert llm.calls_made == (len(corpus) - 5) * GenerateConfig(**FAST).calls
    assert rows(resumed) == rows(full)
    journal = (tmp_path / "resumed" / "journal.jsonl").read_text().splitlines()
    assert len(journal) == len(corpus) and all(json.loads(line) for line in journal)


def test_changed_prompt_settings_do_not_reuse_the_journal(server, tmp_path):
    corpus = make_corpus()
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out", doc_ids=["d0"])
        calls = llm.calls_made
        generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST, temperature=0.3), tmp_path / "out",
                       doc_ids=["d0"])
        assert llm.calls_made > calls  # new settings, new requests: never stale outputs


CHILD = textwrap.dedent("""
    import sys, json
    sys.path.insert(0, {tests!r})
    from tests.fakes import FakeEncoder
    from tests.pairs.test_generate import make_corpus, FAST
    from qkrag.pairs.generate import generate_pairs
    from qkrag.pairs.config import GenerateConfig
    from qkrag.llm.client import LLM, LLMConfig
    corpus = make_corpus(36)
    llm = LLM(LLMConfig(model="fake-model", base_url=sys.argv[1], api_key="k", timeout=10, max_retries=1,
                        backoff=0.0, concurrency=2), cache=sys.argv[3])
    print("ready", flush=True)
    result = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), sys.argv[2])
    print("done", len(result), flush=True)
""")


def _child(tmp_path: Path, base_url: str, out: str, cache: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).resolve().parents[2])))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, str(script), base_url, str(tmp_path / out), str(tmp_path / cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_exactly_the_uninterrupted_pairs(tmp_path):
    server = llm_server(delay=0.03)
    try:
        clean = _child(tmp_path, server.url, "clean", "clean.sqlite")
        assert clean.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        assert clean.wait(timeout=300) == 0, clean.stderr.read()
        run_time = time.monotonic() - t0
        expected = rows(load_pairs(tmp_path / "clean"))
        assert len(expected) > 10

        rng = random.Random(1234)
        journal = tmp_path / "killed" / "journal.jsonl"

        def lines() -> int:
            return len(journal.read_bytes().splitlines()) if journal.exists() else 0

        progress = []
        # Two kills when the journal reaches a random length (surely mid-generation), two at random times over a
        # whole run's length (anywhere: startup, generation, ranking, writing the outputs).
        for kill in range(4):
            child = _child(tmp_path, server.url, "killed", "killed.sqlite")
            assert child.stdout.readline().strip() == "ready"
            if kill < 2:
                target = rng.randint(lines() + 1, lines() + 12)
                while lines() < target and child.poll() is None:
                    time.sleep(0.005)
            else:
                time.sleep(rng.uniform(0.0, run_time))
            child.send_signal(signal.SIGKILL)
            child.wait()
            progress.append(lines())
        assert any(0 < p < 36 for p in progress), progress  # some kills landed mid-generation
        assert not (tmp_path / "killed" / "stats.json").exists() or progress[-1] == 36
        final = _child(tmp_path, server.url, "killed", "killed.sqlite")
        assert final.wait(timeout=300) == 0, final.stderr.read()
        assert rows(load_pairs(tmp_path / "killed")) == expected
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        assert len({r["doc_id"] for r in records}) == 36
        assert not list((tmp_path / "killed").glob(".staging-*"))
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------ LLM faults


@pytest.mark.parametrize("mode", ["empty", "refusal", "garbled", "500"])
def test_unusable_output_is_retried_then_a_clear_error_with_nothing_written(tmp_path, mode):
    s = llm_server(mode=mode)
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            with pytest.raises(LLMError, match="failed"):
                generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
            assert llm.retries > 0
        assert not (tmp_path / "out" / "stats.json").exists() and not (tmp_path / "out" / "pairs.parquet").exists()
        journal = tmp_path / "out" / "journal.jsonl"
        assert not journal.exists() or journal.read_text() == ""
        # the server recovers: the same call resumes and finishes
        s.mode = "ok"
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            assert len(generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")) > 0
    finally:
        s.close()


def test_server_down_is_a_clear_error(tmp_path):
    s = llm_server()
    url = s.url
    s.close()
    llm = LLM(LLMConfig(model="m", base_url=url, api_key="k", timeout=2, max_retries=1, backoff=0.0), cache=False)
    with pytest.raises(LLMError, match="server is up"):
        generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
    assert not (tmp_path / "out" / "pairs.parquet").exists()


def test_timeouts_are_retried_then_reported(tmp_path):
    s = llm_server(mode="slow", slow_seconds=5)
    try:
        llm = make_llm(s, False, timeout=0.3, max_retries=1)
        with pytest.raises(LLMError, match="failed"):
            generate_pairs(make_corpus(2), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
        assert llm.calls_made == 2 * 2 * 2  # 2 passages x 2 calls x (first try + one retry)
    finally:
        s.close()


def test_some_failed_calls_are_counted_skips(tmp_path):
    # every passage about a volcano gets a refusal, the rest a normal answer
    s = llm_server(lambda body: "I'm sorry, I cannot do that." if "volcano" in last_message(body) else pair_answer(body))
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
        assert result.stats["counts"]["failed_calls"] == GenerateConfig(**FAST).calls
        assert "d0" not in result.dataset["positive_id"] and len(result) > 0
    finally:
        s.close()


# ------------------------------------------------------------------------------------------------ real local LLM


@pytest.mark.slow
@pytest.mark.llm
def test_end_to_end_with_the_real_local_llm(tmp_path, real_llm):
    from qkrag.embed.encoders import make_encoder

    corpus = Corpus(tuple(Document(f"d{i}", f"{t[0].title()} research. " + " ".join(
        f"Scientists found that {w} plays a role in {t[0]} processes." for w in t[1].split()[:3]))
        for i, t in enumerate(TOPICS[:8])), "real-llm")
    config = GenerateConfig(candidates=2, per_call=2, negatives=2, negative_depth=5, progress=False)
    ids = corpus.ids[:5]
    with real_llm() as llm:
        result = generate_pairs(corpus, make_encoder(), llm, config, tmp_path / "out", doc_ids=ids)
        assert llm.calls_made > 0
    ds = load_pairs(tmp_path / "out")
    assert len(ds) == len(result) and {"query", "positive_id"} <= set(ds.column_names)
    assert set(ds["positive_id"]) <= set(ids)
    with real_llm() as llm:
        again = generate_pairs(corpus, make_encoder(), llm, config, tmp_path / "out", doc_ids=ids)
        assert llm.calls_made == 0
    assert rows(again.dataset) == rows(ds)


# ------------------------------------------------------------------------------------------------ answer check

POSTS = [
    "My lava lamp stopped flowing after I moved it. Anyone know why?",
    "How do I keep bees from swarming out of the hive",
    "Why does my bread dough never rise? I used fresh yeast and warm water. Any tips?",
    "Can someone explain how tides work? Thanks in advance!",
    "What is the best flour for a gluten free crop rotation?",
    "Is it safe to look at a comet through binoculars",
]


def mixed_corpus() -> Corpus:
    """The tiny-topics statements plus question posts that share their words (as squad-mix's posts do)."""
    posts = tuple(Document(f"post-{i}", text) for i, text in enumerate(POSTS))
    return Corpus(make_corpus().documents + posts, "statements+posts")


def test_question_posts_never_become_positives_and_the_sample_counts_answer_passages(server, tmp_path):
    corpus = mixed_corpus()
    with make_llm(server, tmp_path / "llm.sqlite") as llm:
        result = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST, sample=9), tmp_path / "out")
        unchecked = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST, answer_check="none"),
                                   tmp_path / "none")
    c = result.stats["counts"]
    assert c["pool"] == len(corpus) and c["skipped_no_answer_form"] == len(POSTS) == c["skipped_no_answer"]
    assert c["passages"] == 9  # nine answer-bearing passages, though a third of the pool asks
    assert len(result) > 0 and not any(pid.startswith("post-") for pid in result.dataset["positive_id"])
    # the posts stay in the corpus: a negative may be one
    assert result.stats["counts"]["candidates"] > 0
    # without the check the posts get queries and become positives: the failure this guards against
    assert any(pid.startswith("post-") for pid in unchecked.dataset["positive_id"])
    assert unchecked.stats["counts"]["skipped_no_answer"] == 0


def answer_checker() -> tuple[FakeOpenAIServer, list[str]]:
    """A server answering the answer_check prompt "no" for a text that mentions a comet or a volcano, else "yes";
    the list collects the texts it was asked about."""
    checked: list[str] = []

    def chat(body):
        user = last_message(body)
        if "Does this text state facts?" in user:
            text = user.split("Text:", 1)[1].split("Does this text", 1)[0].lower()
            checked.append(text)
            return "No." if "comet" in text or "volcano" in text else "Yes"
        return pair_answer(body)

    return llm_server(chat), checked


def test_llm_answer_check_samples_only_passages_it_passes_and_is_journaled(tmp_path):
    s, checked = answer_checker()
    corpus = make_corpus()  # 12 statements: d0 (volcano) and d5 (comet) are judged to carry no answer
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            cfg = GenerateConfig(**FAST, sample=6, answer_check="llm")
            result = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / "out")
        c = result.stats["counts"]
        assert c["passages"] == 6 and not {"d0", "d5"} & set(result.dataset["positive_id"])
        assert c["skipped_no_answer_llm"] >= 1 and c["skipped_no_answer_form"] == 0
        assert 6 <= len(checked) < len(corpus)  # oversampled a little, not the whole pool
        verdicts = [json.loads(line) for line in (tmp_path / "out" / "answer_check.jsonl").read_text().splitlines()]
        assert len(verdicts) == len(checked)
        first = len(checked)
        with make_llm(s, tmp_path / "other.sqlite") as llm:  # a fresh cache: only the journal can save the calls
            again = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / "out")
        assert len(checked) == first and rows(again.dataset) == rows(result.dataset)
    finally:
        s.close()


def test_both_checks_ask_the_llm_only_about_passages_that_pass_the_form_test(tmp_path):
    s, checked = answer_checker()
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            result = generate_pairs(mixed_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST, answer_check="both"),
                                    tmp_path / "out")
        c = result.stats["counts"]
        assert len(checked) == len(make_corpus())  # the posts never reach the LLM
        assert c["skipped_no_answer_form"] == len(POSTS) and c["skipped_no_answer_llm"] == 2
        assert c["skipped_no_answer"] == len(POSTS) + 2 and c["passages"] == len(make_corpus()) - 2
    finally:
        s.close()


def test_answer_check_settings_are_checked(tmp_path):
    with pytest.raises(InputError, match="answer_check"):
        GenerateConfig(answer_check="maybe")
    with pytest.raises(InputError, match="max_failed_share"):
        GenerateConfig(max_failed_share=1.5)
    with pytest.raises(InputError, match="needs an LLM"):
        generate_pairs(make_corpus(), FakeEncoder(64), None, GenerateConfig(**FAST, generator="ict",
                                                                            answer_check="llm"), tmp_path / "o")
    only_posts = Corpus(tuple(Document(f"p{i}", t) for i, t in enumerate(POSTS)), "posts")
    with pytest.raises(InputError, match="carries an answer"):
        generate_pairs(only_posts, FakeEncoder(64), None, GenerateConfig(**FAST, generator="ict"), tmp_path / "o")


# ------------------------------------------------------------------------------------------------ example echoes


def test_examples_echoed_with_a_word_changed_never_become_queries(tmp_path):
    # The passage is about the example's own subject (as squad-mix's first passage was), so neither the copy filter
    # against the passage nor the borrowed-terms filter catches the echo; dropping one word breaks the copied run.
    example = "Who did Denver beat in the 2015 AFC Championship game?"

    def echo(body):
        return "Who did Denver beat in the AFC Championship game\nWhere was the final of the season played?"

    passage = ("The Denver Broncos defeated the New England Patriots 20-18 in the AFC Championship game in 2015, "
               "then won the final at a stadium in Santa Clara.")
    corpus = Corpus((Document("d0", passage),) + make_corpus().documents[1:], "echo")
    s = llm_server(echo)
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            cfg = GenerateConfig(**FAST, examples=(example, "Which team won the NFC title?"))
            result = generate_pairs(corpus, FakeEncoder(64), llm, cfg, tmp_path / "out", doc_ids=["d0"])
    finally:
        s.close()
    assert result.stats["counts"]["dropped_example_copy"] >= 1
    assert not any("denver" in q.lower() for q in result.dataset["query"])
    assert len(result) == 1 and result.dataset["query"][0].startswith("Where was the")  # the real query stays


# ------------------------------------------------------------------------------------------------ failures


def flaky_server(topic: str = "volcano", fault: str = "hang") -> FakeOpenAIServer:
    """Times out on (or garbles) every request about one topic while `server.broken`; answers normally otherwise."""
    server = llm_server()
    server.broken = True

    def chat(body):
        if server.broken and topic in last_message(body):
            if fault == "hang":
                time.sleep(1.0)  # the client gives up after 0.3 s
            else:
                return "#### $$$ 1234 ---- ((((("
        return pair_answer(body)

    server.chat = chat
    return server


def test_calls_that_timed_out_are_retried_by_the_next_run_and_it_ends_with_the_uninterrupted_pairs(tmp_path):
    corpus = make_corpus()
    healthy = llm_server()
    s = flaky_server()
    try:
        with make_llm(healthy, tmp_path / "clean.sqlite") as llm:
            clean = rows(generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "clean")
                         .dataset)
        with make_llm(s, tmp_path / "llm.sqlite", timeout=0.3) as llm:
            first = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
        assert first.stats["counts"]["failed_passages"] == 1 and first.stats["llm_failures"] == {"timeouts": 2}
        assert "d0" not in first.dataset["positive_id"]
        journal = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
        assert len(journal) == len(corpus) - 1 and "d0" not in {r["doc_id"] for r in journal}  # only what succeeded
        s.broken = False  # the server recovers
        with make_llm(s, tmp_path / "llm.sqlite", timeout=0.3) as llm:
            again = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
            assert llm.calls_made == GenerateConfig(**FAST).calls  # only d0's calls, the rest from the journal
        assert again.stats["counts"]["failed_passages"] == 0
        assert rows(again.dataset) == clean
        # a journal written before this rule holds failed calls as null: those are asked again too
        lines = (tmp_path / "clean" / "journal.jsonl").read_text().splitlines()
        old = [json.loads(line) for line in lines]
        old[3]["outputs"] = [None] * len(old[3]["outputs"])
        (tmp_path / "old").mkdir()
        (tmp_path / "old" / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
        with make_llm(healthy, tmp_path / "old.sqlite") as llm:
            resumed = generate_pairs(corpus, FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "old")
            assert llm.calls_made == GenerateConfig(**FAST).calls
        assert rows(resumed.dataset) == clean
    finally:
        s.close()
        healthy.close()


def test_one_garbled_passage_is_skipped_and_counted_not_fatal(tmp_path):
    s = flaky_server(fault="garbled")
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
        c = result.stats["counts"]
        assert c["failed_passages"] == 1 and c["failed_calls"] == 2
        assert result.stats["llm_failures"] == {"garbled output": 2}
        assert len(result) > 0 and "d0" not in result.dataset["positive_id"]
        # when most passages fail, the run stops and says what the failures were
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            with pytest.raises(LLMError, match=r"2 of the 2 passages tried so far \(3 in all\) failed.*"
                                                 r"4 garbled output.*unusable text"):
                generate_pairs(make_corpus(13), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "most",
                               doc_ids=["d0", "d12", "d1"])  # d0 and d12 are both about a volcano
    finally:
        s.close()


def test_http_errors_are_named_as_such(tmp_path):
    s = llm_server(mode="500")
    try:
        with make_llm(s, False) as llm:
            with pytest.raises(LLMError, match=r"HTTP 500 errors.*server is up"):
                generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
    finally:
        s.close()


# ------------------------------------------------------------------------------------------------ no pairs


def test_a_run_that_keeps_no_pairs_writes_an_empty_dataset_and_says_why(tmp_path):
    s = llm_server(lambda body: "Lava flows.\nHot ash.")  # only two-word lines: the length filter drops them all
    try:
        with make_llm(s, tmp_path / "llm.sqlite") as llm:
            result = generate_pairs(make_corpus(), FakeEncoder(64), llm, GenerateConfig(**FAST), tmp_path / "out")
    finally:
        s.close()
    assert len(result) == 0 and result.stats["counts"]["pairs"] == 0
    assert "no pairs kept" in result.stats["no_pairs"] and "dropped_length" in result.stats["no_pairs"]
    ds = load_pairs(tmp_path / "out")
    assert len(ds) == 0 and tuple(ds.column_names) == COLUMNS
    assert "off_form" in ds.column_names


def test_cli_answer_check_option_reaches_the_pipeline(tmp_path, monkeypatch, capsys):
    import qkrag.cli as cli

    from tests.fakes import write_beir

    monkeypatch.setattr(cli, "_encoder", lambda *a, **k: FakeEncoder(64))
    docs = {d.id: d.text for d in mixed_corpus()}
    folder = write_beir(tmp_path / "mixed", docs, {"q": "lava"}, {"q": ["d0"]})
    counts = {}
    for check in ("form", "none"):
        cli.main(["generate", str(folder), "--generator", "ict", "--answer-check", check, "--out",
                  str(tmp_path / check), "--json"])
        stats = json.loads((tmp_path / check / "stats.json").read_text())
        assert stats["config"]["answer_check"] == check
        counts[check] = stats["counts"]
    assert counts["form"]["skipped_no_answer_form"] == len(POSTS) and counts["none"]["skipped_no_answer"] == 0
    with pytest.raises(SystemExit):
        cli.main(["generate", str(folder), "--generator", "ict", "--answer-check", "maybe", "--out",
                  str(tmp_path / "x")])
    assert "answer_check" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ a fleet

FLEET_CHILD = CHILD.replace("concurrency=2", "concurrency=int(sys.argv[4])")


def _fleet_child(tmp_path: Path, base_url: str, out: str, cache: str, concurrency: int) -> subprocess.Popen:
    script = tmp_path / "fleet_child.py"
    script.write_text(FLEET_CHILD.format(tests=str(Path(__file__).resolve().parents[2])))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(script), base_url, str(tmp_path / out), str(tmp_path / cache),
                             str(concurrency)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_concurrency_8_against_a_fleet_killed_midway_resumes_to_the_pairs_of_one_at_a_time(tmp_path):
    """A fleet answering after random delays: 8 requests in flight (the server saw more than one at once, one at a
    time saw one), and a run at concurrency 8 killed twice mid-generation resumes to exactly the pairs of an
    uninterrupted run at concurrency 1."""
    fleet = llm_server(delay=(0.005, 0.05))
    try:
        one = _fleet_child(tmp_path, fleet.url, "one", "one.sqlite", 1)
        assert one.wait(timeout=300) == 0, one.stderr.read()
        assert fleet.max_active == 1
        expected = rows(load_pairs(tmp_path / "one"))
        assert len(expected) > 10

        journal = tmp_path / "eight" / "journal.jsonl"

        def lines() -> int:
            return len(journal.read_bytes().splitlines()) if journal.exists() else 0

        fleet.max_active, progress = 0, []
        for target in (6, 20):  # passages journaled when killed: surely mid-generation (36 in all)
            child = _fleet_child(tmp_path, fleet.url, "eight", "eight.sqlite", 8)
            assert child.stdout.readline().strip() == "ready"
            while lines() < target and child.poll() is None:
                time.sleep(0.002)
            child.send_signal(signal.SIGKILL)
            child.wait()
            progress.append(lines())
        assert any(0 < p < 36 for p in progress), progress
        assert fleet.max_active > 1  # requests overlapped
        final = _fleet_child(tmp_path, fleet.url, "eight", "eight.sqlite", 8)
        assert final.wait(timeout=300) == 0, final.stderr.read()
        assert rows(load_pairs(tmp_path / "eight")) == expected
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        assert sorted(r["doc_id"] for r in records) == sorted({r["doc_id"] for r in records})  # each passage once
        assert len(records) == 36
    finally:
        fleet.close()


def test_a_second_generation_into_a_busy_folder_is_refused_before_any_llm_call(server, tmp_path):
    from qkrag.pairs.generate import LOCK

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom qkrag.atomic import file_lock\n"
         f"with file_lock({str(out / LOCK)!r}, 5, 'x'):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"pairs folder .*another process \(pid {holder.pid}\) is writing it"):
            generate_pairs(make_corpus(), FakeEncoder(dim=64), make_llm(server, None), GenerateConfig(**FAST), out)
        assert server.hits == 0
    finally:
        holder.kill()
        holder.wait()
    generate_pairs(make_corpus(), FakeEncoder(dim=64), make_llm(server, None), GenerateConfig(**FAST), out)
    assert server.hits > 0 and len(load_pairs(out)) > 0  # once the first is gone, the folder is free

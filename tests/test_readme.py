"""The README runs as written, and the numbers its quickstarts print agree: the command line and the Python block
train the same map, measure the same figures and fuse by the rule `qkrag index --hybrid` records and `qkrag search
--hybrid` serves. Everything is read from the README itself (the data folder too), so a new demo corpus needs only
the README's own lines changed."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_docs_snippets import ROOT, run_document, runnable

LLM_CALLS = 10  # the quickstart's LLM step (generate) stays a taste: at most this many calls to the embedded model


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/demo.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert 'torch==2.13.0' in (ROOT / "scripts" / "setup.sh").read_text()


def test_the_quickstarts_name_the_data_once_each():
    shell, python = runnable(ROOT / "README.md")
    assert shell.language == "shell" and python.language == "python"
    assert len(re.findall(r"^DATA=\S+", shell.code, re.M)) == 1 and len(re.findall(r"^DATA = ", python.code, re.M)) == 1
    data = re.search(r"^DATA=(\S+)", shell.code, re.M).group(1)
    assert re.search(rf'^DATA = "{re.escape(data)}"', python.code, re.M), "the two quickstarts must use one corpus"
    assert data not in shell.code.replace(f"DATA={data}", "") and data not in python.code.replace(f'"{data}"', "", 1)


@pytest.fixture(scope="module")
def readme(tmp_path_factory):
    """Both quickstarts run as written: {command line (without $DATA expanded): (stdout, seconds)}, the shell
    block's stderr, and the Python block's stdout."""
    shell, python = run_document(ROOT / "README.md", tmp_path_factory.mktemp("readme"))
    commands = {command: (out, seconds) for command, out, seconds in shell.commands()}
    return commands, shell.stderr, python.stdout


def one(commands: dict, *words: str, without: tuple[str, ...] = ()) -> tuple[str, float]:
    """The output and seconds of the one quickstart command that has all `words` and none of `without`."""
    found = [c for c in commands if c.startswith("qkrag") and all(w in c.split() for w in words)
             and not any(w in c.split() for w in without)]
    assert len(found) == 1, f"one command with {words}, found {found}"
    return commands[found[0]]


def json_of(text: str):
    return json.loads(text[text.index("{"):])


@pytest.mark.slow
@pytest.mark.llm
def test_every_quickstart_command_succeeds_and_prints_something(readme):
    commands, _, _ = readme
    steps = [c for c in commands if c.startswith("qkrag")]
    assert len(steps) >= 10
    for command in steps:
        assert commands[command][0].strip(), f"{command} printed nothing"
    generate, seconds = one(commands, "generate")
    print(f"README quickstart: generate took {seconds:.0f} s; all commands {sum(s for _, s in commands.values()):.0f} s")
    calls = int(re.search(r"(\d+) calls", generate).group(1))  # wall time depends on the machine's load; calls do not
    assert 0 < calls <= LLM_CALLS, f"the quickstart's LLM step made {calls} calls: keep --sample and --candidates small"


@pytest.mark.slow
@pytest.mark.llm
def test_the_quickstarts_train_and_agree_on_every_number(readme):
    commands, stderr, python = readme
    trained = re.search(r"selected: (.*)", one(commands, "train", "--split")[0]).group(1).strip()
    assert trained.startswith("trained"), f"the quickstart's projection kept the start: {trained}"
    assert re.search(r"^selected: (.*)$", python, re.M).group(1).strip() == trained  # the same training
    recipe = re.search(r"recipe: (\S+)", one(commands, "train", "--split")[0]).group(1)
    assert re.search(r"^recipe: (\S+)", python, re.M).group(1) == recipe  # the same recipe chosen
    evaluated = json_of(one(commands, "eval", "--projection", "--json", without=("--retriever",))[0])
    cosine, learned = (float(x) for x in re.search(r"cosine nDCG@10 ([\d.]+), projection nDCG@10 ([\d.]+)",
                                                   python).groups())
    assert learned == pytest.approx(evaluated["ndcg@10"], abs=2e-3)
    assert cosine == pytest.approx(evaluated["base_ndcg@10"], abs=2e-3)
    assert learned - cosine == pytest.approx(evaluated["delta_ndcg@10"], abs=2e-3) and abs(evaluated["delta_ndcg@10"]) > 0
    fused = json_of(one(commands, "eval", "--retriever", "hybrid", "--json")[0])
    hybrid, rule = re.search(r"hybrid nDCG@10 ([\d.]+), fusion (.*)", python).groups()
    assert float(hybrid) == pytest.approx(fused["ndcg@10"], abs=2e-3)
    assert rule == f"{fused['fusion']}, chosen on: {fused['fusion_chosen_on']}"
    recorded = re.search(r"projected_fusion: (.*)", one(commands, "index")[0]).group(1).strip()
    assert recorded == rule and f"fusion: {rule}" in stderr  # index recorded it, search --hybrid served it
    probabilities = [float(p) for p in re.findall(r"', ([01]\.\d+)\)", python)]
    assert len(probabilities) == 3 and all(0 < p < 1 for p in probabilities)


@pytest.mark.slow
@pytest.mark.llm
def test_the_synthetic_taste_writes_pairs_and_trains_on_them(readme):
    commands, _, _ = readme
    assert int(re.search(r"pairs\s+(\d+)", one(commands, "generate")[0]).group(1)) > 0
    synthetic = one(commands, "train", without=("--split",))[0]
    assert re.search(r"selected: (trained|start kept)", synthetic), synthetic  # says what it kept, in words

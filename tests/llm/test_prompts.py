"""qkrag.llm.prompts: template files, strict rendering, stable hashes, and parsing of messy model output."""

from __future__ import annotations

import pytest

from qkrag.llm import prompts
from qkrag.errors import InputError
from qkrag.llm.prompts import PromptTemplate


def test_shipped_templates_load_and_declare_their_variables():
    assert set(prompts.list_templates()) >= {"rewrite", "aspect", "query_zero_shot", "query_few_shot", "judge"}
    assert prompts.load_template("rewrite").variables == {"text", "max_words"}
    assert prompts.load_template("query_zero_shot").variables == {"text", "n"}
    assert prompts.load_template("query_few_shot").variables == {"text", "n", "examples"}
    assert prompts.load_template("judge").variables == {"query", "text"}
    for name in prompts.list_templates():
        template = prompts.load_template(name)
        assert template.system.strip() and template.description, name


def test_prompts_dir_is_the_source_checkout_folder():
    assert (prompts.prompts_dir() / "README.md").is_file()


def test_render_fills_system_and_user():
    p = prompts.render("rewrite", text="A {braced} passage.", max_words=40)
    assert [m["role"] for m in p.messages] == ["system", "user"]
    assert "at most 40 words" in p.messages[1]["content"]
    assert p.messages[1]["content"].endswith("A {braced} passage.")  # values are not re-parsed as templates
    assert p.template == "rewrite" and p.template_hash == prompts.load_template("rewrite").hash


def test_missing_variable_names_template_and_variable():
    with pytest.raises(InputError, match=r"prompt template 'rewrite'.*'max_words' is missing"):
        prompts.render("rewrite", text="x")


def test_unknown_variable_names_template_and_variable():
    with pytest.raises(InputError, match=r"prompt template 'judge'.*unknown variable 'passage'"):
        prompts.render("judge", query="q", text="t", passage="p")


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(InputError, match="no such template.*rewrite"):
        prompts.load_template("rewrit")


def test_hash_is_stable_and_changes_with_the_text():
    a = PromptTemplate(name="t", system="s", user="Hello {text}")
    assert a.hash == PromptTemplate(name="renamed", system="s", user="Hello {text}").hash  # the text, not the name
    assert a.hash != PromptTemplate(name="t", system="s", user="Hello, {text}").hash
    assert a.hash != PromptTemplate(name="t", system="s2", user="Hello {text}").hash
    assert len(a.hash) == 64
    # Pinned: a change to this value means every cached output and every recorded hash silently changes meaning.
    assert PromptTemplate(name="t", user="Q: {text}").hash == prompts.content_hash("qkrag-prompt-v1", "", "Q: {text}")


def test_bad_template_text_is_rejected_early():
    with pytest.raises(InputError, match="not a plain name"):
        PromptTemplate(name="t", user="At most {max words} words")
    with pytest.raises(InputError, match="not a plain name"):
        PromptTemplate(name="t", user="{text:>10}")
    with pytest.raises(InputError, match="braces"):
        PromptTemplate(name="t", user="a { b")
    with pytest.raises(InputError, match="empty"):
        PromptTemplate(name="t", user="  ")


def test_template_files_by_path(tmp_path):
    path = tmp_path / "claim.toml"
    path.write_text('system = "Be brief."\nuser = """Write a claim for:\n{text}"""\n', encoding="utf-8")
    p = prompts.render(path, text="abc")
    assert p.template == "claim" and p.messages[1]["content"] == "Write a claim for:\nabc"
    bad = tmp_path / "bad.toml"
    bad.write_text('prompt = "x"\n', encoding="utf-8")
    with pytest.raises(InputError, match="'user'"):
        prompts.load_template(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text('user = "unterminated\n', encoding="utf-8")
    with pytest.raises(InputError, match="TOML"):
        prompts.load_template(broken)


def test_builtin_and_user_aspects():
    assert {"climate", "cuisine", "size"} <= set(prompts.builtin_aspects())
    climate = prompts.aspect_template("climate")
    assert climate.name == "aspect:climate" and climate.variables == {"text"}
    assert "Oslo" in climate.render(text="Oslo").messages[-1]["content"]
    custom = prompts.aspect_template("Climate of {text}")
    assert custom.render(text="Oslo").messages[-1]["content"] == "Climate of Oslo"
    assert custom.hash != prompts.aspect_template("Cuisine of {text}").hash
    with pytest.raises(InputError, match="text"):
        prompts.aspect_template("Climate of {place}")
    with pytest.raises(InputError, match="built-in"):
        prompts.aspect_template("weather")


def test_few_shot_examples_are_capped_deduped_and_required():
    block = prompts.few_shot_examples([f"query  {i}" for i in range(12)] + ["query 0", "  "])
    assert block.splitlines() == [f"- query {i}" for i in range(8)]
    with pytest.raises(InputError, match="zero_shot"):
        prompts.few_shot_examples(["", "  "])
    p = prompts.render("query_few_shot", text="doc", n=3, examples=block)
    assert "- query 7" in p.messages[0]["content"] and "own words" in p.messages[-1]["content"]
    # the examples are the system part, the same for every passage: a prefix the runtime evaluates once
    other = prompts.render("query_few_shot", text="another passage", n=3, examples=block)
    assert other.messages[0] == p.messages[0] and "another passage" in other.messages[-1]["content"]


MESSY = """Sure! Here are 5 queries:
```text
1. "Does vitamin D lower the risk of fractures?"
2) Query: statin use and dementia risk
- **Q3:** 3.5 million people lack access to insulin
* ‘Is aspirin linked to stomach bleeding?’
(5) Does vitamin D lower the risk of fractures?
I'm sorry, I can't help with more.
-5 degrees winters in Oslo
```
"""


def test_parse_candidates_cleans_numbering_quotes_fences_and_refusals():
    assert prompts.parse_candidates(MESSY) == [
        "Does vitamin D lower the risk of fractures?",
        "statin use and dementia risk",
        "3.5 million people lack access to insulin",
        "Is aspirin linked to stomach bleeding?",
        "-5 degrees winters in Oslo",
    ]
    assert prompts.parse_candidates(MESSY, max_items=2) == [
        "Does vitamin D lower the risk of fractures?",
        "statin use and dementia risk",
    ]


@pytest.mark.parametrize("text", ["", None, "   \n ", "```\n```", "I'm sorry, but I can't do that.", "1.\n2.\n-"])
def test_parse_candidates_empty_when_nothing_usable(text):
    assert prompts.parse_candidates(text) == []


def test_refusal_only_at_the_start():
    assert prompts.is_refusal("I'm sorry, I can't help with that.")
    assert prompts.is_refusal('"As an AI language model, I cannot"')
    assert prompts.is_refusal("I cannot provide that")
    assert not prompts.is_refusal("why I can't sleep after coffee")
    assert prompts.parse_candidates("why I can't sleep after coffee") == ["why I can't sleep after coffee"]


def test_output_problem_classifies():
    assert prompts.output_problem("") == "empty"
    assert prompts.output_problem("```\n\n```") == "empty"
    assert prompts.output_problem("I apologize, but I cannot comply.") == "refusal"
    assert prompts.output_problem("\ufffd\ufffd\ufffd") == "garbled"
    assert prompts.output_problem("### @@ %% 12 34 !!") == "garbled"
    assert prompts.output_problem(" ".join(["the"] * 12)) == "garbled"
    assert prompts.output_problem("Vitamin D lowers fracture risk in older adults.") is None


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("yes", True), ("Yes.", True), ("**No**", False), ("Answer: no, it does not.", False), ("maybe", None),
     ("", None), ("I do not know", None)],
)
def test_parse_yes_no(text, verdict):
    assert prompts.parse_yes_no(text) is verdict


def test_parse_candidates_max_words_drops_pasted_passages():
    pasted = (  # a passage pasted back (41 words)
        "The body-mass index of twins who have been reared apart. To assess the relative importance of genetic and "
        "environmental effects on the body-mass index, we studied samples of identical and fraternal twins, reared "
        "apart or reared together, in a large national registry."
    )
    text = "short query about statins\n" + pasted
    assert prompts.parse_candidates(text, max_words=25) == ["short query about statins"]
    assert len(prompts.parse_candidates(text)) == 2


def test_extractive_aspect_built_in_names_have_descriptions():
    from qkrag.llm.prompts import aspect_description

    assert "temperature" in aspect_description("climate") and aspect_description("my own words") == "my own words"

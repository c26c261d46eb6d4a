"""qkrag.llm.rewrite: rewriting and aspect texts, driven through the real `LLM` class against the tidy fake model of
tests/fakes.py (a fake OpenAI-compatible server on 127.0.0.1 that refuses on cue), with its FakeEncoder."""

from __future__ import annotations

import pytest

from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.embed.wrappers import AspectEncoder, RewritingEncoder, make_rewriting_encoder
from qkrag.errors import InputError, LLMError
from qkrag.llm.prompts import PromptTemplate
from qkrag.llm.rewrite import RewriteStats, aspect_texts, clean_output, rewrite_texts

from tests.fakes import make_tidy_llm, tidy_llm_server  # noqa: F401 (the fixtures make_llm and server)


# ------------------------------------------------------------------------------------------------ helpers


def test_clean_output_strips_preambles_fences_bullets_and_quotes():
    assert clean_output("Here is the rewritten text:\n\n- Lisbon is big.\n- It is sunny.") == "Lisbon is big. It is sunny."
    assert clean_output('"Rewritten text: rain in spring"') == "rain in spring"
    assert clean_output("```\nfoo bar\n```") == "foo bar"
    assert clean_output("") == "" and clean_output(None) == ""


def test_rewrite_texts_rewrites_and_sends_one_request_per_text(make_llm, server):
    llm = make_llm()
    out = rewrite_texts(["Hey, teh rainn falls in spring lol", "<p>Bread needs yeast</p>"], llm, progress=False)
    assert out == ["the rain falls in spring", "bread needs yeast"]
    assert len(server.requests) == 2
    assert "at most 60 words" in server.requests[0]["messages"][-1]["content"]
    assert server.requests[0]["max_tokens"] == 2 * 60 + 16


def test_a_text_the_llm_failed_to_rewrite_is_an_error_never_its_original(make_llm, server):
    llm = make_llm()
    texts = ["rain in spring", "please REFUSE this", "BLANK answer here"]
    with pytest.raises(LLMError, match="unusable output"):  # the refusal, after its retry: the LLM layer's message
        rewrite_texts(texts, llm, progress=False)
    with pytest.raises(LLMError, match=r"rewrite: 1 of 2 texts got no usable answer from the LLM \(empty 1; the first "
                                       r"is text #1\).*on_failure='skip'"):
        rewrite_texts([texts[0], texts[2]], llm, progress=False)  # a bare preamble: nothing left after cleaning


def test_with_on_failure_skip_failed_texts_are_left_out_and_counted(make_llm, server):
    llm = make_llm()
    stats = RewriteStats()
    texts = ["rain in spring", "please REFUSE this", "BLANK answer here"]
    out = rewrite_texts(texts, llm, stats=stats, progress=False, on_failure="skip")
    assert out == ["rain in spring", None, None]
    assert stats.texts == 3 and stats.rewritten == 1 and stats.fallback_total == 0
    # The refusal is retried by the LLM layer (1 retry), then skipped: "unusable"; a bare preamble: "empty".
    assert stats.failed == {"unusable": 1, "empty": 1} and stats.failed_total == 2
    assert stats.as_dict()["failed"] == {"unusable": 1, "empty": 1}
    assert llm.skipped == 1
    with pytest.raises(InputError, match="on_failure"):
        rewrite_texts(texts, llm, progress=False, on_failure="fallback")


def test_aspect_none_falls_back_and_is_counted(make_llm):
    stats = RewriteStats()
    texts = ["Avalon. climate: warm and wet. cuisine: fish", "Brigadoon. cuisine: oatcakes"]
    out = aspect_texts(texts, make_llm(), "climate", stats=stats, progress=False)
    assert out == ["warm and wet", texts[1]]
    assert stats.fallbacks == {"none": 1} and stats.rewritten == 1


def test_bad_inputs_are_input_errors(make_llm, fake_encoder):
    llm = make_llm()
    with pytest.raises(InputError, match="empty"):
        rewrite_texts(["fine", "  "], llm, progress=False)
    with pytest.raises(InputError, match="max_words"):
        rewrite_texts(["fine"], llm, max_words=0, progress=False)
    with pytest.raises(InputError, match="neither a built-in"):
        AspectEncoder(fake_encoder, llm, "weather")
    with pytest.raises(InputError, match="side"):
        RewritingEncoder(fake_encoder, llm, sides=("passage",))
    with pytest.raises(InputError, match="rewrite template"):
        RewritingEncoder(fake_encoder, llm, template=PromptTemplate("odd", user="Summarise {text} for {audience}"))
    with pytest.raises(InputError, match="both"):
        make_rewriting_encoder(fake_encoder, llm, max_words=40, aspect="climate")


# ------------------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
@pytest.mark.llm
def test_real_local_llm_rewrites_and_describes_aspects(real_llm, fake_encoder):
    texts = ["hey so like Oslo gets SUPER cold in winter lol, snow everywhere, and ppl eat tons of salmon",
             "<ul><li>City: Lima</li><li>Rain: almost never</li><li>Food: ceviche</li></ul>",
             "Marrakesh is hot and dry; its markets sell tagines slow-cooked with lamb and apricots."]
    with real_llm() as llm:
        stats = RewriteStats()
        rewrites = rewrite_texts(texts, llm, max_words=30, stats=stats, progress=False)
        climates = aspect_texts(texts, llm, "climate", stats=stats, progress=False)
        calls = llm.calls_made
        assert calls >= 6
        assert rewrite_texts(texts, llm, max_words=30, progress=False) == rewrites  # served from the cache
        assert llm.calls_made == calls
        vectors = embed(AspectEncoder(fake_encoder, llm, "climate", progress=False), texts, "document",
                        EmbedOptions(progress=False))
        assert llm.calls_made == calls and vectors.shape == (3, fake_encoder.dimension)
    assert all(r.strip() for r in rewrites + climates)
    assert stats.texts == 6 and stats.rewritten + stats.fallback_total == 6
    assert "<li>" not in rewrites[1]  # markup gone
    assert stats.rewritten >= 4, stats  # a working model answers most of these


def test_rewrite_corpus_refuses_an_extractive_aspect(tmp_path):
    from qkrag.data import Corpus, Document
    from qkrag.llm.rewrite import rewrite_corpus

    with pytest.raises(InputError, match="extracts sentences at embedding time"):
        rewrite_corpus(Corpus([Document("a", "text")], source="m"), None, tmp_path / "o.jsonl", aspect="extract:cuisine")
    assert not (tmp_path / "o.jsonl").exists()


def test_rewrite_corpus_failures_point_to_skip_failed(make_llm, server, tmp_path):
    from qkrag.data import Corpus
    from qkrag.llm.rewrite import rewrite_corpus

    corpus = Corpus.from_texts({"a": "rain in spring", "b": "please REFUSE this"})
    for texts in (corpus, Corpus.from_texts({"a": "rain in spring", "c": "BLANK answer here"})):
        with pytest.raises(LLMError, match=r"Fix: .*pass --skip-failed") as info:
            rewrite_corpus(texts, make_llm(), tmp_path / "out.jsonl")
        assert "on_error=" not in str(info.value) and "on_failure=" not in str(info.value)
    done = rewrite_corpus(corpus, make_llm(), tmp_path / "out.jsonl", skip_failed=True)
    assert done["written"] == 1


def test_cli_rewrite_takes_an_llm_model():
    from typer.testing import CliRunner

    import qkrag.cli as cli

    assert "--llm-model" in CliRunner().invoke(cli.app, ["rewrite", "--help"], env={"COLUMNS": "200"}).output

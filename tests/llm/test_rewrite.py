"""qkrag.llm.rewrite: rewriting and aspect encoders, driven through the real `LLM` class against a fake OpenAI-compatible
server on 127.0.0.1 that answers like a tidy model (and refuses on cue), with the FakeEncoder from tests/fakes.py."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qkrag.analysis.aspects import (aspect_embeddings, aspect_neighbours, load_labelled_corpus, nearest_neighbours,
                                    neighbour_agreement, pca_2d, plot_aspect_maps, similarity_by_pair_kind)
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.embed.wrappers import AspectEncoder, RewritingEncoder, make_rewriting_encoder
from qkrag.errors import IndexMismatchError, InputError, LLMError
from qkrag.llm.client import LLM, LLMConfig
from qkrag.llm.prompts import PromptTemplate
from qkrag.llm.rewrite import RewriteStats, aspect_texts, clean_output, rewrite_texts

from tests.fakes import FakeEncoder, FakeOpenAIServer, free_port, last_message

ROOT = Path(__file__).resolve().parents[2]


def _passage(prompt: str) -> str:
    return prompt.split("Text:", 1)[1].strip() if "Text:" in prompt else prompt


NOISE = {"hey", "lol", "omg", "cheers", "haha", "dude", "dear", "sir", "madam", "kindly", "yours", "faithfully",
         "regards"}
TYPOS = {"teh": "the", "rainn": "rain", "bred": "bread"}


def fake_answer(prompt: str) -> str:
    """What the fake model writes. Rewrites: the passage's content words, lower case, with markup, greetings,
    sign-offs, slang (NOISE) and typos (TYPOS) removed, behind a preamble. Aspects: the passage's "<aspect>: ..."
    clause, or "none". Passages containing REFUSE are refused; BLANK gets a preamble and nothing after it."""
    text = _passage(prompt)
    if "REFUSE" in text:
        return "I'm sorry, but I can't help with that request."
    if "BLANK" in text:
        return "Here is the rewritten text:"
    if prompt.startswith("Rewrite"):
        words = [TYPOS.get(w, w) for w in re.findall(r"[a-z]+", re.sub(r"<[^>]+>", " ", text).lower())]
        return "Here is the rewritten text:\n\n" + " ".join(w for w in words if w not in NOISE)
    question = re.split(r"[?.]", prompt, maxsplit=1)[0].lower()
    aspect = "climate" if "climate" in question else "cuisine" if "cuisine" in question else "size"
    match = re.search(rf"{aspect}: ([^.]*)", text)
    return match.group(1) if match else "none"


@pytest.fixture
def server():
    with FakeOpenAIServer(chat=lambda body: fake_answer(last_message(body))) as s:
        yield s


@pytest.fixture
def make_llm(server, tmp_path):
    made: list[LLM] = []

    def make(**overrides) -> LLM:
        cfg = LLMConfig(model="fake-model", base_url=server.url, timeout=5.0, max_retries=1, backoff=0.0, concurrency=2)
        llm = LLM(replace(cfg, **overrides), cache=tmp_path / "llm.sqlite")
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


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


def test_an_llm_that_is_down_stores_nothing_and_a_later_run_rewrites(make_llm, server, tmp_path):
    """`index --rewrite` with the LLM down used to store the original texts under the rewriting encoder's name, and
    a later run with the LLM up kept them. Now the build fails, and the next one rewrites every text."""
    from qkrag.retrieval.index import IndexConfig, build_index

    corpus = Corpus.from_texts({"a": "Hey, teh rainn falls in spring lol", "b": "<p>Bread needs yeast</p>"})
    config = IndexConfig(collection="rewritten", path=tmp_path / "chroma")
    options = EmbedOptions(progress=False)  # with the embedding cache: nothing stale may land in it
    down = make_llm(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=1.0)
    with pytest.raises(LLMError, match="cannot connect"):
        build_index(corpus, RewritingEncoder(FakeEncoder(), down, progress=False), config, options, progress=False)
    base = FakeEncoder()
    index = build_index(corpus, RewritingEncoder(base, make_llm(), progress=False), config, options, progress=False)
    assert index.complete and index.last_build.added == 2 and len(server.requests) == 2
    stored = dict(zip(*index.get_vectors()))
    expected = FakeEncoder().embed_batch(["the rain falls in spring"], "document")[0]
    np.testing.assert_allclose(stored["a"], expected, atol=1e-6)  # the rewrite, not the original


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


# ------------------------------------------------------------------------------------------------ fingerprints


def test_fingerprints_name_base_model_template_and_parameters(make_llm, fake_encoder):
    llm, other_model = make_llm(), make_llm(model="other-model")
    base = RewritingEncoder(fake_encoder, llm, max_words=40)
    variants = [
        RewritingEncoder(fake_encoder, llm, max_words=60),
        RewritingEncoder(fake_encoder, llm, max_words=40, sides=("query", "document")),
        RewritingEncoder(fake_encoder, llm, max_words=40,
                         template=PromptTemplate("rewrite", user="Plainly, at most {max_words} words: {text}")),
        RewritingEncoder(fake_encoder, other_model, max_words=40),
        RewritingEncoder(fake_encoder, make_llm(temperature=0.7), max_words=40),
        RewritingEncoder(FakeEncoder(name="another-base"), llm, max_words=40),
        AspectEncoder(fake_encoder, llm, "climate"),
        AspectEncoder(fake_encoder, llm, "cuisine"),
        AspectEncoder(fake_encoder, llm, "Climate of {text}"),
        AspectEncoder(fake_encoder, llm, "Weather of {text}"),
        AspectEncoder(fake_encoder, other_model, "climate"),
    ]
    prints = [base.fingerprint] + [v.fingerprint for v in variants]
    assert len(set(prints)) == len(prints), prints
    assert fake_encoder.fingerprint not in prints
    # Same settings, same fingerprint (a fresh object must find the cached vectors); the base is named in full.
    assert RewritingEncoder(fake_encoder, make_llm(), max_words=40).fingerprint == base.fingerprint
    assert base.fingerprint.endswith("|" + fake_encoder.fingerprint)
    assert "llm=fake-model" in base.fingerprint and "max_words=40" in base.fingerprint
    assert base.dimension == fake_encoder.dimension


def test_rewritten_vectors_are_cached_per_llm_server(make_llm, fake_encoder, tmp_path):
    """Two LLM servers with one model name may rewrite differently: their rewrites' vectors are cached apart."""
    from qkrag.embed.encoders import OpenAIEncoder

    here = RewritingEncoder(fake_encoder, make_llm(), max_words=40)
    there = RewritingEncoder(fake_encoder, make_llm(base_url="http://127.0.0.1:9/v1"), max_words=40)
    assert here.fingerprint == there.fingerprint  # the same rewrite, as far as an index is concerned
    assert here.cache_key != there.cache_key and "llm_server=http://127.0.0.1:9/v1" in there.cache_key
    api = RewritingEncoder(OpenAIEncoder("m", base_url="http://127.0.0.1:8/v1"), make_llm(), max_words=40)
    assert "base=openai:m|server=http://127.0.0.1:8/v1" in api.cache_key


def test_make_rewriting_encoder_is_a_thin_switch(make_llm, fake_encoder):
    llm = make_llm()
    assert make_rewriting_encoder(fake_encoder, llm) is fake_encoder
    rw = make_rewriting_encoder(fake_encoder, llm, max_words=30, sides=("query", "document"))
    assert isinstance(rw, RewritingEncoder) and rw.max_words == 30 and rw.sides == ("query", "document")
    asp = make_rewriting_encoder(fake_encoder, llm, aspect="size")
    assert isinstance(asp, AspectEncoder) and asp.aspect == "size"


def test_index_refuses_an_encoder_with_another_rewrite(make_llm, fake_encoder, tmp_path):
    from qkrag.retrieval.index import ChromaIndex, IndexConfig, build_index

    llm = make_llm()
    corpus = Corpus.from_texts({"a": "rain in spring", "b": "bread needs yeast", "c": "cats sleep a lot"})
    config = IndexConfig(collection="rewritten", path=tmp_path / "chroma")
    index = build_index(corpus, RewritingEncoder(fake_encoder, llm, max_words=40, progress=False), config,
                        progress=False)
    assert index.count() == 3
    ChromaIndex.for_encoder(config, RewritingEncoder(fake_encoder, llm, max_words=40), create=False)  # same: fine
    for other in (RewritingEncoder(fake_encoder, llm, max_words=41), AspectEncoder(fake_encoder, llm, "climate"),
                  fake_encoder):
        with pytest.raises(IndexMismatchError):
            ChromaIndex.for_encoder(config, other, create=False)


# ------------------------------------------------------------------------------------------------ caching


def test_rewrite_then_embed_is_cached(make_llm, server):
    texts = ["Hey, teh rainn falls in spring lol", "<p>Bread needs yeast</p>", "Dear sir, cats sleep a lot. Regards"]
    first_base = FakeEncoder()
    encoder = RewritingEncoder(first_base, make_llm(), max_words=40, progress=False)
    first = embed(encoder, texts, "document", EmbedOptions(progress=False))
    assert len(server.requests) == 3 and first_base.texts_embedded == 3
    # The base embedded the rewrites, not the originals.
    np.testing.assert_allclose(first[0], FakeEncoder().embed_batch(["the rain falls in spring"], "document")[0],
                               atol=1e-6)

    # Second run, fresh objects: zero LLM calls, zero embeddings.
    second_base, llm = FakeEncoder(), make_llm()
    again = embed(RewritingEncoder(second_base, llm, max_words=40, progress=False), texts, "document",
                  EmbedOptions(progress=False))
    assert llm.calls_made == 0 and second_base.texts_embedded == 0 and len(server.requests) == 3
    np.testing.assert_array_equal(first, again)

    # With the vectors gone (no embedding cache), the rewrites still come from the LLM cache: embeddings, no calls.
    third_base, llm = FakeEncoder(), make_llm()
    embed(RewritingEncoder(third_base, llm, max_words=40, progress=False), texts, "document",
          EmbedOptions(progress=False, cache=None))
    assert llm.calls_made == 0 and llm.cache_hits == 3 and third_base.texts_embedded == 3


def test_sides_not_rewritten_embed_the_original(make_llm, server, fake_encoder):
    encoder = RewritingEncoder(fake_encoder, make_llm(), max_words=40, progress=False)  # documents only
    query = encoder.embed_batch(["Hey, teh rainn lol"], "query")
    np.testing.assert_allclose(query, FakeEncoder().embed_batch(["Hey, teh rainn lol"], "query"), atol=1e-6)
    assert server.requests == []
    both = RewritingEncoder(fake_encoder, make_llm(), max_words=40, sides=("query", "document"), progress=False)
    both.embed_batch(["Hey, teh rainn lol"], "query")
    assert len(server.requests) == 1


def test_rewriting_removes_style_matches(make_llm):
    # Same style, different content vs same content, different style: raw bag-of-words pairs by style, rewrites by
    # content. 512 dimensions: few enough hash collisions that shared words decide.
    fake_encoder = FakeEncoder(dim=512)
    chatty, formal = "hey dude omg haha lol {} cheers", "dear sir madam kindly note {} yours faithfully regards"
    texts = [chatty.format("teh rainn falls in spring"), chatty.format("bred needs yeast to rise"),
             formal.format("the rain falls in spring"), formal.format("bread needs yeast to rise")]
    content = ["rain", "bread", "rain", "bread"]
    style = ["chatty", "chatty", "formal", "formal"]
    raw = embed(fake_encoder, texts, "document", EmbedOptions(progress=False, cache=None))
    rewritten = embed(RewritingEncoder(fake_encoder, make_llm(), max_words=40, progress=False), texts, "document",
                      EmbedOptions(progress=False, cache=None))
    assert neighbour_agreement(raw, style) == 1.0 and neighbour_agreement(raw, content) == 0.0
    assert neighbour_agreement(rewritten, content) == 1.0


# ------------------------------------------------------------------------------------------------ aspects

PLANTED = {  # climate pairs (a, b), (c, d); cuisine pairs (a, c), (b, d); size pairs (a, d), (b, c)
    "a": "Avalon. climate: frozen snowy winters. cuisine: raw fish sushi. size: tiny hamlet.",
    "b": "Brigadoon. size: huge megacity sprawl. cuisine: spicy chili curry. climate: frozen snowy winters.",
    "c": "Camelot. cuisine: raw fish sushi. climate: hot desert sand. size: huge megacity sprawl.",
    "d": "Dunsinane. climate: hot desert sand. size: tiny hamlet. cuisine: spicy chili curry.",
}


def test_aspects_give_different_neighbours(make_llm, fake_encoder):
    corpus = Corpus.from_texts(PLANTED)
    result = aspect_neighbours(corpus, fake_encoder, make_llm(), ["climate", "cuisine", "size"], k=1,
                               options=EmbedOptions(progress=False))
    assert {k: v[0] for k, v in result["climate"].items()} == {"a": "b", "b": "a", "c": "d", "d": "c"}
    assert {k: v[0] for k, v in result["cuisine"].items()} == {"a": "c", "c": "a", "b": "d", "d": "b"}
    assert {k: v[0] for k, v in result["size"].items()} == {"a": "d", "d": "a", "b": "c", "c": "b"}


def test_aspect_embeddings_report_stats_and_user_aspects(make_llm, fake_encoder, server):
    texts = list(PLANTED.values()) + ["Erewhon. nothing is said here."]
    stats: dict = {}
    vectors = aspect_embeddings(texts, fake_encoder, make_llm(), ["climate", "What is the size of {text}"],
                                options=EmbedOptions(progress=False), stats=stats)
    assert set(vectors) == {"climate", "What is the size of {text}"}
    assert vectors["climate"].shape == (5, fake_encoder.dimension)
    assert stats["climate"].fallbacks == {"none": 1} and stats["climate"].rewritten == 4
    # The user's aspect string is the prompt itself.
    assert any(r["messages"][-1]["content"].startswith("What is the size of Avalon") for r in server.requests)
    assert cosine(vectors["climate"][0], vectors["climate"][1]) == pytest.approx(1.0, abs=1e-6)


def test_similarity_by_pair_kind():
    # Dimensions: rain, bread, memo style. Memos share the style dimension; chats have none.
    v = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1]], dtype=np.float32)
    kinds = similarity_by_pair_kind(v, ["rain", "rain", "bread", "bread"], ["chat", "memo", "chat", "memo"])
    assert kinds["same content, other style"] == pytest.approx(2 ** -0.5)
    assert kinds["same style, other content"] == pytest.approx(0.25)  # chat pair 0, memo pair 1/2
    assert kinds["unrelated"] == pytest.approx(0.0)


def test_nearest_neighbours_and_agreement():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert nearest_neighbours(v, ["a", "b", "c", "d"], k=2) == {"a": ["b", "d"], "b": ["a", "d"], "c": ["d", "b"],
                                                                "d": ["c", "b"]}
    assert neighbour_agreement(v, ["x", "x", "y", "y"]) == 1.0
    assert neighbour_agreement(v, ["x", "y", "x", "y"]) == 0.0


def test_pca_is_deterministic_and_plot_writes_a_figure(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 8)).astype(np.float32)
    coords = pca_2d(v)
    assert coords.shape == (12, 2)
    np.testing.assert_allclose(coords, pca_2d(v * 3.0), atol=1e-6)  # cosine geometry: scale does not matter
    labels = {"climate": ["hot", "cold"] * 6}
    path = tmp_path / "maps.png"
    fig = plot_aspect_maps({"raw": v, "climate": v[::-1]}, labels, [f"c{i}" for i in range(12)], path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2


def test_load_labelled_corpus_reads_the_cities():
    corpus, labels = load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["climate", "cuisine"], limit=12)
    assert len(corpus) == 12 and set(labels) == {"climate", "cuisine"} and len(labels["climate"]) == 12
    corpus, labels = load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["size"], ids=["oslo", "lima"])
    assert corpus.ids == ["oslo", "lima"] and labels == {"size": ["large", "megacity"]}
    with pytest.raises(InputError, match="atlantis"):
        load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["size"], ids=["atlantis"])
    with pytest.raises(InputError, match="no 'population' label"):
        load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["population"])


# ------------------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
@pytest.mark.llm
def test_real_local_llm_rewrites_and_describes_aspects(tmp_path, fake_encoder):
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not importable (pip install 'qkrag[llm]')")
    from qkrag.llm.local import default_llm

    texts = ["hey so like Oslo gets SUPER cold in winter lol, snow everywhere, and ppl eat tons of salmon",
             "<ul><li>City: Lima</li><li>Rain: almost never</li><li>Food: ceviche</li></ul>",
             "Marrakesh is hot and dry; its markets sell tagines slow-cooked with lamb and apricots."]
    with default_llm(cache=tmp_path / "llm.sqlite") as llm:
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


def test_extractive_aspect_keeps_the_sentence_about_the_aspect(fake_encoder):
    from qkrag.embed.wrappers import ExtractiveAspectEncoder

    text = "Winters are cold with snow and frost. People eat bread, cheese and fish stew. About a million people live there."
    climate = ExtractiveAspectEncoder(fake_encoder, "winters cold snow frost")
    food = ExtractiveAspectEncoder(fake_encoder, "people eat bread cheese fish")
    assert climate.transform([text]) == ["Winters are cold with snow and frost."]
    assert food.transform([text]) == ["People eat bread, cheese and fish stew."]
    assert climate.fingerprint != food.fingerprint and climate.fingerprint.endswith(fake_encoder.fingerprint)
    assert ExtractiveAspectEncoder(fake_encoder, "x", top=3).transform([text]) == [text]
    # queries pass through unchanged by default: a query is already about what the user asks
    np.testing.assert_allclose(climate.embed_batch(["cold"], "query"), fake_encoder.embed_batch(["cold"], "query"))


def test_extractive_aspect_built_in_names_have_descriptions():
    from qkrag.llm.prompts import aspect_description

    assert "temperature" in aspect_description("climate") and aspect_description("my own words") == "my own words"

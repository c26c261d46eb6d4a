"""qkrag.embed.wrappers: rewriting, aspect and extractive-aspect encoders around a base encoder, driven through the
real `LLM` class against the tidy fake model of tests/fakes.py, with its FakeEncoder."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.analysis.aspects import neighbour_agreement
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, embed
from qkrag.embed.wrappers import AspectEncoder, RewritingEncoder, make_rewriting_encoder
from qkrag.errors import IndexMismatchError, InputError, LLMError
from qkrag.llm.prompts import PromptTemplate

from tests.fakes import FakeEncoder, free_port
from tests.fakes import make_tidy_llm, tidy_llm_server  # noqa: F401 (the fixtures make_llm and server)


def test_an_llm_that_is_down_stores_nothing_and_a_later_run_rewrites(make_llm, server, tmp_path):
    """`index --rewrite` with the LLM down stores nothing under the rewriting encoder's name: the build fails, and the
    next one, with the LLM up, rewrites every text."""
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


def test_instruction_aspect_puts_the_aspect_description_before_each_document(fake_encoder):
    from qkrag.embed.wrappers import InstructionAspectEncoder
    from qkrag.llm.prompts import aspect_description

    climate = InstructionAspectEncoder(fake_encoder, "climate")
    text = "Lisbon has dry summers."
    assert climate.transform([text]) == [aspect_description("climate") + ": " + text]
    np.testing.assert_allclose(climate.embed_batch([text], "document"),
                               fake_encoder.embed_batch([aspect_description("climate") + ": " + text], "document"))
    # queries pass through, and each aspect has its own vectors (fingerprint) over the same base
    np.testing.assert_allclose(climate.embed_batch([text], "query"), fake_encoder.embed_batch([text], "query"))
    size = InstructionAspectEncoder(fake_encoder, "size")
    assert climate.fingerprint != size.fingerprint and size.fingerprint.endswith(fake_encoder.fingerprint)
    assert InstructionAspectEncoder(fake_encoder, "noise level").transform(["x"]) == ["noise level: x"]


def test_aspect_method_defaults_to_extraction_and_names_the_llm_routes():
    from qkrag.embed.wrappers import aspect_method

    assert aspect_method("climate") == ("extract", "climate")
    assert aspect_method("extract:noise level") == ("extract", "noise level")
    assert aspect_method("llm:climate") == ("llm", "climate")
    assert aspect_method("Sports teams of {text}") == ("llm", "Sports teams of {text}")
    with pytest.raises(InputError, match="empty"):
        aspect_method(" ")

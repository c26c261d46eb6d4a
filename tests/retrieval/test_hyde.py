"""HyDE with the real LLM client against the fake OpenAI-compatible server, the fake encoder and exact search."""

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.llm.client import LLM, LLMConfig
from qkrag.retrieval.hyde import HydeRetriever
from qkrag.retrieval.index import ExactIndex

from tests.fakes import FakeEncoder, FakeOpenAIServer, last_message

DOCS = {"tea": "green tea leaves steeped in hot water", "bread": "flour yeast dough baked in an oven",
        "rain": "clouds release water droplets as rain"}
ANSWERS = {"morning drink baked": "Here is the passage:\n\ngreen tea leaves steeped in hot water",
           "what falls from clouds": "I'm sorry, but I can't help with that request."}


def answer(body: dict) -> str:
    question = last_message(body).split("Question:", 1)[1].strip()
    return ANSWERS.get(question, "flour yeast dough")


@pytest.fixture
def server():
    with FakeOpenAIServer(chat=answer) as s:
        yield s


def make(server, tmp_path, **options):
    encoder = FakeEncoder(64, spread=True)
    index = ExactIndex(list(DOCS), encoder.embed_batch(list(DOCS.values()), "document"), fingerprint=encoder.fingerprint)
    llm = LLM(LLMConfig(model="fake-model", base_url=server.url, timeout=5.0, max_retries=0, backoff=0.0),
              cache=tmp_path / "llm.sqlite")
    return HydeRetriever(encoder, index, llm, **options), llm


def test_the_hypothetical_answer_finds_what_the_query_alone_does_not(server, tmp_path):
    hyde, llm = make(server, tmp_path)
    query_alone = hyde.index.search_vectors(hyde.encoder.embed_batch(["morning drink baked"], "query"), 1)[0][0].id
    assert query_alone == "bread"  # the one shared word wins for the query alone
    assert hyde.search(["morning drink baked"], 1)[0][0].id == "tea"
    # the prompt carries the query and the word limit (prompts/hyde.toml)
    assert "morning drink baked" in last_message(server.requests[0]) and "80 words" in last_message(server.requests[0])
    assert hyde.stats.as_dict() | {"llm_seconds": 0} == {"queries": 1, "sent": 1, "cached": 0, "failed": 0,
                                                         "llm_seconds": 0, "calls_per_query": 1.0,
                                                         "seconds_per_sent": hyde.stats.seconds_per_sent}
    llm.close()


def test_vectors_average_the_unit_query_and_answer(server, tmp_path):
    hyde, llm = make(server, tmp_path, weight=0.5)
    q = hyde.encoder.embed_batch(["bread please"], "query")[0]
    a = hyde.encoder.embed_batch(["flour yeast dough"], "document")[0]
    expected = 0.5 * q / np.linalg.norm(q) + 0.5 * a / np.linalg.norm(a)
    np.testing.assert_allclose(hyde.vectors(["bread please"])[0], expected, atol=1e-6)
    llm.close()


def test_a_rerun_is_served_from_the_cache(server, tmp_path):
    hyde, llm = make(server, tmp_path)
    first = hyde.search(["morning drink baked", "bread please"], 2)
    llm.close()
    again, llm = make(server, tmp_path)
    assert again.search(["morning drink baked", "bread please"], 2) == first
    assert server.hits == 2 and again.stats.sent == 0 and again.stats.cached == 2
    assert again.stats.calls_per_query == 1.0 and again.stats.seconds_per_sent is None
    llm.close()


def test_an_unusable_answer_falls_back_to_the_query_and_is_counted(server, tmp_path):
    hyde, llm = make(server, tmp_path)
    vectors = hyde.vectors(["what falls from clouds"])
    q = hyde.encoder.embed_batch(["what falls from clouds"], "query")[0]
    np.testing.assert_allclose(vectors[0], q / np.linalg.norm(q), atol=1e-6)
    assert hyde.stats.failed == 1
    llm.close()


def test_bad_settings_are_refused(server, tmp_path):
    with pytest.raises(InputError, match="outside"):
        make(server, tmp_path, weight=1.5)
    with pytest.raises(InputError, match="needs a \\{query\\} slot"):
        make(server, tmp_path, template="rewrite")

"""qkrag.llm.client against a fake OpenAI-compatible server on 127.0.0.1 that can misbehave on cue."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAIServer
from qkrag.llm import prompts
from qkrag.cache import DiskCache
from qkrag.errors import InputError, LLMError
from qkrag.llm.client import LLM, LLMConfig

SECRET = "sk-test-SECRET-7f3a9c1e5b"


@pytest.fixture
def server():
    s = FakeOpenAIServer()
    yield s
    s.close()


@pytest.fixture
def make_llm(server, tmp_path):
    made: list[LLM] = []

    def make(cache: object = "default", **overrides) -> LLM:
        cfg = LLMConfig(model="fake-model", base_url=server.url, api_key=SECRET, timeout=1.0, max_retries=2,
                        backoff=0.0, concurrency=4)
        llm = LLM(replace(cfg, **overrides), cache=tmp_path / "llm.sqlite" if cache == "default" else cache)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def test_complete_returns_text_usage_and_template_hash(make_llm, server):
    llm = make_llm()
    prompt = prompts.render("rewrite", text="Some passage.", max_words=20)
    out = llm.complete(prompt)
    assert out.text.startswith("answer to: Rewrite the following text")
    assert (out.prompt_tokens, out.completion_tokens, out.cached, out.attempts) == (10, 5, False, 1)
    assert out.template == "rewrite" and out.template_hash == prompts.load_template("rewrite").hash
    assert llm.calls_made == 1 and llm.cache_hits == 0
    assert llm.usage.total_tokens == 15 and llm.usage.cost is None
    sent = server.requests[0]
    assert sent["model"] == "fake-model" and sent["temperature"] == 0.0 and sent["max_tokens"] == 256
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_rerun_makes_zero_http_calls(make_llm, server, tmp_path):
    items = [f"prompt {i}" for i in range(6)]
    first = make_llm().complete_many(items, progress=False)
    assert server.hits == 6
    again = make_llm()  # a new client on the same cache file: what a re-run of a script does
    second = again.complete_many(items, progress=False)
    single = again.complete("prompt 3")
    assert server.hits == 6, "a re-run must not send any request"
    assert again.calls_made == 0 and again.cache_hits == 7
    assert [c.text for c in second] == [c.text for c in first] and all(c.cached for c in second)
    assert single.text == first[3].text


def test_cache_key_covers_model_messages_and_parameters(make_llm, server):
    llm = make_llm()
    llm.complete("same")
    llm.complete("same", temperature=0.5)
    llm.complete([{"role": "system", "content": "be brief"}, {"role": "user", "content": "same"}])
    make_llm(model="other-model").complete("same")
    llm.complete("same")
    assert server.hits == 4 and llm.cache_hits == 1


def test_no_cache_when_disabled(make_llm, server):
    llm = make_llm(cache=False)
    llm.complete("x")
    llm.complete("x")
    assert server.hits == 2 and llm.cache_hits == 0


def test_retries_5xx_then_succeeds(make_llm, server):
    server.script.extend(["500", "500"])
    llm = make_llm()
    out = llm.complete("hello")
    assert out.text.startswith("answer to: hello") and out.attempts == 3
    assert server.hits == 3 and llm.calls_made == 3 and llm.retries == 2


def test_retries_after_timeout(make_llm, server):
    server.script.append("slow")
    server.slow_seconds = 2.0
    llm = make_llm(timeout=0.5)
    t0 = time.monotonic()
    out = llm.complete("hello")
    assert out.attempts == 2 and server.hits == 2
    assert time.monotonic() - t0 < 2.0 + 0.5  # gave up on the slow one at the timeout, did not wait it out


def test_garbled_body_is_retried(make_llm, server):
    server.script.append("badjson")
    assert make_llm().complete("hello").attempts == 2


@pytest.mark.parametrize("fault", ["empty", "refusal", "garbled"])
def test_unusable_output_is_retried_with_some_randomness(make_llm, server, fault):
    server.script.append(fault)
    llm = make_llm()
    out = llm.complete("hello")
    assert out.attempts == 2 and llm.retries == 1
    # temperature 0 gives the same refusal again on a real server: the retry samples a little.
    assert server.requests[0]["temperature"] == 0.0 and server.requests[1]["temperature"] == 0.7
    # ...but the cache holds it under the original request, so the re-run hits.
    assert llm.complete("hello").cached


@pytest.mark.parametrize("fault", ["empty", "refusal", "garbled", "500"])
def test_persistent_fault_raises_llmerror_and_caches_nothing(make_llm, server, tmp_path, fault):
    server.script.extend([fault] * 3)
    llm = make_llm()
    with pytest.raises(LLMError, match="failed after 3 tries"):
        llm.complete("hello")
    assert server.hits == 3
    assert len(DiskCache(tmp_path / "llm.sqlite")) == 0


def test_client_errors_are_not_retried(make_llm, server):
    server.script.append("401")
    with pytest.raises(LLMError, match="HTTP 401.*Fix: check OPENAI_API_KEY"):
        make_llm().complete("hello")
    assert server.hits == 1


def test_server_down_is_a_clear_error(make_llm, server):
    url = server.url
    server.close()
    llm = make_llm(base_url=url, max_retries=1)
    with pytest.raises(LLMError) as info:
        llm.complete("hello")
    message = str(info.value)
    assert "cannot connect" in message and url in message and "Fix:" in message
    assert llm.calls_made == 2


def test_check_rejects_output_and_retries(make_llm, server):
    llm = make_llm()
    seen = []

    def is_yes_no(text: str) -> bool:
        seen.append(text)
        return len(seen) > 1  # reject the first answer only

    out = llm.complete("judge this", check=is_yes_no)
    assert out.attempts == 2 and server.hits == 2 and len(seen) == 2


def test_complete_many_keeps_order_dedupes_and_skips(make_llm, server):
    items = ["a", "b", "ALWAYS_REFUSE c", "a", "d"]
    llm = make_llm()
    out = llm.complete_many(items, on_error="skip", progress=False)
    assert [None if c is None else c.text.split(": ")[1].split(" (")[0] for c in out] == ["a", "b", None, "a", "d"]
    assert llm.skipped == 1
    assert server.hits == 3 + 3  # a, b, d once each (the duplicate "a" is sent once) + 3 tries for the refusal


def test_complete_many_raise(make_llm, server):
    with pytest.raises(LLMError):
        make_llm().complete_many(["ok", "ALWAYS_REFUSE"], on_error="raise", progress=False)


def test_complete_many_bounded_concurrency(make_llm, server):
    server.delay = 0.2
    llm = make_llm(concurrency=3)
    out = llm.complete_many([f"q{i}" for i in range(9)], progress=False)
    assert all(out) and server.hits == 9
    # the server saw three requests at once, never more: parallel and bounded, measured without a clock
    assert server.max_active == 3


def test_complete_many_progress_bar_counts(make_llm, server, capsys):
    make_llm().complete_many(["x", "y"], progress=True, desc="judging")
    err = capsys.readouterr().err
    assert "judging" in err and "2/2" in err


def test_cost_accounting(make_llm, server):
    llm = make_llm(price_per_1k_prompt=1.0, price_per_1k_completion=2.0)
    llm.complete_many(["x", "y"], progress=False)
    assert llm.usage.prompt_tokens == 20 and llm.usage.completion_tokens == 10
    assert llm.usage.cost == pytest.approx((20 * 1.0 + 10 * 2.0) / 1000)
    assert llm.stats()["calls_made"] == 2


def test_api_key_never_leaks(make_llm, server, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # every logger, openai's and httpx's included, at their chattiest
    for name in ("openai", "httpx", "httpcore", "qkrag"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    server.script.extend(["echo500", "echo500", "echo500", "401"])
    llm = make_llm()
    errors = []
    for _ in range(2):
        with pytest.raises(LLMError) as info:
            llm.complete("hello")
        errors.append(info.value)
    llm.complete("fine")
    llm.complete_many(["p", "q"], progress=True)
    assert server.auth_headers[0] == f"Bearer {SECRET}", "the key must reach the server (else this test proves nothing)"
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(llm), repr(llm.config), str(llm.config), json.dumps(llm.config.describe()), json.dumps(llm.stats())]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    out = capsys.readouterr()
    texts += [out.out, out.err]
    for text in texts:
        assert SECRET not in text
    assert "***" in str(errors[0])  # the echoed header was there, and was scrubbed
    llm.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_config_from_env():
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": SECRET, "QKRAG_LLM_MODEL": "m"}
    cfg = LLMConfig.from_env(env, concurrency=2)
    assert (cfg.base_url, cfg.api_key, cfg.model, cfg.concurrency) == ("http://127.0.0.1:9/v1", SECRET, "m", 2)
    assert SECRET not in repr(cfg) and cfg.describe()["api_key"] == "set"
    with pytest.raises(InputError, match="QKRAG_LLM_MODEL"):
        LLMConfig.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    with pytest.raises(InputError, match="OPENAI_BASE_URL"):
        LLMConfig.from_env({"QKRAG_LLM_MODEL": "m"})
    with pytest.raises(InputError, match="max_retries"):
        LLMConfig(model="m", max_retries=-1)


def test_bad_prompts_and_parameters_are_input_errors(make_llm, server):
    llm = make_llm()
    with pytest.raises(InputError):
        llm.complete("   ")
    with pytest.raises(InputError):
        llm.complete([{"content": "no role"}])
    with pytest.raises(InputError, match="'n'"):
        llm.complete("x", n=3)
    with pytest.raises(InputError):
        llm.complete_many(["x"], on_error="ignore")
    assert server.hits == 0


def test_cache_entries_are_whole(make_llm, server, tmp_path: Path):
    llm = make_llm()
    llm.complete_many([f"x{i}" for i in range(5)], progress=False)
    cache = DiskCache(tmp_path / "llm.sqlite")
    assert len(cache) == 5
    rows = cache._db.execute("SELECT value FROM kv").fetchall()
    for (blob,) in rows:
        record = json.loads(bytes(blob))
        assert record["text"].startswith("answer to:") and record["prompt_tokens"] == 10


def test_a_cache_passed_in_stays_open_after_close(make_llm, server, tmp_path):
    shared = DiskCache(tmp_path / "shared.sqlite")
    llm = make_llm(cache=shared)
    llm.complete("x")
    llm.close()
    assert len(shared) == 1  # still usable: the caller owns it
    shared.close()


# ------------------------------------------------------------------------------------------------ hangs


@pytest.fixture
def silent():
    """A hung LLM server: it reads each request and never answers (until the test ends)."""
    with FakeOpenAIServer(mode="slow", slow_seconds=60) as s:
        yield s


def test_a_hung_server_fails_after_two_timeouts_whatever_max_retries_says(silent, tmp_path):
    from qkrag.errors import LLMUnavailableError

    llm = LLM(LLMConfig(model="m", base_url=silent.url, timeout=1.0, max_retries=5, backoff=0.0), cache=False)
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match=r"failed after 2 tries \(last: timed out after 1 s\).*QKRAG_TIMEOUT"):
        llm.complete("hello")
    assert time.monotonic() - started < 4 and llm.calls_made == 2
    llm.close()


def test_a_hung_server_ends_a_whole_batch_in_about_one_request_s_time(silent):
    llm = LLM(LLMConfig(model="m", base_url=silent.url, timeout=1.0, max_retries=3, backoff=0.0, concurrency=2),
              cache=False)
    started = time.monotonic()
    out = llm.complete_many([f"prompt {i}" for i in range(12)], on_error="skip", progress=False)
    assert out == [None] * 12 and llm.skipped == 12
    assert time.monotonic() - started < 6  # 2 tries x 1 s for the first ones, not 12 x 4 x 1 s
    assert llm.calls_made <= 6
    llm.close()


def test_the_llm_timeout_defaults_to_a_minute_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv("QKRAG_TIMEOUT", raising=False)
    assert LLMConfig(model="m").timeout == 60.0
    monkeypatch.setenv("QKRAG_TIMEOUT", "5")
    assert LLMConfig(model="m").timeout == 5.0 and LLMConfig(model="m", timeout=9).timeout == 9


# ------------------------------------------------------------------------------------------------ cache keys


def test_answers_of_one_server_are_never_served_for_another_with_the_same_model_name(server, tmp_path):
    other = FakeOpenAIServer()
    try:
        cache = DiskCache(tmp_path / "shared.sqlite")
        cfg = LLMConfig(model="same-name", base_url=server.url, timeout=2.0, max_retries=0, backoff=0.0)
        with LLM(cfg, cache=cache) as first:
            first.complete("hello")
        with LLM(replace(cfg, base_url=other.url), cache=cache) as second:
            assert not second.complete("hello").cached and other.hits == 1
        with LLM(replace(cfg, base_url=server.url + "/"), cache=cache) as again:  # the same server, spelled apart
            assert again.complete("hello").cached and server.hits == 1
    finally:
        other.close()


def test_the_embedded_server_keys_its_cache_as_before(tmp_path):
    """Its port changes every run, so it keys on the model alone (pinned by hash), exactly as before scopes
    existed: the answers already cached for it stay valid."""
    from qkrag.cache import content_hash
    from qkrag.llm.client import _CACHE_VERSION

    embedded = LLM(LLMConfig(model="qwen", base_url="http://127.0.0.1:41234/v1", cache_scope=""), cache=False)
    moved = LLM(LLMConfig(model="qwen", base_url="http://127.0.0.1:50000/v1", cache_scope=""), cache=False)
    messages = [{"role": "user", "content": "hi"}]
    params = {"temperature": 0.0, "max_tokens": 256}
    assert embedded._request("hi", {}).key == moved._request("hi", {}).key == \
        content_hash(_CACHE_VERSION, "qwen", messages, params)
    remote = LLM(LLMConfig(model="qwen", base_url="http://127.0.0.1:41234/v1"), cache=False)
    assert remote.cache_scope == "http://127.0.0.1:41234/v1" and remote._request("hi", {}).key != \
        embedded._request("hi", {}).key


# ------------------------------------------------------------------------------------------------ a fleet


def _echo(body: dict) -> str:
    return "answer to " + body["messages"][-1]["content"]


def _fleet_llm(fleet, tmp_path, name: str, **overrides) -> LLM:
    cfg = dict(model="fleet-model", base_url=fleet.url, api_key="sk-test", timeout=10.0, max_retries=0, backoff=0.0)
    return LLM(LLMConfig(**{**cfg, **overrides}), cache=tmp_path / f"{name}.sqlite")


def test_concurrency_puts_that_many_requests_in_flight_and_keeps_the_order(tmp_path):
    prompts_ = [f"question {i}" for i in range(40)]
    answers = {}
    for concurrency in (1, 8):
        fleet = FakeOpenAIServer(chat=_echo, delay=(0.01, 0.08))
        try:
            with _fleet_llm(fleet, tmp_path, f"c{concurrency}", concurrency=concurrency) as llm:
                answers[concurrency] = [c.text for c in llm.complete_many(prompts_, progress=False)]
            if concurrency == 1:
                assert fleet.max_active == 1
            else:  # overlap, never more than asked: the server saw several requests at once
                assert 2 <= fleet.max_active <= 8, fleet.max_active
            assert fleet.hits == len(prompts_)
        finally:
            fleet.close()
    assert answers[1] == answers[8] == [_echo({"messages": [{"content": p}]}) for p in prompts_]


def test_a_rate_limited_fleet_is_waited_out_without_using_up_retries(tmp_path):
    fleet = FakeOpenAIServer(chat=_echo, delay=(0.01, 0.08), limit=2, retry_after="0.05")  # 429 for a 3rd in flight
    try:
        with _fleet_llm(fleet, tmp_path, "limited", concurrency=8) as llm:  # max_retries=0: no retry to spend
            out = llm.complete_many([f"q{i}" for i in range(24)], progress=False)
        assert all(c is not None for c in out) and fleet.rejected > 0
        assert llm.rate_limited == fleet.rejected and llm.retries == 0
        assert fleet.max_active <= 2
    finally:
        fleet.close()


def test_retry_after_pauses_every_worker_not_just_the_one_told(tmp_path):
    fleet = FakeOpenAIServer(chat=_echo, retry_after="0.6")
    fleet.script.append("429")  # the first request is told to wait
    try:
        with _fleet_llm(fleet, tmp_path, "pause", concurrency=4) as llm:
            first = threading.Thread(target=llm.complete, args=("told to wait",))
            first.start()
            deadline = time.monotonic() + 30
            while llm.rate_limited == 0:  # counted once the pause is set
                assert time.monotonic() < deadline
                time.sleep(0.005)
            other = llm.complete("another worker")  # another thread's request, sent during the pause
            first.join(30)
        assert other.text == "answer to another worker"
        rejected_at = fleet.arrivals[0]
        assert all(t - rejected_at >= 0.55 for t in fleet.arrivals[1:]), [t - rejected_at for t in fleet.arrivals]
    finally:
        fleet.close()


@pytest.mark.parametrize("headers, seconds", [({"retry-after": "3"}, 3.0), ({"retry-after-ms": "250"}, 0.25),
                                              ({"retry-after": "soon"}, None), ({}, None)])
def test_retry_after_reads_seconds_and_milliseconds(headers, seconds):
    from qkrag.llm.client import retry_after

    class Response:
        def __init__(self):
            self.headers = headers

    class RateLimited(Exception):
        status_code = 429
        response = Response()

    assert retry_after(RateLimited()) == seconds


def test_an_answer_that_echoes_the_key_is_redacted_before_it_is_cached_or_returned(tmp_path):
    key = "plain-key-without-a-known-shape-42"  # no sk- prefix: only knowing the key can find it
    with FakeOpenAIServer(chat=lambda body: f"Basic idea. You sent Authorization: Bearer {key} to me.") as server:
        llm = LLM(LLMConfig(model="m", base_url=server.url, api_key=key, timeout=2.0, max_retries=0),
                  cache=tmp_path / "llm.sqlite")
        answer = llm.complete("hello").text
        again = llm.complete("hello")
        llm.close()
    assert server.auth_headers == [f"Bearer {key}"]
    assert key not in answer and answer.startswith("Basic idea.") and "Bearer ***" in answer
    assert again.cached and again.text == answer
    assert key.encode() not in (tmp_path / "llm.sqlite").read_bytes()


@pytest.mark.parametrize("url, secret", [
    ("http://127.0.0.1:{port}/v1?api_key=URLSECRET123", "URLSECRET123"),
    ("http://user:URLSECRET123@127.0.0.1:{port}/v1", "URLSECRET123"),
])
def test_a_key_inside_the_server_url_is_never_in_a_message(url, secret):
    from tests.fakes import free_port

    llm = LLM(LLMConfig(model="m", base_url=url.format(port=free_port()), api_key="k", timeout=1.0, max_retries=0),
              cache=None)
    with pytest.raises(LLMError) as info:
        llm.complete("hello")
    assert secret not in str(info.value) and "***" in str(info.value)


def test_a_retry_after_past_the_deadline_fails_at_once_with_a_message(tmp_path):
    with FakeOpenAIServer(mode="429", retry_after="3600") as server:
        llm = LLM(LLMConfig(model="m", base_url=server.url, api_key="k", timeout=2.0, max_retries=3), cache=None)
        assert llm.client is not None  # the openai client made (and imported) before the clock starts
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"asked to wait 3600 s more \(Retry-After\), past its deadline of 8 s"):
            llm.complete("hello")
        llm.close()
    assert time.monotonic() - start < 6 and server.hits == 1


def test_retry_after_waits_count_against_the_deadline_and_long_ones_are_announced(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with FakeOpenAIServer(mode="429", retry_after="6") as server:
        llm = LLM(LLMConfig(model="m", base_url=server.url, api_key="k", timeout=2.0, max_retries=0, deadline=20),
                  cache=None)
        start = time.monotonic()
        with pytest.raises(LLMError, match="deadline of 20 s"):
            llm.complete("hello")
        llm.close()
    assert time.monotonic() - start < 21.5 and server.hits >= 2  # waited out, then stopped before the deadline
    assert "asked to wait 6 s (Retry-After); waiting" in caplog.text

"""The one client for every LLM qkrag talks to: any OpenAI-compatible chat endpoint through the `openai` package.

    >>> from qkrag.llm.client import LLM, LLMConfig
    >>> llm = LLM(LLMConfig.from_env())                     # OPENAI_BASE_URL, OPENAI_API_KEY, QKRAG_LLM_MODEL
    >>> llm.complete("Write a haiku about caching").text
    >>> results = llm.complete_many([prompts.render("judge", query=q, text=t) for q, t in pairs], on_error="skip")
    >>> llm.calls_made, llm.cache_hits, llm.usage

With no server of your own, `qkrag.llm.local.default_llm()` returns the same `LLM` talking to an in-process llama.cpp
server. What this layer adds over a bare client:

* a content-hash cache of (model, messages, parameters) -> output, so a re-run sends zero requests; only usable
  outputs are stored, and each one in a single SQLite transaction, so a kill never leaves half an entry;
* retries with exponential backoff on connection errors, timeouts, 429 and 5xx, and on unusable output (empty,
  refusal, garbled, or failing the caller's `check`); after the last try an `LLMError`, or for `complete_many` with
  `on_error="skip"` a counted skip (`None` in the results);
* bounded concurrency with a thread pool and a tqdm bar (`concurrency` requests in flight: a fleet behind one
  OpenAI-compatible endpoint, e.g. vLLM, takes many); a 429/503 with `Retry-After` pauses every worker of this
  client until then, not just the one that got it; token and cost accounting;
* one deadline per request (`LLMConfig.total_seconds`: the tries' worth of the timeout), every try, backoff and
  Retry-After wait included: a server asking to wait past it fails the request at once, and a long wait is announced.

The API key is a secret: it is excluded from reprs, never logged, never part of a cache key or file, and scrubbed
from every error message (a misbehaving server may echo request headers into its error body).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qkrag.cache import DiskCache, content_hash, default_cache_dir, default_timeout, quiet, server_identity
from qkrag.errors import LLMError, LLMUnavailableError, fail, redact, redact_secrets, scrub_freed_memory
from qkrag.llm.prompts import Prompt, output_problem

if TYPE_CHECKING:  # openai is imported lazily: building a config or reading the cache should not pay for it
    import openai

__all__ = ["Completion", "LLM", "LLMConfig", "Usage", "PromptLike", "retry_after"]

log = logging.getLogger(__name__)

#: What `complete` accepts: a plain user prompt, chat messages, or a rendered `qkrag.llm.prompts.Prompt`.
PromptLike = str | Sequence[Mapping[str, str]] | Prompt

#: Tries of one request that may end in a timeout before it is given up, whatever max_retries says.
_TIMEOUT_TRIES = 2
_UNAVAILABLE_FIX = ("check that the server is up and answers at that address (raise the timeout, $QKRAG_TIMEOUT, "
                    "for a slow one)")

# Sent as the key to servers that need none (llama.cpp, vLLM, Ollama): the openai client refuses to start without one.
_NO_KEY = "sk-no-key-required"
_CACHE_VERSION = "qkrag-llm-v1"


@dataclass(frozen=True)
class LLMConfig:
    """How to reach a model and how hard to try. Immutable; `dataclasses.replace(cfg, model=...)` makes a variant.

    `temperature` and `max_tokens` are the defaults for every request (a call may override them); the price fields,
    when set, turn token counts into `Usage.cost` in your currency per 1,000 tokens.
    """

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a repr
    # Seconds per request ($QKRAG_TIMEOUT, else 60). A request that times out twice is given up: a hung server stays
    # hung, and each try already waited the full timeout.
    timeout: float = field(default_factory=default_timeout)
    max_retries: int = 3  # retries after the first try, for transport faults and for unusable output alike
    backoff: float = 0.5  # first wait in seconds; doubles each retry, with jitter, capped at 30 s
    concurrency: int = 4
    temperature: float = 0.0  # deterministic by default, so the cache and re-runs agree
    max_tokens: int = 256
    price_per_1k_prompt: float | None = None
    price_per_1k_completion: float | None = None
    # What the cache keys on besides the model name, so one server's answers are never served for another's model of
    # the same name. None: the base URL. The embedded server passes "": its port changes every run (the URL would
    # defeat the cache), and its model file is pinned by hash, so its name is identity enough.
    cache_scope: str | None = None
    # Seconds one request may take in all: every try, backoff and Retry-After wait included. None: the tries' worth
    # of the timeout, (max_retries + 1) x timeout, so --timeout / $QKRAG_TIMEOUT caps it.
    deadline: float | None = None

    @property
    def total_seconds(self) -> float:
        return float(self.deadline) if self.deadline is not None else self.timeout * (self.max_retries + 1)

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise fail("LLM config", "no model name is set", "set QKRAG_LLM_MODEL (or LLMConfig(model=...))")
        if self.deadline is not None and not self.deadline > 0:
            raise fail("LLM config deadline", f"{self.deadline!r} is not positive", "give deadline a value > 0")
        for name in ("timeout", "backoff", "max_tokens", "concurrency"):
            if not getattr(self, name) > 0 and not (name == "backoff" and getattr(self, name) == 0):
                raise fail(f"LLM config {name}", f"{getattr(self, name)!r} is not positive", f"give {name} a value > 0")
        if self.max_retries < 0:
            raise fail("LLM config max_retries", f"{self.max_retries} is negative", "use 0 for no retries")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LLMConfig:
        """Read `OPENAI_BASE_URL`, `OPENAI_API_KEY` and `QKRAG_LLM_MODEL`; keyword `overrides` win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "base_url": env.get("OPENAI_BASE_URL") or None,
            "api_key": env.get("OPENAI_API_KEY") or None,
            "model": env.get("QKRAG_LLM_MODEL", ""),
        }
        values.update(overrides)
        if not values.get("base_url") and not values.get("api_key"):
            raise fail(
                "LLM config",
                "neither OPENAI_BASE_URL nor OPENAI_API_KEY is set",
                "point OPENAI_BASE_URL at an OpenAI-compatible server (and QKRAG_LLM_MODEL at its model), "
                "or use qkrag.llm.local.default_llm() for the embedded local model",
            )
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict, safe to log or write to a run record: the key appears only as set/unset."""
        out = {k: v for k, v in self.__dict__.items() if k != "api_key"}
        out["api_key"] = "set" if self.api_key else "unset"
        return out


@dataclass(frozen=True)
class Completion:
    """One usable model output and where it came from."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False  # served from the cache: no request was sent
    attempts: int = 1  # requests it took (0 when cached)
    template: str | None = None  # the prompt template's name and hash, when a `Prompt` was given
    template_hash: str | None = None
    key: str = ""  # the cache key: a content hash of (model, messages, parameters)
    # Asked with logprobs=True (and top_logprobs=N): per generated token, its most likely alternatives as
    # {token text: log probability}, the chosen token among them. None when not asked or the server gives none.
    logprobs: list[dict[str, float]] | None = None


@dataclass
class Usage:
    """Running totals of what was spent (cache hits spend nothing)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _Unusable(Exception):
    """The server answered, but with output we must not use (empty, refusal, garbled, failed check)."""


class LLM:
    """A cached, retrying, thread-safe chat client for one model.

    `cache`: a `DiskCache`, a path for one, `None` for `default_cache_dir()/"llm.sqlite"`, or `False` for none.
    `on_close`: called by `close()` (e.g. to stop the embedded server that `default_llm` started).
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        cache: DiskCache | str | os.PathLike[str] | None | Literal[False] = None,
        on_close: Callable[[], None] | None = None,
    ):
        self.config = config
        self._owns_cache = not isinstance(cache, DiskCache)  # close only what we opened
        if cache is False:
            self.cache: DiskCache | None = None
        elif isinstance(cache, DiskCache):
            self.cache = cache
        else:
            self.cache = DiskCache(Path(cache) if cache is not None else default_cache_dir() / "llm.sqlite")
        self._on_close = on_close
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()
        self._paused_until = 0.0  # time.monotonic() before which no request is sent (a server's Retry-After)
        self.calls_made = 0  # HTTP requests sent, retries included
        self.cache_hits = 0
        self.retries = 0
        self.rate_limited = 0  # 429/503 answers with a Retry-After, waited out and sent again
        self.skipped = 0  # requests given up on under on_error="skip"
        self.usage = Usage(cost=0.0 if self._priced else None)

    def __repr__(self) -> str:
        c = self.config
        return f"LLM(model={c.model!r}, base_url={c.base_url!r}, calls_made={self.calls_made}, cache_hits={self.cache_hits})"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.cache is not None and self._owns_cache:
            self.cache.close()
        self.cache = None
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    # -- public API -----------------------------------------------------------------------------------------------

    def complete(
        self,
        prompt: PromptLike,
        *,
        check: Callable[[str], bool] | None = None,
        **params: Any,
    ) -> Completion:
        """One chat completion, from the cache when possible; raises `LLMError` when every try failed.

        `params` go to the chat completions API (temperature, max_tokens, stop, seed, top_p, ...) and are part of the
        cache key. `check(text)` may reject an output (e.g. "is it a yes or a no?"); a rejected output is retried
        like an empty one and never cached.
        """
        request = self._request(prompt, params)
        if self.cache is not None and (cached := request.from_cache(self.cache.get(request.key))) is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        return self._run(request, check)

    def complete_many(
        self,
        prompts: Sequence[PromptLike],
        *,
        check: Callable[[str], bool] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        progress: bool = True,
        desc: str = "LLM",
        **params: Any,
    ) -> list[Completion | None]:
        """Complete every prompt, up to `config.concurrency` at a time; results keep the input order.

        `on_error="raise"` raises the first `LLMError` (results already computed stay in the cache, so a re-run
        resumes); `on_error="skip"` puts `None` in place of each failure and counts it in `skipped`. Identical prompts
        are sent once. Once one request finds the server down or hung (`LLMUnavailableError`), the rest of the batch
        fails at once, with that error type, instead of each waiting out its own timeouts.
        """
        if on_error not in ("raise", "skip"):
            raise fail("complete_many on_error", f"{on_error!r} is not a choice", 'use "raise" or "skip"')
        requests = [self._request(p, params) for p in prompts]
        results: list[Completion | None] = [None] * len(requests)
        cached = self.cache.get_many({r.key for r in requests}) if self.cache is not None else {}
        todo: dict[str, list[int]] = {}  # one request per distinct key, fanned out to every position using it
        for i, r in enumerate(requests):
            results[i] = r.from_cache(cached.get(r.key))
            if results[i] is None:
                todo.setdefault(r.key, []).append(i)
        with self._lock:
            self.cache_hits += len(requests) - sum(len(v) for v in todo.values())
        if not todo:
            return results

        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), initial=len(requests) - sum(map(len, todo.values())), desc=desc,
                   unit="req", disable=quiet() or not progress, dynamic_ncols=True)
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(todo)), thread_name_prefix="qkrag-llm")
        try:
            # Set when one request finds the server down or hung: the others of this batch then fail at once instead
            # of each waiting out its own timeouts (with a hung server, every request of the batch would).
            unavailable = threading.Event()
            futures = {pool.submit(self._run, requests[idx[0]], check, unavailable): idx for idx in todo.values()}
            for future in as_completed(futures):
                positions = futures[future]
                try:
                    completion: Completion | None = future.result()
                except LLMError as err:
                    if isinstance(err, LLMUnavailableError):
                        unavailable.set()
                    if on_error == "raise":
                        raise
                    completion = None
                    with self._lock:
                        self.skipped += len(positions)
                for i in positions:
                    results[i] = completion if completion is None else replace(completion, template=requests[i].template,
                                                                              template_hash=requests[i].template_hash)
                bar.update(len(positions))
                bar.set_postfix(cached=self.cache_hits, calls=self.calls_made, skipped=self.skipped, refresh=False)
        finally:
            # On an error, drop what has not started: a failed batch should stop spending, not finish in the dark.
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return results

    def stats(self) -> dict[str, Any]:
        """Counters and usage as a plain dict (for a run record or a CLI summary)."""
        u = self.usage
        return {
            "model": self.config.model,
            "calls_made": self.calls_made,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "skipped": self.skipped,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cost": u.cost,
        }

    # -- internals ------------------------------------------------------------------------------------------------

    @property
    def cache_scope(self) -> str:
        """The server part of every cache key (see `LLMConfig.cache_scope`): its normalised URL, or "" for the
        embedded server."""
        c = self.config
        return server_identity(c.base_url) if c.cache_scope is None else c.cache_scope

    @property
    def _priced(self) -> bool:
        return self.config.price_per_1k_prompt is not None or self.config.price_per_1k_completion is not None

    @property
    def client(self) -> openai.OpenAI:
        """The underlying `openai.OpenAI` client, created on first use."""
        with self._lock:
            if self._client is None:
                import openai

                c = self.config
                if c.api_key:
                    scrub_freed_memory()  # the key's request buffers must not reach a Chroma file: see its docstring
                # max_retries=0: we retry ourselves, so attempts are counted and output faults share the same budget.
                self._client = openai.OpenAI(base_url=c.base_url, api_key=c.api_key or _NO_KEY,
                                             timeout=c.timeout, max_retries=0)
            return self._client

    def _request(self, prompt: PromptLike, params: Mapping[str, Any]) -> _Request:
        template = template_hash = None
        if isinstance(prompt, Prompt):
            messages = prompt.as_messages()
            template, template_hash = prompt.template, prompt.template_hash
        elif isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(m) for m in prompt]
        if not messages or any(not isinstance(m.get("content"), str) or "role" not in m for m in messages):
            raise fail("LLM prompt", "it is empty or a message lacks a role or text content",
                       "pass a string, a Prompt, or messages like [{'role': 'user', 'content': '...'}]")
        if not any(m["content"].strip() for m in messages):
            raise fail("LLM prompt", "all of its text is empty", "give the model something to answer")
        merged = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens, **params}
        for reserved in ("model", "messages", "stream", "n"):
            if reserved in merged:
                raise fail(f"LLM parameter {reserved!r}", "it is set by qkrag itself",
                           f"drop {reserved}=...; to get several outputs call complete_many")
        scope = self.cache_scope
        # An empty scope keys as before scopes existed, so the embedded model's cached answers stay valid.
        key = content_hash(_CACHE_VERSION, self.config.model, *([scope] if scope else []), messages, merged)
        return _Request(messages, merged, key, self.config.model, template, template_hash)

    def _run(self, request: _Request, check: Callable[[str], bool] | None,
             unavailable: threading.Event | None = None) -> Completion:
        cfg = self.config
        last_problem = "no attempt made"
        timeouts = 0
        deadline = time.monotonic() + cfg.total_seconds
        for attempt in range(cfg.max_retries + 1):
            if unavailable is not None and unavailable.is_set():
                raise fail(f"LLM request to model {cfg.model!r} at {self._where}", "not sent: another request of "
                           "this batch found the server down or not answering", _UNAVAILABLE_FIX,
                           exc=LLMUnavailableError)
            if attempt:
                with self._lock:
                    self.retries += 1
                delay = min(30.0, cfg.backoff * 2 ** (attempt - 1)) * (0.5 + random.random())
                if time.monotonic() + delay >= deadline:
                    break  # no time left for another try: fail now with the last problem
                time.sleep(delay)
            params = dict(request.params)
            if attempt and last_problem.startswith("unusable") and not params.get("temperature"):
                # A deterministic server gives the same refusal again at temperature 0; only a little randomness can
                # get a different answer. The cache key stays that of the original request.
                params["temperature"] = 0.7
            try:
                completion = self._send(request, params, attempt + 1, deadline)
            except _Unusable as exc:
                last_problem = f"unusable output ({exc})"
            except LLMError:
                raise  # out of time: already the one-line error to show
            except Exception as exc:  # noqa: BLE001 - sorted into retryable / fatal just below
                retryable, last_problem = self._classify(exc)
                self._pause_for(retry_after(exc))
                timeouts += last_problem.startswith("timed out")
                if timeouts >= _TIMEOUT_TRIES:
                    break
                if not retryable:
                    # `from None`: the original exception's text may carry what the server echoed, key included.
                    raise fail(f"LLM request to model {cfg.model!r} at {self._where}", last_problem,
                               self._fix_for(exc), exc=LLMError) from None
            else:
                # The caller's check runs outside the try: an exception in it is a bug to see, not a fault to retry.
                problem = output_problem(completion.text)
                if problem is None and check is not None and not check(completion.text):
                    problem = "rejected by check"
                if problem is None:
                    if self.cache is not None:
                        self.cache.put(request.key, request.to_cache(completion))
                    return completion
                last_problem = f"unusable output ({problem})"
            log.warning("LLM %s attempt %d/%d failed: %s", cfg.model, attempt + 1, cfg.max_retries + 1, last_problem)
        down = last_problem.startswith(("timed out", "cannot connect"))
        raise fail(
            f"LLM request to model {cfg.model!r} at {self._where}",
            f"failed after {attempt + 1} tries (last: {last_problem})",
            _UNAVAILABLE_FIX if down else "check that the server answers this model with usable text, or run with "
            "on_error='skip' to count and skip such items",
            exc=LLMUnavailableError if down else LLMError,
        )

    def _pause_for(self, seconds: float | None) -> None:
        """A server asked for `seconds` of quiet (Retry-After): no worker of this client sends before then."""
        if seconds:
            with self._lock:
                self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _post(self, request: _Request, params: dict[str, Any], deadline: float) -> Any:
        """One chat completion request, sent when no Retry-After pause is running. A 429/503 that says how long to
        wait (Retry-After) is waited out and sent again, up to RATE_LIMIT_WAITS times, without using up a retry: a
        busy fleet is not a faulty one. Anything else is raised for `_run` to sort."""
        for waits in range(RATE_LIMIT_WAITS + 1):
            with self._lock:
                pause = self._paused_until - time.monotonic()
            if pause > 0:
                self._wait(pause, deadline)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._out_of_time()
            with self._lock:
                self.calls_made += 1
                self.usage.requests += 1
            try:
                return self.client.chat.completions.create(model=request.model, messages=request.messages,
                                                           timeout=min(self.config.timeout, left), **params)
            except Exception as exc:  # noqa: BLE001 - only a rate limit with Retry-After is handled here
                seconds = retry_after(exc)
                if seconds is None or waits == RATE_LIMIT_WAITS:
                    raise
                self._pause_for(seconds)
                with self._lock:
                    self.rate_limited += 1
        raise AssertionError("unreachable")

    def _wait(self, pause: float, deadline: float) -> None:
        """Sleep out a server's Retry-After pause, or fail at once when it ends past this request's deadline; a long
        wait is announced (on stderr, through logging's last-resort handler when nothing else is set up)."""
        if time.monotonic() + pause > deadline:
            raise self._out_of_time(pause)
        if pause >= LONG_WAIT:
            log.warning("LLM server at %s asked to wait %.0f s (Retry-After); waiting (deadline in %.0f s)",
                        redact(self._where), pause, deadline - time.monotonic())
        time.sleep(pause)

    def _out_of_time(self, pause: float | None = None) -> LLMError:
        asked = f"the server asked to wait {pause:.0f} s more (Retry-After), past " if pause else "it ran past "
        return fail(f"LLM request to model {self.config.model!r} at {self._where}",
                    f"{asked}its deadline of {self.config.total_seconds:g} s (tries and waits included)",
                    "try again later, or raise --timeout / $QKRAG_TIMEOUT (the deadline is the tries' worth of it)",
                    exc=LLMUnavailableError)

    def _send(self, request: _Request, params: dict[str, Any], attempt: int, deadline: float) -> Completion:
        response = self._post(request, params, deadline)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        self._account(prompt_tokens, completion_tokens)
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise _Unusable("no choices in the response")
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(text, str):
            raise _Unusable("no text in the response")
        return Completion(
            text=redact_secrets(text.strip(), self.config.api_key, os.environ.get("OPENAI_API_KEY")),  # echoed key
            logprobs=_token_logprobs(choice),
            model=str(getattr(response, "model", None) or request.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=getattr(choice, "finish_reason", None),
            cached=False,
            attempts=attempt,
            template=request.template,
            template_hash=request.template_hash,
            key=request.key,
        )

    def _account(self, prompt_tokens: int, completion_tokens: int) -> None:
        c = self.config
        with self._lock:
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            if self.usage.cost is not None:
                self.usage.cost += (prompt_tokens * (c.price_per_1k_prompt or 0.0)
                                    + completion_tokens * (c.price_per_1k_completion or 0.0)) / 1000

    @property
    def _where(self) -> str:
        return self.config.base_url or "the OpenAI API"

    def _redact(self, text: str) -> str:
        return redact(text, self.config.api_key, os.environ.get("OPENAI_API_KEY"))

    def _classify(self, exc: Exception) -> tuple[bool, str]:
        """(retryable?, a redacted one-line description) for an exception raised by a request."""
        import openai

        status = getattr(exc, "status_code", None)
        message = self._redact(" ".join(str(exc).split()))[:300]
        if isinstance(exc, openai.APITimeoutError):
            return True, f"timed out after {self.config.timeout:g} s"
        if isinstance(exc, openai.APIConnectionError):
            return True, f"cannot connect ({message})"
        if isinstance(exc, openai.APIStatusError):
            return (status == 429 or (status or 0) >= 500 or status == 408), f"HTTP {status} ({message})"
        if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError):
            # A body that is not a chat completion at all: garbled at the protocol level, worth another try.
            return True, f"malformed response ({type(exc).__name__})"
        return False, f"{type(exc).__name__} ({message})"

    @staticmethod
    def _fix_for(exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return "check OPENAI_API_KEY (it is not shown here) and that it may use this model"
        if status == 404:
            return "check OPENAI_BASE_URL (it should end in /v1) and QKRAG_LLM_MODEL (ask the server's /v1/models)"
        if status in (400, 422):
            return "check the request parameters and that the prompt fits the model's context"
        return "see the message above; this error is not retried"


#: A Retry-After wait this long (seconds) or longer is announced on stderr.
LONG_WAIT = 5.0
#: How many Retry-After answers one request waits out before it counts as a failed try.
RATE_LIMIT_WAITS = 20


def retry_after(exc: Exception) -> float | None:
    """Seconds a 429/503 response asks the client to wait (`Retry-After: 5`, an HTTP date, or `retry-after-ms`),
    None when it does not say."""
    from email.utils import parsedate_to_datetime

    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None or getattr(exc, "status_code", None) not in (429, 503):
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _token_logprobs(choice: Any) -> list[dict[str, float]] | None:
    """Per generated token of a chat completion choice, {token: log probability} of its top alternatives (the
    chosen token included), or None when the response carries no logprobs."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    out = []
    for token in content:
        alternatives = {str(t.token): float(t.logprob) for t in (getattr(token, "top_logprobs", None) or [])}
        alternatives.setdefault(str(token.token), float(token.logprob))
        out.append(alternatives)
    return out


@dataclass(frozen=True)
class _Request:
    messages: list[dict[str, str]]
    params: dict[str, Any]
    key: str
    model: str
    template: str | None
    template_hash: str | None

    def to_cache(self, c: Completion) -> bytes:
        record = {"text": c.text, "model": c.model, "prompt_tokens": c.prompt_tokens,
                  "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
        if c.logprobs is not None:
            record["logprobs"] = c.logprobs
        return json.dumps(record, ensure_ascii=False).encode("utf-8")

    def from_cache(self, blob: bytes | None) -> Completion | None:
        """The cached completion, or None when there is none or it cannot be read (a damaged entry is a miss: the
        request is sent again and its answer overwrites it)."""
        if blob is None:
            return None
        try:
            record = json.loads(blob.decode("utf-8"))
            return Completion(**record, cached=True, attempts=0, template=self.template,
                              template_hash=self.template_hash, key=self.key)
        except (ValueError, TypeError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            log.warning("LLM cache entry %s is unreadable (%s); asking again", self.key[:12], type(err).__name__)
            return None

"""qkrag.errors: the error classes, the one-line message shape, credential redaction, scrubbing freed memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qkrag.errors import (IndexMismatchError, InputError, LLMError, LLMUnavailableError, QkragError, fail, redact,
                          scrub_freed_memory)


def test_fail_builds_what_problem_fix_and_defaults_to_an_input_error() -> None:
    err = fail("corpus.jsonl line 3", "the id 'd1' appears twice", "give every document its own id")
    assert type(err) is InputError and isinstance(err, ValueError)  # callers catching ValueError still catch it
    assert str(err) == "corpus.jsonl line 3: the id 'd1' appears twice. Fix: give every document its own id"
    err = fail("server", "down", "start it", LLMUnavailableError)
    assert type(err) is LLMUnavailableError and str(err) == "server: down. Fix: start it"


@pytest.mark.parametrize("cls", [InputError, IndexMismatchError, LLMError, LLMUnavailableError])
def test_every_error_is_a_qkrag_error_the_cli_can_report(cls) -> None:
    assert issubclass(cls, QkragError)
    assert issubclass(LLMUnavailableError, LLMError)  # a batch may stop on it, as on any LLMError
    assert not issubclass(IndexMismatchError, ValueError) and not issubclass(LLMError, ValueError)


def test_redact_scrubs_known_keys_and_credential_shapes():
    echoed = ("{'Authorization': 'Bearer tok-123456', 'x-api-key': 'abc12345'} authorization: Basic dXNlcjpw "
              "sk-abcdefghij12")
    clean = redact(echoed + " mine=my-own-secret", "my-own-secret")
    for secret in ("tok-123456", "abc12345", "dXNlcjpw", "sk-abcdefghij12", "my-own-secret"):
        assert secret not in clean
    assert redact("the basic idea: a token budget") == "the basic idea: a token budget"  # ordinary words stay


@pytest.mark.parametrize("echoed", [
    "Authorization: Bearer tok-123456",
    "{'Authorization': 'Bearer tok-123456'}",
    '"authorization":"tok-123456"',
    "x-api-key: tok-123456",
    "api_key=tok-123456",
    "Proxy-Authorization: Basic tok-123456",
    "cookie: session=tok-123456",
    "X-Auth-Token: tok-123456",
    "sent with Bearer tok-123456 attached",
    "the key sk-tok123456 was refused",
])
def test_redact_scrubs_credential_shapes_it_was_not_told_about(echoed) -> None:
    clean = redact(f"HTTP 401: {echoed} (from the proxy)")
    assert "tok-123456" not in clean and "tok123456" not in clean and "***" in clean
    assert clean.startswith("HTTP 401: ") and clean.endswith(" (from the proxy)")  # the rest of the message stays


def test_redact_scrubs_the_given_secrets_whatever_their_shape_but_not_tiny_ones() -> None:
    assert redact("mine=hunter2-long and more", "hunter2-long", None, "") == "mine=*** and more"
    assert redact("a cat sat", "at") == "a cat sat"  # a 1-3 character "secret" would eat ordinary words
    assert redact("Bearer ***") == "Bearer ***"  # already redacted stays as it is


@pytest.mark.parametrize("text", ["the basic idea: a token budget", "Basically, no keys here: 42",
                                  "task-1234567890 finished"])
def test_redact_leaves_ordinary_text_alone(text) -> None:
    assert redact(text) == text


PROBE = """
import ctypes, sys
sys.path.insert(0, {src!r})
from qkrag.errors import scrub_freed_memory
if {scrub!r}:
    scrub_freed_memory()
    scrub_freed_memory()  # a second call is a no-op
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
found = 0
for _ in range(20):
    block = libc.malloc(2100)
    ctypes.memmove(block, b"SECRET-MARKER" * 100, 1300)
    libc.free(block)
    found += b"SECRET-MARKER" in ctypes.string_at(libc.malloc(2100), 2100)  # reuses the freed block
print(found)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_scrub_freed_memory_overwrites_freed_blocks_before_reuse() -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")

    def found(scrub: bool) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE.format(src=src, scrub=scrub)], capture_output=True,
                             text=True, check=True)
        return int(out.stdout)

    assert found(False) > 0, "without scrubbing a freed block comes back as it was: else this proves nothing"
    assert found(True) == 0


def test_scrub_freed_memory_can_be_called_in_this_process() -> None:
    scrub_freed_memory()  # sets a process-wide malloc option once; must never raise
    scrub_freed_memory()


@pytest.mark.parametrize("text", [
    "embeddings API at http://127.0.0.1:9/v1?api_key=HIDDEN42&x=1 (model 'm')",
    "http://user:HIDDEN42@h:8000/api/v2/heartbeat",
    "--host user:HIDDEN42@h",
    "https://h/v1?foo=1&access_token=HIDDEN42",
])
def test_credentials_inside_urls_never_reach_a_message(text):
    from qkrag.errors import fail, redact, redact_urls

    assert "HIDDEN42" not in redact_urls(text) and "***" in redact_urls(text)
    assert "HIDDEN42" not in redact(text)
    assert "HIDDEN42" not in str(fail(text, "cannot reach it", "check the address"))
    assert redact_urls("at 127.0.0.1:8000: refused; mail a@b.c") == "at 127.0.0.1:8000: refused; mail a@b.c"


def test_cli_errors_naming_a_url_with_a_key_print_no_key(capsys, tmp_path):
    import qkrag.cli as cli

    (tmp_path / "d.jsonl").write_text('{"_id": "a", "text": "hello"}\n')
    with pytest.raises(SystemExit):
        cli.main(["search", "x", "--host", "user:HIDDEN42@127.0.0.1", "--port", "9", "--model", "openai:m",
                  "--embed-base-url", "http://127.0.0.1:9/v1?api_key=HIDDEN42"])
    err = capsys.readouterr().err
    assert err.startswith("error:") and "HIDDEN42" not in err

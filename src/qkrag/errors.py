"""Exceptions raised by the library.

The library raises; only the CLI turns exceptions into messages. Every message names the input, the problem and the
fix, so a user can act on it without reading a traceback.
"""

from __future__ import annotations

import re


class QkragError(Exception):
    """Base class for every error qkrag raises on purpose."""


class InputError(QkragError, ValueError):
    """Bad user input: a malformed file, a duplicate id, an empty text, an unknown id."""


class IndexMismatchError(QkragError):
    """An index (or projection) was opened with an encoder other than the one that built it."""


class LLMError(QkragError):
    """An LLM call failed after its retries (server down, timeout, unusable output)."""


class LLMUnavailableError(LLMError):
    """The LLM server could not be reached, or did not answer within the timeout, after the retries: a fault of the
    server, not of one item's output (callers may stop a whole batch on it, and retry it on resume)."""


def fail(what: str, problem: str, fix: str, exc: type[QkragError] = InputError) -> QkragError:
    """Build an error whose message reads `what: problem. Fix: fix` (return it, so callers write `raise fail(...)`).
    A credential inside a URL it names (`?api_key=...`, `user:password@host`) is scrubbed (`redact_urls`)."""
    return exc(redact_urls(f"{what}: {problem}. Fix: {fix}"))


# Credentials a URL carries: a password in its userinfo (`scheme://user:password@host`, or `user:password@host` as a
# --host value) and a query parameter named like a secret (`?api_key=...&token=...`).
_URL_PATTERNS = [
    (re.compile(r"(?i)((?:\b[a-z][a-z0-9+.-]*://|(?<![\w.:/-]))[^\s:/@'\"?#]+:)(?!\*\*\*@)[^\s@/'\"?#]+@"),
     r"\1***@"),
    (re.compile(r"(?i)([?&;][a-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth|credential|code)"
                r"[a-z0-9_.-]*=)[^&\s'\"#;]+"), r"\1***"),
]


def redact_urls(text: str) -> str:
    """`text` with the credentials inside any URL replaced by `***` (see `_URL_PATTERNS`): what every error message
    and every echoed address goes through, so a key given in an address is never printed."""
    for pattern, replacement in _URL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_secrets(text: str, *secrets: str | None) -> str:
    """`text` with each of the given `secrets` (4 characters or more) replaced by `***`, and nothing else changed:
    for free text such as an LLM's answer, which may echo a request's key but where header-shaped patterns would
    also match ordinary words."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# A server's error body may echo the request, headers included (a careless proxy, a debug page): whatever it says is
# scrubbed of credentials before it becomes part of a message. Patterns catch keys we were not told about (a key in
# another variable, a token of a proxy); `secrets` catches the ones we know, whatever their shape.
_CREDENTIAL_PATTERNS = [
    # A header's value, with or without its scheme: `Authorization: Bearer <key>`, `'x-api-key': '<key>'`.
    re.compile(r"(?i)((?:x-)?api[-_]?key|authorization|proxy-authorization|x-auth-token|cookie)(['\"]?\s*[:=]\s*['\"]?)"
               r"((?:bearer|basic|token)\s+)?[^\s'\",;}\]]+"),
    # A bare `Bearer <key>` elsewhere; case-sensitive, so "the basic idea" stays as it is.
    re.compile(r"\b(Bearer|bearer|BEARER|Basic)(\s+)(?!\*\*\*)[^\s'\",;}\]]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys, wherever they appear
]


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every credential replaced by `***`: the given `secrets`, bearer/basic tokens, api-key and
    authorization header values, and anything shaped like an OpenAI key. Used by every message built from a server's
    answer (embeddings, LLM, Chroma), so a key never reaches a terminal, a log or a results file."""
    text = redact_urls(redact_secrets(text, *secrets))  # a 1-3 character "key" would scrub ordinary words: not done
    text = _CREDENTIAL_PATTERNS[0].sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}***", text)
    text = _CREDENTIAL_PATTERNS[1].sub(r"\1\2***", text)
    return _CREDENTIAL_PATTERNS[2].sub("***", text)


_scrubbing = False


def scrub_freed_memory() -> None:
    """Have glibc overwrite every block of memory when it is freed (mallopt M_PERTURB), from now on in this process.

    Why: a freed buffer of an HTTP request still holds its `Authorization: Bearer <key>` header, and the next malloc
    hands it out as is. Chroma's HNSW writer writes such uninitialised memory into a collection's files (length.bin,
    data_level0.bin): a fault-matrix run found a planted key there, written by a process that held it. Called when a
    client that sends a key is made; it costs a memset per malloc and free, so only processes that hold a key pay
    it. A no-op where the C library is not glibc.
    """
    global _scrubbing
    if _scrubbing:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _scrubbing = bool(libc.mallopt(-6, 0x5A))  # M_PERTURB = -6: freed bytes become 0x5A, new ones 0xA5
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do here
        _scrubbing = True

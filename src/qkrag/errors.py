"""Exceptions raised by the library.

The library raises; only the CLI turns exceptions into messages. Every message names the input, the problem and the
fix, so a user can act on it without reading a traceback.
"""

from __future__ import annotations


class QkragError(Exception):
    """Base class for every error qkrag raises on purpose."""


class InputError(QkragError, ValueError):
    """Bad user input: a malformed file, a duplicate id, an empty text, an unknown id."""


class IndexMismatchError(QkragError):
    """An index (or projection) was opened with an encoder other than the one that built it."""


class LLMError(QkragError):
    """An LLM call failed after its retries (server down, timeout, unusable output)."""


def fail(what: str, problem: str, fix: str, exc: type[QkragError] = InputError) -> QkragError:
    """Build an error whose message reads `what: problem. Fix: fix` (return it, so callers write `raise fail(...)`)."""
    return exc(f"{what}: {problem}. Fix: {fix}")

"""Prompt templates as data files, and robust parsing of what an LLM writes back.

Templates live in `prompts/*.toml` (a source checkout) or `qkrag/_prompts` (an installed wheel), each with a `system`
and a `user` part holding `{named}` variables::

    >>> from qkrag.llm import prompts
    >>> p = prompts.render("rewrite", text="...", max_words=60)
    >>> p.messages          # ready for LLM.complete(p)
    >>> p.template_hash     # stable id of the template text, recorded with every output

Rendering is strict: a missing variable and an unknown extra variable are both `InputError`s naming the template and
the variable, because a silently empty slot makes a prompt that still "works" and quietly produces bad data.

The parsing half (`parse_candidates`, `parse_yes_no`, `is_refusal`, `output_problem`) turns free text from small local
models - numbered lists, quotes, code fences, "Here are 3 queries:", refusals - into clean candidate strings.
"""

from __future__ import annotations

import re
import string
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from qkrag.cache import content_hash
from qkrag.errors import fail

__all__ = [
    "Prompt",
    "PromptTemplate",
    "aspect_template",
    "builtin_aspects",
    "few_shot_examples",
    "is_garbled",
    "is_refusal",
    "list_templates",
    "load_template",
    "output_problem",
    "parse_candidates",
    "parse_yes_no",
    "prompts_dir",
    "render",
    "MAX_FEW_SHOT_EXAMPLES",
]

#: Few-shot prompts take at most this many user examples: more costs context on small models and adds little.
MAX_FEW_SHOT_EXAMPLES = 8


# --------------------------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------------------------


def prompts_dir() -> Path:
    """The folder holding the template files: `qkrag/_prompts` in a wheel, else `prompts/` of the source checkout."""
    installed = Path(__file__).resolve().parents[1] / "_prompts"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[3] / "prompts"
    if checkout.is_dir():
        return checkout
    raise fail(
        "qkrag prompt templates",
        f"neither {installed} nor {checkout} exists",
        "reinstall qkrag (the wheel ships them as qkrag/_prompts) or run from a full source checkout",
    )


def _fields(template_name: str, text: str) -> frozenset[str]:
    """The `{name}` variables in `text`; only plain identifiers, so a typo like `{max words}` fails early."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:  # an unmatched brace
        raise fail(f"prompt template {template_name!r}", f"malformed braces ({exc})", "write literal braces as {{ and }}")
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise fail(
                f"prompt template {template_name!r}",
                f"variable {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} is not a plain name",
                "use {name} with a Python identifier and no format spec; write literal braces as {{ and }}",
            )
        names.add(name)
    return frozenset(names)


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: chat `messages` plus the template name and hash to record with the output."""

    messages: tuple[Mapping[str, str], ...]
    template: str
    template_hash: str
    variables: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def as_messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.messages]


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template: a `system` and a `user` part with `{named}` variables."""

    name: str
    user: str
    system: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise fail(f"prompt template {self.name!r}", "its user part is empty", "give the template a user text")
        self.variables  # validate the braces now, not at the first render  # noqa: B018

    @property
    def variables(self) -> frozenset[str]:
        """The names `render` requires (exactly these: no fewer, no more)."""
        return _fields(self.name, self.system) | _fields(self.name, self.user)

    @property
    def hash(self) -> str:
        """A stable SHA-256 of the template text (not of its file or path), recorded with every output."""
        return content_hash("qkrag-prompt-v1", self.system, self.user)

    def render(self, **variables: Any) -> Prompt:
        expected = self.variables
        missing = sorted(expected - variables.keys())
        if missing:
            raise fail(
                f"prompt template {self.name!r}",
                f"variable {missing[0]!r} is missing (it needs {', '.join(sorted(expected))})",
                f"pass {missing[0]}=... when rendering",
            )
        extra = sorted(variables.keys() - expected)
        if extra:
            raise fail(
                f"prompt template {self.name!r}",
                f"unknown variable {extra[0]!r} (it takes only {', '.join(sorted(expected)) or 'no variables'})",
                f"drop {extra[0]}=... or add {{{extra[0]}}} to the template",
            )
        values = {k: str(v) for k, v in variables.items()}
        messages = []
        if self.system.strip():
            messages.append({"role": "system", "content": self.system.format_map(values).strip()})
        messages.append({"role": "user", "content": self.user.format_map(values).strip()})
        return Prompt(tuple(messages), self.name, self.hash, dict(variables))

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise fail(f"prompt template {path}", "file not found", "check the path or use list_templates()") from None
        except tomllib.TOMLDecodeError as exc:
            raise fail(f"prompt template {path}", f"not valid TOML ({exc})", "fix the file's syntax") from None
        unknown = sorted(set(data) - {"system", "user", "description", "name"})
        if unknown or not isinstance(data.get("user"), str) or not isinstance(data.get("system", ""), str):
            raise fail(
                f"prompt template {path}",
                f"needs string keys 'user' (required) and 'system', 'description' (optional); got {sorted(data)}",
                "write the template as: system = \"\"\"...\"\"\"  user = \"\"\"...\"\"\"",
            )
        return cls(
            name=str(data.get("name", path.stem)),
            user=data["user"],
            system=data.get("system", ""),
            description=str(data.get("description", "")),
        )


#: Files of prompts/ that hold aspect strings (an `[aspects]` table), not one template each.
ASPECT_DATA = ("aspects", "aspect_schema")


def list_templates() -> list[str]:
    """Names of the shipped templates (the ASPECT_DATA files are aspect strings, not templates)."""
    return sorted(p.stem for p in prompts_dir().glob("*.toml") if p.stem not in ASPECT_DATA)


@cache
def _load_shipped(name: str) -> PromptTemplate:
    path = prompts_dir() / f"{name}.toml"
    if not path.is_file() or name in ASPECT_DATA:
        raise fail(
            f"prompt template {name!r}",
            "no such template",
            f"use one of {', '.join(list_templates())}, or pass the path of a .toml file",
        )
    return PromptTemplate.from_file(path)


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """A shipped template by name (`"rewrite"`), or any template file by path (`"my/prompts/claim.toml"`)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        return PromptTemplate.from_file(name_or_path)
    return _load_shipped(text)


def render(template: str | Path | PromptTemplate, /, **variables: Any) -> Prompt:
    """Load (if given a name or path) and render a template; see `PromptTemplate.render`."""
    if not isinstance(template, PromptTemplate):
        template = load_template(template)
    return template.render(**variables)


def builtin_aspects() -> dict[str, str]:
    """Built-in aspect strings by name (climate, cuisine, size, ...), each with a `{text}` slot."""
    data = tomllib.loads((prompts_dir() / "aspects.toml").read_text(encoding="utf-8"))
    return dict(data.get("aspects", {}))


def aspect_description(aspect: str) -> str:
    """Words describing a built-in aspect (`[descriptions]` in aspects.toml); any other string is its own description."""
    data = tomllib.loads((prompts_dir() / "aspects.toml").read_text(encoding="utf-8"))
    return str(data.get("descriptions", {}).get(aspect, aspect))


def aspect_template(aspect: str) -> PromptTemplate:
    """A template for one aspect: a built-in name (`"climate"`) or a user string with `{text}` (`"Climate of {text}"`).

    The system part comes from `aspect.toml`; the user part is the aspect string itself, so a user-defined aspect gets
    its own hash and a change to it never reuses cached outputs of the old wording.
    """
    if not isinstance(aspect, str) or not aspect.strip():
        raise fail("aspect prompt", "it is empty", 'give a built-in name (e.g. "climate") or a string like "Climate of {text}"')
    builtin = builtin_aspects()
    if aspect in builtin:
        name, user = f"aspect:{aspect}", builtin[aspect]
    elif "{" in aspect:
        name, user = "aspect:custom", aspect
    else:
        raise fail(
            f"aspect prompt {aspect!r}",
            "it is neither a built-in aspect nor a string with a {text} slot",
            f'use one of {", ".join(sorted(builtin))} or write e.g. "{aspect} of {{text}}"',
        )
    base = load_template("aspect")
    template = PromptTemplate(name=name, user=user, system=base.system, description=base.description)
    if "text" not in template.variables:
        raise fail(f"aspect prompt {aspect!r}", "it has no {text} slot for the passage", f'write e.g. "{aspect} {{text}}"')
    return template


def few_shot_examples(examples: Iterable[str], limit: int = MAX_FEW_SHOT_EXAMPLES) -> str:
    """Format up to `limit` user example queries as the `{examples}` block of `query_few_shot` (blank ones dropped)."""
    cleaned = [" ".join(str(e).split()) for e in examples]
    cleaned = list(dict.fromkeys(e for e in cleaned if e))[:limit]
    if not cleaned:
        raise fail(
            "few-shot query prompt",
            "no example queries were given",
            "pass 1 to 8 example queries, or use the query_zero_shot template",
        )
    return "\n".join(f"- {e}" for e in cleaned)


# --------------------------------------------------------------------------------------------------------------------
# Parsing LLM output
# --------------------------------------------------------------------------------------------------------------------

# Openings that small chat models use to decline. Matched at the start of the output (after quotes/space), because
# "I can't" inside a generated query ("why I can't sleep after coffee") is a legitimate query, not a refusal.
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m (?:not )?(?:un)?able to|"
    r"i am (?:not )?(?:un)?able to|i won'?t|as an ai|as a language model|i'?m just an ai|unfortunately,? i)",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^\s*```")
# "1.", "1)", "(1)", "#1", "-", "*", "•", "Q1:", "Query 2:", "Question:", "Claim:" ... at the start of a line.
# Each marker must be followed by a space, so "3.5 million ..." and "-5 degrees" keep their numbers.
_BULLET = re.compile(r"^\s*(?:[-*•·–—]+|\(?#?\d{1,3}[.):\]])(?=\s)\s*")
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:search\s+)?(?:query|queries|question|claim|answer|q|output|rewrite|rewritten(?: text)?)\s*\d*\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»`"
# A line that introduces a list ("Here are 3 queries:", "Sure! Here you go:") rather than being a candidate.
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|okay|ok|here (?:are|is)|below (?:are|is))\b.*|.*:\s*$", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when `text` opens with a refusal ("I'm sorry, I can't ...", "As an AI ...")."""
    return bool(_REFUSAL.match(text.strip().lstrip(_QUOTES)))


def is_garbled(text: str) -> bool:
    """True for output no prompt should produce: replacement characters, mostly non-letters, or a repetition loop."""
    stripped = text.strip()
    if not stripped:
        return False  # empty is its own problem
    if "\ufffd" in stripped or any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in stripped):
        return True
    visible = [c for c in stripped if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if len(visible) >= 8 and letters / len(visible) < 0.4:
        return True
    words = stripped.lower().split()
    # Tiny models fall into loops ("the the the the ..."); a long text of a handful of distinct words is one.
    if len(words) >= 30 and len(set(words)) / len(words) < 0.2:
        return True
    run = 1
    for prev, cur in zip(words, words[1:]):
        run = run + 1 if cur == prev else 1
        if run >= 8:
            return True
    return False


def output_problem(text: str | None) -> str | None:
    """Why `text` is unusable ("empty", "refusal", "garbled"), or None when it is fine. Used to decide a retry."""
    if text is None or not text.strip() or not _strip_fences(text).strip():
        return "empty"
    if is_refusal(text):
        return "refusal"
    if is_garbled(text):
        return "garbled"
    return None


def _strip_fences(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not _FENCE.match(line))


def _clean_line(line: str) -> str:
    line = line.strip()
    for _ in range(3):  # "1. Query: "foo"" needs several passes, in any order
        before = line
        line = _BULLET.sub("", line, count=1)
        line = _LABEL.sub("", line, count=1)
        line = line.strip().strip("*_").strip()
        if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
            line = line[1:-1].strip()
        if line == before:
            break
    return " ".join(line.split())


def parse_candidates(
    text: str | None, *, max_items: int | None = None, min_chars: int = 3, max_words: int | None = None
) -> list[str]:
    """Clean candidate strings from a model's free text, one per line.

    Strips code fences, numbering and bullets ("1.", "-", "(2)"), labels ("Query:", "Q3:"), surrounding quotes and
    markdown bold; drops empty lines, list preambles ("Here are 3 queries:"), refusals, duplicates (case-insensitive)
    and, with `max_words`, lines longer than that (small models sometimes paste the whole passage back).
    Returns an empty list when nothing usable is left - the caller decides whether that is a retry or a skip.
    """
    if not text:
        return []
    seen: set[str] = set()
    out: list[str] = []
    for raw in _strip_fences(text).splitlines():
        if not raw.strip() or _PREAMBLE.match(raw.strip()) or is_refusal(raw):
            continue
        line = _clean_line(raw)
        if len(line) < min_chars or is_refusal(line) or is_garbled(line):
            continue
        if max_words is not None and len(line.split()) > max_words:
            continue
        key = line.casefold()
        if key not in seen:
            seen.add(key)
            out.append(line)
        if max_items is not None and len(out) >= max_items:
            break
    return out


def parse_yes_no(text: str | None) -> bool | None:
    """The verdict of a yes/no judgement: True, False, or None when the output says neither (retry or skip it)."""
    if not text:
        return None
    match = re.search(r"\b(yes|no)\b", _strip_fences(text).strip().lower())
    if match is None:
        return None
    return match.group(1) == "yes"

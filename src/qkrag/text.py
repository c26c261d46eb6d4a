"""Pure text measures: words, sentences, and whether a document asks or answers.

Nothing here imports more than `re`, so any module (and any report) can use it cheaply.

    >>> question_form("My bread stays flat. Anyone know why?")
    True
    >>> carries_answer("Bread rises because yeast turns sugar into carbon dioxide gas.")
    True
    >>> carries_answer("Click here to subscribe")
    False

Why it matters: a corpus can hold documents that ask instead of answer (forum posts, FAQ stubs, search logs). A
query's nearest neighbours by cosine are such questions, so a (query, passage) pair whose passage is a question
teaches "question -> similar question", the very failure a learned projection should fix. Generation therefore only
writes queries for passages that `carries_answer`.

The tests are about the form of the text only (never ids or metadata): a sentence asks when it ends with "?" or opens
like a question or a request ("how do I ...", "anyone know ...", "can someone ..."); a document is question-form when
it asks and everything else in it is the asker's own situation ("I", "my", "we") or a sign-off ("thanks", "pictures
attached"), never a statement about the world, and it does not end by stating something (a FAQ entry that asks and
then answers carries an answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["carries_answer", "content_words", "is_question", "normalize", "question_form", "sentences",
           "word_overlap", "words", "MIN_CONTENT_WORDS", "STOPWORDS"]

#: A passage with fewer distinct content words than this states too little to answer anything ("Click here").
MIN_CONTENT_WORDS = 4

_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")

# A sentence ends at . ! ? followed by a capital (so "e.g. the" stays whole), or at a stop that stands alone after a
# space: tokenised, lower-cased collections (Cranfield: "in a slipstream . an experimental study") write them so.
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])|(?<=\s[.!?])\s+")
# Forum posts are often lower case ("why won't it rise? i used fresh yeast"): for judging form, a question or
# exclamation mark ends a sentence whatever follows, and so does a line break.
_ASK_BREAK = re.compile(r"(?<=[?!])\s+|\s*\n\s*")

# Function words: what is left of a text without them says what it is about.
STOPWORDS = frozenset("""
a about above after again against all am an and any anyone anything are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
else even ever every few for from further get gets got had hadn't has hasn't have haven't having he her here hers
herself him himself his how i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more most much
must my myself no nor not now of off on once only or other our ours ourselves out over own please same she should
shouldn't so some still such than that that's the their theirs them themselves then there there's these they this
those through to too under until up us very was wasn't we we're we've were weren't what what's when where which
while who whom whose why will with won't would wouldn't yes yet you you're your yours yourself
""".split())

_WH = r"(?:what|which|who|whom|whose|why|how|where|when)"
_AUX = r"(?:is|are|was|were|am|do|does|did|can|could|should|would|will|has|have|shall|may|might)"
_PRONOUN = r"(?:i|you|we|they|he|she|it|there|this|that|anyone|anybody|someone|somebody|people|one)"
# Openings of a sentence that asks even without a question mark: "why does ...", "how many ...", "who invented ...",
# "is it ...", "can i ...". Each is chosen because statements do not open so: "which/who/whom/whose" never open one,
# while "what/why/how/where/when" open clauses too ("When water freezes it expands"), so those need question word
# order; "is/are/does/did" never open a statement, but "can/will/do/have/should ..." do ("Can openers ...", "Will
# Smith ...", "Have a look", "Should the pump fail, ..."), so those need a pronoun after them.
_ASKS = re.compile(
    rf"^(?:(?:which|who|whom|whose)\b|{_WH}\s+{_AUX}(?:n't)?\b|{_WH}'s\b"
    rf"|how\s+(?:much|many|long|far|often|old|big|large|come)\b|what\s+(?:kind|type|sort|year|time)\b"
    rf"|(?:is|are|does|did|am)(?:n't)?\s+\w|{_AUX}(?:n't)?\s+{_PRONOUN}\b)",
    re.IGNORECASE)
# Openings of a request or a plea for help.
_REQUEST = re.compile(
    r"^(?:(?:does|did|has|have|can|could|would|will)\s+(?:anyone|anybody|someone|somebody)\b"
    r"|(?:anyone|anybody)\s+(?:know|knows|have|has|had|else|ever|tried|seen|experienced|got|able|here|out\s+there"
    r"|recommend|suggest)\b"
    r"|help(?:\s+(?:me|please|needed|wanted|required))?\W*$|please\s+(?:help|advise|reply|respond|tell|explain"
    r"|let\s+me\s+know|share)\b"
    r"|any\s+(?:tips|advice|ideas?|suggestions?|thoughts|help|experts?|recommendations?|pointers)\b"
    r"|(?:i\s+|we\s+)?(?:need|want)\s+(?:help|advice|to\s+know|some\s+(?:help|advice))\b|need\s+(?:a|an|some)\b"
    r"|(?:i'?m\s+|i\s+am\s+|we'?re\s+|we\s+are\s+)?looking\s+for\b|(?:i'?d|i\s+would)\s+like\s+to\s+know\b"
    r"|i\s+wonder\b|(?:i'?m\s+|just\s+)?wondering\b|is\s+there\s+(?:a|any)\s+way\b"
    r"|(?:tell|show|give|help)\s+me\b|explain\b|recommend\b|suggest\b"
    r"|(?:name|list|identify|define|give)\s+(?:a|an|one|two|three|the|some|any|all)\b)",
    re.IGNORECASE)
# "What ..." opens questions ("What caused the delay") and pseudo-cleft statements ("What makes the park different
# is its peacocks"); only the statement goes on to a copula.
_WHAT_ASKS = re.compile(r"^what\b(?!.*\b(?:is|are|was|were)\b)", re.IGNORECASE)
# A question typed without its question mark keeps a question word inside it ("X.25 uses what type of network",
# "in cases with shared medium how is it delivered"); prose without a final stop is rare, so this counts only there.
_INNER_ASK = re.compile(rf"\b(?:what|which|whom|whose|how\s+(?:many|much|long|far|often)|{_WH}\s+{_AUX})\b|^{_AUX}\b",
                        re.IGNORECASE)
# A fill-in-the-blank quiz item: "Silicates of magnesium and iron make up the Earth's ___".
_BLANK = re.compile(r"_{3,}")
# A search-box request names a topic without a verb: "how to descale a kettle", "tips for first-time gardeners". The
# same opening with a full stop is a statement ("Ways to save energy include insulation."), so these count only
# for a sentence that does not end with one.
_TOPIC_REQUEST = re.compile(r"^(?:how\s+to|ways\s+to|best\s+way\s+to|tips\s+(?:for|on)|advice\s+(?:for|on))\b",
                            re.IGNORECASE)
# Sign-offs: neither ask nor state ("Thanks in advance.", "Pictures attached.", "Edit: typo").
_SIGN_OFF = re.compile(
    r"^(?:thanks(?!\s+to\b)|thank\s+you|thx|tia|cheers|(?:best|kind|warm)\s+(?:regards|wishes)|regards"
    r"|many\s+thanks|edit\s*:|update\s*:|(?:pictures?|photos?|pics?|images?|screenshots?)\s+(?:attached|below"
    r"|included))",
    re.IGNORECASE)
# The asker's own situation: first person (forum posts tell their story before they ask) ...
_PERSONAL = re.compile(r"\b(?:i(?![.]\w)|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|us|our|ours)\b",
                       re.IGNORECASE)  # "i" but not the "i" of "i.e."
# ... but not a study reporting its findings in the first person ("We found that ...", "Our results show ..."):
# that states something, and an abstract that opens with a question goes on to answer it so.
_REPORTS = re.compile(
    r"\b(?:we(?:\s+\w+)?\s+(?:found|find|show|showed|shown|demonstrate[sd]?|conclude[sd]?|report(?:ed)?"
    r"|observed?|identif(?:y|ied)|propose[sd]?|present(?:ed)?|describe[sd]?|measured?|test(?:ed)?|examined?"
    r"|investigated?|analy[sz]ed?|performed|used|studied|compared?|developed?|estimated?|evaluated?|assessed?"
    r"|determined?|provided?|suggest(?:ed)?|hypothesi[sz]ed?|reveal(?:ed)?|establish(?:ed)?|obtained?|derived?"
    r"|calculated?|conducted?|review(?:ed)?|discuss(?:ed)?|summari[sz]ed?|outlined?|explored?|address(?:ed)?"
    r"|considered?|focus(?:ed)?|highlight(?:ed)?|argued?|introduced?)"
    r"|our\s+(?:results|findings|data|study|studies|analysis|analyses|model|method|work|experiments?"
    r"|observations?|knowledge|understanding))\b",
    re.IGNORECASE)
# Boilerplate: calls to action and site furniture, which state nothing.
_BOILERPLATE = re.compile(
    r"\b(?:click\s+here|subscribe|sign\s+up|log\s*in|sign\s+in|read\s+more|all\s+rights\s+reserved|cookies?\s+policy"
    r"|privacy\s+policy|terms\s+of\s+(?:use|service)|share\s+this|follow\s+us|copyright)\b",
    re.IGNORECASE)
_LONG = 30  # words: a sentence longer than this does not count as asking by its opening alone


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with inner apostrophes and hyphens)."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Case, punctuation and spacing folded away: what makes two queries "the same"."""
    return " ".join(words(text))


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not function words."""
    return {w for w in words(text) if w not in STOPWORDS}


def sentences(text: str) -> list[str]:
    """`text` cut into sentences (abbreviations like "e.g. the" stay whole)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the content words of `a` and `b` (of all their words when either has no content word):
    1.0 for the same words in any order, near 0 for texts about different things."""
    x, y = content_words(a), content_words(b)
    if not x or not y:
        x, y = set(words(a)), set(words(b))
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


def is_question(text: str) -> bool:
    """True when `text` ends with a question mark: the form of a query, not a judgement of its content."""
    return text.rstrip().endswith("?")


def _kind(sentence: str) -> str:
    """One sentence as "ask" (a question or request), "sign-off", "personal" (the writer's own situation) or
    "statement" (something said about the world)."""
    s = sentence.strip().lstrip("\"'“‘([*-•> ").strip()
    if not s:
        return "sign-off"
    short = len(words(s)) <= _LONG  # a long sentence that opens like a question is a clause ("How X works is ...")
    if s.rstrip("\"'”’)]* ").endswith("?") or _REQUEST.match(s):
        return "ask"
    if short and (_ASKS.match(s) or _WHAT_ASKS.match(s) or _BLANK.search(s)
                  or (_unfinished(s) and (_TOPIC_REQUEST.match(s) or _INNER_ASK.search(s)))):
        return "ask"
    if _SIGN_OFF.match(s) and len(words(s)) <= 6:
        return "sign-off"
    if _personal(s):
        return "personal"
    return "statement"


def _unfinished(sentence: str) -> bool:
    """No final stop: a search-box line or a question whose mark was left off, not a sentence of prose."""
    return not sentence.rstrip().rstrip("\"'”’)]").endswith((".", "!", ":", ";"))


def _personal(sentence: str) -> bool:
    return bool(_PERSONAL.search(sentence)) and not _REPORTS.search(sentence)


def _parts(text: str) -> list[str]:
    return [p for s in sentences(text) for p in _ASK_BREAK.split(s) if p.strip()]


def question_form(text: str) -> bool:
    """True when the whole document is a question or a request rather than a statement.

    It asks (a sentence ends with "?" or opens like a question or a plea: "how do I", "anyone know", "can someone"),
    its other sentences only tell the writer's own situation or sign off, and it does not end by stating something.
    "Which NFL team won Super Bowl 50?", "how do i reset my router" and "My bread stays flat. I used fresh yeast.
    Anyone know why?" are question-form; "What causes rust? Iron reacts with oxygen." and a paragraph that mentions
    a question in passing are not.
    """
    parts = _parts(text)
    kinds = [_kind(p) for p in parts]
    if "ask" not in kinds:
        return False
    said = [k for k in kinds if k != "sign-off"]
    if said[-1] == "statement":
        return False  # it goes on to state something after asking: an answer, or at least information
    # A story before the question is the asker's own ("I", "my", "we"), and so is a question about themselves ("Should
    # I be worried?"); statements about the world may be part of it ("The radiator is only warm at the bottom.") but
    # must not outnumber the asking and the telling. An article that closes on a question keeps its statements.
    told = said.count("ask") + sum(_personal(p) for p, k in zip(parts, kinds) if k in ("ask", "personal"))
    return said.count("statement") <= told


def carries_answer(text: str) -> bool:
    """True for a passage that states something a query could be answered with; False for question-form text,
    requests, and boilerplate (fewer than `MIN_CONTENT_WORDS` distinct content words once calls to action such as
    "click here to subscribe" are taken out)."""
    if question_form(text):
        return False
    return len(content_words(_BOILERPLATE.sub(" ", text))) >= MIN_CONTENT_WORDS


def cut_at_word(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`, else its first `max_chars` characters cut back to a word and marked " ...":
    how much of a passage a prompt shows (prompt length dominates a small CPU model's time)."""
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " ..."


def or_list(items: Iterable[str]) -> str:
    """Choices in words, for help texts and errors: "a", "a or b", "a, b or c"."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"

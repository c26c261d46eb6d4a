"""doc2query-style expansion (Nogueira et al. 2019): the queries generated for a passage are appended to its text,
and the expanded corpus is indexed in place of the original. The passage becomes findable by the words people ask
with, at index time: no LLM call at search time. BM25 is its classic setting (the appended words enter the term
statistics); a dense index of the expanded texts works the same way.

Only passages with generated queries change; the others keep their text, so expanding a sample of passages is a
partial doc2query whose cost to complete is one generation per remaining passage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from qkrag.data import Corpus, Document
from qkrag.errors import fail


def queries_by_passage(passage_ids: Iterable[str], queries: Iterable[str]) -> dict[str, list[str]]:
    """`{passage id: [its queries, in order, without repeats]}` from parallel columns (e.g. a pairs table's
    positive_id and query)."""
    out: dict[str, list[str]] = {}
    for pid, query in zip(passage_ids, queries):
        text = " ".join(str(query).split())
        if text and text not in out.setdefault(str(pid), []):
            out[str(pid)].append(text)
    return out


def expand_corpus(corpus: Corpus, queries: Mapping[str, Sequence[str]]) -> Corpus:
    """`corpus` with each passage's `queries` appended to its text (title kept), in corpus order. Passages without
    queries are unchanged. A query keyed by an id the corpus lacks is an error: the queries were made for another
    corpus."""
    unknown = [pid for pid in queries if pid not in corpus]
    if unknown:
        raise fail(f"doc2query queries for {unknown[0]!r}", f"{len(unknown)} passage ids are not in {corpus.source}",
                   "expand the corpus the queries were generated from")
    docs = tuple(Document(d.id, " ".join([d.text, *queries[d.id]]) if queries.get(d.id) else d.text, d.title)
                 for d in corpus)
    return Corpus(docs, f"{corpus.source} (doc2query: {sum(bool(q) for q in queries.values())} passages expanded)",
                  corpus.skipped)

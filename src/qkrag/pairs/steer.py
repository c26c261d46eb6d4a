"""Ranking and steering candidates: each candidate query's passage rank among all documents under the encoder
(`rank_positives`), near-duplicate removal, the choice of candidates whose difficulty matches human queries
(`steer_candidates`), and hard negatives from each query's top ranks (`hard_negatives`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qkrag.cache import content_hash
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, Encoder, embed
from qkrag.ranking import Space, similarity, top_k
from qkrag.text import normalize

if TYPE_CHECKING:
    from qkrag.pairs.config import GenerateConfig
    pass

    from qkrag.llm.client import LLM





def document_vectors(encoder: Encoder, corpus: Corpus, progress: bool) -> np.ndarray:
    return embed(encoder, corpus.contents, "document", EmbedOptions(progress=progress), desc="embed corpus")


def rank_candidates(query_vecs: np.ndarray, pos_vecs: np.ndarray, positions: np.ndarray, doc_vecs: np.ndarray, space: Space,
          depth: int, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank of each query's positive among all documents (1 = best), its score, and the top `depth` other documents.

    The positive is scored against its own vector (`pos_vecs`: the document itself, or for ICT the passage without
    the cut sentence), every other document against the corpus vectors."""

    n = len(query_vecs)
    depth = min(depth, doc_vecs.shape[0] - 1)
    ranks, pos_scores = np.zeros(n, np.int64), np.zeros(n, np.float32)
    top_scores, top_pos = np.zeros((n, depth), np.float32), np.zeros((n, depth), np.int64)
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        scores = similarity(query_vecs[start:end], doc_vecs, space)
        own = similarity(query_vecs[start:end], pos_vecs[start:end], space).diagonal()
        scores[np.arange(end - start), positions[start:end]] = -np.inf
        ranks[start:end] = (scores > own[:, None]).sum(1) + 1
        pos_scores[start:end] = own
        if depth > 0:
            top_scores[start:end], top_pos[start:end] = top_k(scores, depth)
    return ranks, pos_scores, top_scores, top_pos


def rank_positives(encoder: Encoder, corpus: Corpus, queries: Sequence[str], positive_ids: Sequence[str],
                   space: Space = "cosine", progress: bool = False) -> np.ndarray:
    """Rank (1 = best) of each query's positive document among the whole corpus under the base encoder: the measure
    of how hard a pair is, for generated pairs and for human ones alike."""
    doc_vecs = document_vectors(encoder, corpus, progress)
    q = embed(encoder, list(queries), "query", EmbedOptions(progress=progress))
    positions = np.array([corpus.position(d) for d in positive_ids], dtype=np.int64)
    return rank_candidates(q, doc_vecs[positions], positions, doc_vecs, space, depth=0)[0]


def rank_summary(ranks: Iterable[int]) -> dict[str, float]:
    """Share of positives at rank 1, in the top 10 and top 100; median and count."""
    r = np.asarray(list(ranks), dtype=np.int64)
    if r.size == 0:
        return {"n": 0, "rank1": 0.0, "top10": 0.0, "top100": 0.0, "median_rank": 0.0}
    return {"n": int(r.size), "rank1": float((r == 1).mean()), "top10": float((r <= 10).mean()),
            "top100": float((r <= 100).mean()), "median_rank": float(np.median(r))}


@dataclass
class Candidate:
    doc_id: str
    text: str
    positive_text: str
    generator: str
    variant: str  # "llm", "masked", "ict"
    prompt_hash: str
    index: int  # order of generation within the passage: ties break on it
    copy_score: float = 0.0
    title_copy: float = 0.0
    ngram_copy: float = 0.0
    off_form: bool = False  # a question where the examples are claims, or the other way round
    rank: int = 0
    score: float = 0.0
    row: int = -1  # row in the ranking arrays


def drop_near_duplicates(cands: list[Candidate], vecs: np.ndarray, threshold: float, counts: Counter
                          ) -> tuple[list[Candidate], np.ndarray]:
    """Within each passage, drop a candidate whose embedding is nearly that of an earlier one (a reworded twin)."""
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    keep: list[int] = []
    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        kept = by_doc.setdefault(c.doc_id, [])
        if kept and float((unit[kept] @ unit[i]).max()) >= threshold:
            counts["dropped_near_duplicate"] += 1
            continue
        kept.append(i)
        keep.append(i)
    return [cands[i] for i in keep], vecs[keep]


def _bucket(rank: int, k: int) -> int:
    return 0 if rank == 1 else 1 if rank <= min(10, k) else 2


def _preference(c: Candidate, want: int, k: int) -> tuple:
    """Sort key for filling a slot that wants rank bucket `want`: a candidate in that bucket, else in the bucket
    nearest to it; within one, the one in the form of the user's examples, then (from a harder bucket the easiest,
    from an easier bucket the hardest) the least copied."""
    b = _bucket(c.rank, k)
    return abs(b - want), c.off_form, 0 if b == want else c.rank if b > want else -c.rank, c.copy_score, c.index


def steer_candidates(cands: list[Candidate], config: GenerateConfig) -> list[Candidate]:
    """Per passage, choose which round-tripping candidates become pairs (see `GenerateConfig.policy`)."""
    by_doc: dict[str, list[Candidate]] = {}
    for c in cands:
        by_doc.setdefault(c.doc_id, []).append(c)
    groups = {d: sorted(g, key=lambda c: c.index) for d, g in by_doc.items()}
    q = config.queries_per_passage
    if config.policy == "none":
        return [c for g in groups.values() for c in g[:q]]
    if config.policy == "hardest":
        return [c for g in groups.values() for c in sorted(g, key=lambda c: (-c.rank, c.index))[:q]]
    # "target": steer all passages at once. Drawing a bucket per passage falls short of the target whenever a passage
    # has only easy candidates (it must give rank 1 whatever it drew) while another, with a choice, drew rank 1 too.
    # So: a quota per bucket over all picks; the passages with the least choice pick first, and every later one
    # fills the bucket furthest below its quota that it can. Order within equal choice is seeded per passage.
    k = config.roundtrip_k
    weights = np.asarray(config.target, dtype=float) / sum(config.target)
    quota = weights * sum(min(q, len(g)) for g in groups.values())
    taken = np.zeros(len(weights))
    left = {d: list(g) for d, g in groups.items()}
    picked: dict[str, list[Candidate]] = {d: [] for d in groups}
    for _ in range(q):
        todo = [d for d in groups if left[d]]
        buckets = {d: {_bucket(c.rank, k) for c in left[d]} for d in todo}
        todo.sort(key=lambda d: (len(buckets[d]), content_hash("steer", config.seed, d)))
        for d in todo:
            deficit = quota - taken
            open_ = [b for b in buckets[d] if deficit[b] > 0]
            # the neediest bucket this passage can fill; if it can fill none, the one nearest the neediest overall
            want = max(open_, key=lambda b: (deficit[b], -b)) if open_ else int(np.argmax(deficit))
            pick = min(left[d], key=lambda c: _preference(c, want, k))
            left[d].remove(pick)
            picked[d].append(pick)
            taken[_bucket(pick.rank, k)] += 1
    return [c for d in groups for c in picked[d]]


def _judge(llm: LLM, queries: list[str], texts: list[str], progress: bool) -> list[bool | None]:
    from qkrag.llm import prompts

    results = llm.complete_many([prompts.render("judge", query=q, text=t[:1500]) for q, t in zip(queries, texts)],
                                check=lambda t: prompts.parse_yes_no(t) is not None, on_error="skip",
                                progress=progress, desc="judge negatives", temperature=0.0, max_tokens=4)
    return [None if r is None else prompts.parse_yes_no(r.text) for r in results]


def hard_negatives(chosen: list[Candidate], top_scores: np.ndarray, top_pos: np.ndarray, corpus: Corpus,
               config: GenerateConfig, llm: LLM | None, counts: Counter) -> list[list[str]]:
    """Hard negatives from each query's ranking: skip documents scoring within `false_negative_ratio` of the positive
    (likely unjudged positives) and exact copies of the positive; optionally drop those the LLM judges relevant."""
    if config.negatives == 0:
        return [[] for _ in chosen]
    pools: list[list[str]] = []
    for c in chosen:
        limit = c.score - (1 - config.false_negative_ratio) * abs(c.score)
        own = normalize(corpus.get(c.doc_id).content)
        pool = []
        for s, p in zip(top_scores[c.row], top_pos[c.row]):
            doc = corpus[int(p)]
            if s >= limit or normalize(doc.content) == own:
                counts["negatives_skipped_as_false"] += 1
                continue
            pool.append(doc.id)
        pools.append(pool)
    if not (config.judge_negatives and llm is not None):
        return [pool[: config.negatives] for pool in pools]
    # Judge only as many as can be needed: the first negatives + a few spares per pair.
    want = [pool[: config.negatives + 2] for pool in pools]
    flat = [(i, d) for i, pool in enumerate(want) for d in pool]
    verdicts = _judge(llm, [chosen[i].text for i, _ in flat], [corpus.get(d).content for _, d in flat],
                      config.progress)
    relevant = {(i, d) for (i, d), v in zip(flat, verdicts) if v}
    counts["negatives_judged_relevant"] += len(relevant)
    return [[d for d in pool if (i, d) not in relevant][: config.negatives] for i, pool in enumerate(want)]

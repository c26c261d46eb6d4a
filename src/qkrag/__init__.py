"""qkrag: retrieval beyond raw cosine. Learn what relevance means for your corpus (see README.md).

The public API is importable from here (`from qkrag import QKProjection, load_beir, ...`). Importing the package is
cheap (no torch, no Chroma): each name is imported from its stage module the first time it is used.

    data        load_beir, load_corpus
    embed       make_encoder, embed
    generate    GenerateConfig, generate_pairs, load_pairs
    train       pairs_from_collection, pairs_from_folder, QKProjection, SymmetricProjection, QueryAdapter,
                TrainConfig, RECIPES, recipe_config, train_projection, train_with_cv, train_best
    index       IndexConfig, build_index, ChromaIndex, make_retriever, DenseRetriever, ProjectedRetriever,
                BM25Retriever, HybridRetriever, FusionConfig
    evaluate    evaluate_retriever, evaluate_folder, compare
    LLM         LLM, LLMConfig, default_llm, open_llm
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qkrag")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

_PUBLIC = {
    "qkrag.data": ("load_beir", "load_corpus", "Corpus", "Collection"),
    "qkrag.errors": ("QkragError", "InputError", "IndexMismatchError", "LLMError"),
    "qkrag.embed.encoders": ("make_encoder", "embed", "Encoder", "EmbedOptions"),
    "qkrag.pairs.generate": ("GenerateConfig", "generate_pairs"),
    "qkrag.pairs.store": ("load_pairs",),
    "qkrag.projection.data": ("Pairs", "pairs_from_collection", "pairs_from_folder", "pairs_from_dataset"),
    "qkrag.projection.model": ("Projection", "QKProjection", "SymmetricProjection", "QueryAdapter",
                               "train_projection"),
    "qkrag.projection.train": ("TrainConfig",),
    "qkrag.projection.recipes": ("RECIPES", "recipe_config"),
    "qkrag.projection.select": ("train_with_cv", "train_best", "cross_validate"),
    "qkrag.retrieval.connection": ("IndexConfig",),
    "qkrag.retrieval.build": ("build_index",),
    "qkrag.retrieval.store": ("ChromaIndex",),
    "qkrag.retrieval.dense": ("DenseRetriever",),
    "qkrag.retrieval.factory": ("make_retriever",),
    "qkrag.retrieval.projected": ("ProjectedRetriever",),
    "qkrag.retrieval.bm25": ("BM25Retriever", "build_bm25"),
    "qkrag.retrieval.hybrid": ("HybridRetriever", "FusionConfig"),
    "qkrag.evaluate.metrics": ("evaluate_retriever", "evaluate_run", "EvalResult"),
    "qkrag.bench.chain": ("evaluate_folder",),
    "qkrag.evaluate.compare": ("compare",),
    "qkrag.llm.client": ("LLM", "LLMConfig"),
    "qkrag.llm.local": ("default_llm", "open_llm"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = ["__version__", *_HOME]


def __getattr__(name: str):
    """Import a public name from its stage module on first use (PEP 562), so `import qkrag` stays light."""
    if name not in _HOME:
        raise AttributeError(f"module 'qkrag' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


from qkrag.integrations.registration import install as _register_with_chroma

_register_with_chroma()  # cheap: a post-import hook, see qkrag/integrations/registration.py

"""Taking a trained projection out of qkrag: a sentence-transformers model, or a Chroma embedding function.

Both give two routes: documents get k = K·v, queries get s·Q·v (the scale is folded into the query side), so a plain
dot product between them is qkrag's logit minus the bias b. Ranking needs only the dot product; the bias is written
aside (in `qkrag_projection.json` for the model, `probability()` on the function) for whoever wants σ(dot + b).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag import __version__
from qkrag.errors import fail
from qkrag.projection.calibrate import describe, uncalibrated

if TYPE_CHECKING:
    from qkrag.projection.model import Projection

EXPORT_INFO_FILE = "qkrag_projection.json"


def _route_weights(projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """(query weight s·Q, document weight K), each r × d."""
    projection.check_fitted()
    return (projection.scale_ * projection.Q_).astype(np.float32), projection.K_.astype(np.float32)


def to_sentence_transformer(projection: Projection, base_model: str | None = None):
    """A `SentenceTransformer`: the base model (default: the shipped all-MiniLM-L6-v2), then a Router with a
    bias-free linear layer per side. `encode_query(x) · encode_document(y)` = qkrag's logit − b."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Router

    from qkrag.embed.encoders import DEFAULT_MODEL, resolve_model_path

    wq, wk = _route_weights(projection)
    base = SentenceTransformer(resolve_model_path(base_model or DEFAULT_MODEL), device="cpu")
    dim = base.get_embedding_dimension() if hasattr(base, "get_embedding_dimension") else \
        base.get_sentence_embedding_dimension()
    if dim != projection.dimension_:
        raise fail(base_model or DEFAULT_MODEL, f"makes {dim}-dimensional vectors; the projection expects "
                   f"{projection.dimension_}", "export with the base model the projection was trained on")

    def dense(weight: np.ndarray):
        return Dense(weight.shape[1], weight.shape[0], bias=False, activation_function=None,
                     init_weight=torch.from_numpy(weight.copy()))

    router = Router.for_query_document(query_modules=[dense(wq)], document_modules=[dense(wk)])
    return SentenceTransformer(modules=[*base, router], similarity_fn_name="dot", device="cpu")


def export_sentence_transformer(projection: Projection, path: str | os.PathLike[str],
                                base_model: str | None = None, *, source: str | os.PathLike[str] | None = None
                                ) -> Path:
    """Save the projection as a sentence-transformers model folder, loadable with `SentenceTransformer(path)`, with
    a model card (README.md) and `qkrag_projection.json` (bias, scale, hashes). `source` is the saved projection
    folder it came from, for its content hash. Written to a temporary folder and moved into place (a failed export
    leaves no half model behind), with ordinary permissions (folders 0755, files 0644), like every qkrag output."""
    from qkrag.atomic import atomic_folder
    from qkrag.embed.encoders import DEFAULT_MODEL
    from qkrag.projection.light import weights_hash

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise fail(f"--out {path}", "is a file, not a folder", "pass a folder path (it is created or replaced)")
    model = to_sentence_transformer(projection, base_model)
    info = {"qkrag_version": __version__, "variant": projection.variant, "bias": projection.bias_,
            "scale_folded_into_query_route": projection.scale_, "rank": projection.rank_,
            "dimension": projection.dimension_, "encoder": getattr(projection, "encoder_fingerprint_", ""),
            "base_model": base_model or DEFAULT_MODEL,
            "projection_sha256": weights_hash(source) if source is not None else "",
            "training_data_hash": getattr(projection, "training_hash_", ""),
            "selected": getattr(projection, "selected_", ""), "validation": getattr(projection, "validation_", {}),
            "calibration": getattr(projection, "calibration_", None) or uncalibrated("not recorded"),
            "probability": "sigmoid(encode_query(q) . encode_document(d) + bias)"}
    with atomic_folder(path) as tmp:
        model.save(str(tmp))
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
        for item in tmp.rglob("*"):
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
    return path


def export_projection(projection_folder: str | os.PathLike[str], out: str | os.PathLike[str],
                      base_model: str | None = None) -> Path:
    """`qkrag export`: a saved projection folder -> a sentence-transformers model folder (see
    `export_sentence_transformer`). The base model defaults to the encoder the projection was trained on."""
    from qkrag.projection.model import QKProjection

    projection = QKProjection.load(projection_folder)
    encoder = getattr(projection, "encoder_fingerprint_", "") or None
    base = base_model or (encoder.split("|", 1)[0] if encoder else None)
    if base and base.startswith("openai:"):
        raise fail(str(projection_folder), f"was trained on vectors of {base}, an embeddings API",
                   "export needs a sentence-transformers base model: pass --base-model only if it makes the same "
                   "vectors")
    return export_sentence_transformer(projection, out, base, source=projection_folder)


#: Entries of a projection's `validation_` that are not held-out figures (words, flags, timings, nested records).
_NOT_FIGURES = ("figures", "warning", "note", "calibrated", "train_seconds", "cv", "history")


def held_out_figures(validation: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """(title, rows) of the figures a model card may show: the cross-validated ones when the projection was chosen by
    cross-validation, else those of the held-out validation split. Never figures measured on training pairs."""
    cv = validation.get("cv")
    if isinstance(cv, dict):
        folds = validation.get("cv_folds", "k")
        rows = [(f"{key} (mean over folds)", value) for key, value in cv.items()]
        rows += [("queries", validation.get("n_queries", "not recorded")), ("folds", folds)]
        return f"held out by {folds}-fold cross-validation over the training queries", rows
    rows = [(key, value) for key, value in validation.items() if key not in _NOT_FIGURES]
    return "held-out validation queries (never trained on), recorded at training time", rows


def model_card(info: dict[str, Any]) -> str:
    """The exported folder's README.md: what the model is, how each route is used, and the held-out figures it was
    kept on."""
    title, figures = held_out_figures(info.get("validation") or {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in figures) or "| (none recorded) | |"
    calibration = info.get("calibration") or uncalibrated("not recorded")
    probability = describe(calibration)
    word = "a calibrated" if calibration.get("calibrated") else "an **uncalibrated**"
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, qkrag, asymmetric-retrieval]
base_model: {info['base_model']}
---

# qkrag projection ({info['variant']}, rank {info['rank']}) over {info['base_model']}

A query/key projection trained by qkrag on top of a frozen encoder, exported as a
sentence-transformers model. The base encoder is followed by a `Router` with one bias-free linear layer per side:

- `model.encode_query(texts)` gives **q' = s·Q·v** (the scale s is folded into the query route);
- `model.encode_document(texts)` gives **k = K·v**;
- their dot product is qkrag's logit minus the bias, and the probability of relevance is

  **P(relevant | q, d) = σ(s·q·k + b) = σ(encode_query(q) · encode_document(d) + b)**, with b = {info['bias']:.6g}:
  {word} probability ({probability}).

**Plain `model.encode(texts)` takes the document route** (the Router's default). Use it only for documents. Wrappers
that embed queries with `encode()` (LangChain's `HuggingFaceEmbeddings`, LlamaIndex's `HuggingFaceEmbedding`, which
passes `prompt_name="query"` but no task) send queries through the document route and rank wrongly; do not
normalise the vectors either (`normalize_embeddings=True` drops the scale the probability needs). Use
`qkrag.integrations.langchain` / `qkrag.integrations.llamaindex`, or call `encode_query` / `encode_document`.

| | |
|---|---|
| base encoder | {info['base_model']} (qkrag fingerprint `{info['encoder'] or 'not recorded'}`) |
| variant | {info['variant']} |
| rank | {info['rank']} (input dimension {info['dimension']}) |
| scale s (folded into the query route) | {info['scale_folded_into_query_route']:.6g} |
| bias b | {info['bias']:.6g} |
| projection weights SHA-256 | `{info['projection_sha256'] or 'not recorded'}` |
| training data hash | `{info['training_data_hash'] or 'not recorded'}` |
| selected on validation | {info['selected'] or 'not recorded'} |
| probability | {probability} |
| qkrag version | {info['qkrag_version']} |

## Held-out figures ({title})

| figure | value |
|---|---|
{rows}

## Use

```python
from sentence_transformers import SentenceTransformer
import numpy as np

model = SentenceTransformer("path/to/this/folder")
q = model.encode_query(["why does my dough stay flat"])
d = model.encode_document(["Dough stays flat when the yeast is dead ..."])
probability = 1 / (1 + np.exp(-(q @ d.T + {info['bias']:.6g})))
```

`qkrag_projection.json` holds the same figures in machine-readable form.
"""

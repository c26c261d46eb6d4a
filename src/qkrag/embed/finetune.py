"""The alternative users would otherwise reach for: fine-tune the whole encoder on the same pairs.

sentence-transformers' `MultipleNegativesRankingLoss` (in-batch softmax over cosine, scale 20) on (query, positive)
pairs, as its documentation recommends for retrieval. Driven by a plain PyTorch loop rather than
`SentenceTransformerTrainer`, because the trainer needs `accelerate` and more set-up than a baseline deserves;
the loss, tokenisation and model are the library's own. A benchmark row: what full fine-tuning buys, and at what cost,
next to the projection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qkrag.cache import content_hash, quiet
from qkrag.embed.encoders import SentenceTransformerEncoder, resolve_model_path
from qkrag.errors import fail


@dataclass
class FinetuneConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    max_seq_length: int = 256
    seed: int = 0
    progress: bool = True


@dataclass
class FinetuneResult:
    encoder: SentenceTransformerEncoder
    seconds: float
    steps: int
    losses: list[float]


def finetune_encoder(queries: Sequence[str], positives: Sequence[str], base_model: str | None = None,
                     config: FinetuneConfig | None = None, out_dir: str | Path | None = None,
                     negatives: Sequence[str] | None = None) -> FinetuneResult:
    """Fine-tune a sentence-transformers model on (query, positive passage) pairs; return an encoder over it.
    `negatives`: one mined hard negative passage per pair, set against every query of its batch beside the
    in-batch positives (the loss's third column); without them the only negatives are the batch's other positives,
    which a query cut from its own passage tells apart too easily to learn from.

    Batches never hold the same passage twice: a duplicate would be a false in-batch negative.
    """
    config = config or FinetuneConfig()
    if len(queries) != len(positives) or not queries:  # before the imports: they cost seconds
        raise fail("finetune pairs", f"{len(queries)} queries for {len(positives)} positives",
                   "pass one positive passage per query, and at least one pair")
    if negatives is not None and len(negatives) != len(queries):
        raise fail("finetune negatives", f"{len(negatives)} for {len(queries)} pairs",
                   "pass one hard negative passage per pair, or none")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    name = base_model or SentenceTransformerEncoder().model_name
    model = SentenceTransformer(resolve_model_path(name), device="cpu")
    model.max_seq_length = min(model.max_seq_length or config.max_seq_length, config.max_seq_length)
    loss_fn = MultipleNegativesRankingLoss(model)

    batches: list[list[int]] = []
    for _ in range(config.epochs):
        order = list(range(len(queries)))
        rng.shuffle(order)
        pending = order
        while pending:  # greedy fill, deferring rows whose passage is already in the batch
            batch, seen, rest = [], set(), []
            for i in pending:
                if len(batch) < config.batch_size and positives[i] not in seen:
                    batch.append(i)
                    seen.add(positives[i])
                else:
                    rest.append(i)
            batches.append(batch)
            pending = rest

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    warmup = max(1, int(config.warmup_fraction * len(batches)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (len(batches) - step) / max(1, len(batches) - warmup))))
    prepare = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` is deprecated since v5
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for batch in tqdm(batches, desc="fine-tune encoder", unit="batch", disable=quiet() or not config.progress):
        features = [prepare([queries[i] for i in batch]), prepare([positives[i] for i in batch])]
        if negatives is not None:
            features.append(prepare([negatives[i] for i in batch]))
        loss = loss_fn(features, torch.empty(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    seconds = time.perf_counter() - t0
    # The fingerprint names the training data and settings, so cached vectors of another fine-tune never match.
    encoder = SentenceTransformerEncoder.from_loaded(
        model, f"{name}+finetuned:"
        f"{content_hash(list(queries), list(positives), list(negatives or []), vars(config))[:16]}")
    if out_dir is not None:
        model.save(str(out_dir))
    return FinetuneResult(encoder, seconds, len(batches), losses)

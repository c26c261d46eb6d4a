"""qkrag.embed.finetune: the full fine-tuning baseline, on the shipped all-MiniLM-L6-v2 (no download)."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.embed.encoders import EmbedOptions, SentenceTransformerEncoder, embed
from qkrag.embed.finetune import FinetuneConfig, finetune_encoder
from qkrag.errors import InputError

QUERIES = ["what makes bread rise", "how do plants make sugar", "why do bicycle chains need oil",
           "how does a heat pump work", "where did the cat sit", "what does yeast produce"]
POSITIVES = ["Bread rises because yeast produces carbon dioxide gas.",
             "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
             "Bicycle chains need oil every few hundred kilometres.",
             "A heat pump moves heat instead of making it.",
             "The cat sat on the warm mat by the fire.",
             "Bread rises because yeast produces carbon dioxide gas."]  # the same passage as the first pair's
QUICK = FinetuneConfig(epochs=1, batch_size=6, learning_rate=1e-4, max_seq_length=32, progress=False)
NO_CACHE = EmbedOptions(cache=None, progress=False)


# Slow only because finetune_encoder imports torch and sentence-transformers (seconds) before it checks its input.
@pytest.mark.parametrize(("queries", "positives"), [(QUERIES, POSITIVES[:-1]), ([], [])])
def test_pairs_that_do_not_pair_up_are_refused_before_any_loading(queries, positives) -> None:
    with pytest.raises(InputError, match=r"finetune pairs: \d+ queries for \d+ positives.*Fix: pass one positive"):
        finetune_encoder(queries, positives, base_model="/no/such/model", config=QUICK)


def margin(encoder) -> float:
    """Mean cosine of each query with its own passage minus with the other passages."""
    q = embed(encoder, QUERIES, "query", NO_CACHE)
    d = embed(encoder, POSITIVES, "document", NO_CACHE)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    sims = q @ d.T
    own = np.eye(len(QUERIES), dtype=bool) | (np.array(POSITIVES)[:, None] == np.array(POSITIVES)[None, :])
    return float(sims[own].mean() - sims[~own].mean())


@pytest.mark.slow
def test_fine_tuning_pulls_queries_to_their_passages_and_saves_a_loadable_model(tmp_path) -> None:
    base = SentenceTransformerEncoder()
    before = margin(base)
    result = finetune_encoder(QUERIES, POSITIVES, config=QUICK, out_dir=tmp_path / "model")
    # 6 pairs fit one batch of 6, but the two pairs sharing a passage never meet in a batch (each would be the
    # other's false negative): 2 steps, each logged.
    assert result.steps == 2 and len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert margin(result.encoder) > before + 0.01
    # the fingerprint names the base model and the training: its cached vectors are never the base model's
    assert result.encoder.fingerprint.startswith(f"{base.model_name}+finetuned:")
    assert result.encoder.fingerprint != base.fingerprint
    saved = SentenceTransformerEncoder(str(tmp_path / "model"))
    np.testing.assert_allclose(embed(saved, QUERIES[:2], "query", NO_CACHE),
                               embed(result.encoder, QUERIES[:2], "query", NO_CACHE), atol=1e-5)


def test_hard_negatives_must_pair_up_too() -> None:
    with pytest.raises(InputError, match=r"finetune negatives: 1 for 6 pairs.*Fix: pass one hard negative"):
        finetune_encoder(QUERIES, POSITIVES, base_model="/no/such/model", config=QUICK, negatives=["one"])


@pytest.mark.slow
def test_hard_negatives_are_learned_against_and_name_the_fine_tune() -> None:
    """A hard negative is a third column of the loss: each query is pushed from it as from the batch's positives,
    and the fine-tune's fingerprint differs from the one without negatives (their vectors never share a cache)."""
    negatives = POSITIVES[1:] + POSITIVES[:1]  # another pair's passage
    plain = finetune_encoder(QUERIES, POSITIVES, config=QUICK)
    hard = finetune_encoder(QUERIES, POSITIVES, config=QUICK, negatives=negatives)
    assert hard.steps == plain.steps and all(np.isfinite(hard.losses))
    assert hard.losses != plain.losses  # the extra column changed the loss
    assert hard.encoder.fingerprint != plain.encoder.fingerprint

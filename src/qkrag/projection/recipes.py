"""Named training recipes: the `TrainConfig` settings that model selection chooses among on held-out queries.

- "full": every entry of Q and K trained from the identity with TrainConfig's defaults (a small step, a pull toward
  the start, sampled negatives, a logistic term beside the softmax): safe with thousands of pairs.
- "low_rank": Q = I + A·Bᵀ and K likewise, A and B of rank 4, a larger step, the whole corpus as negatives in every
  batch, and neither the pull nor the logistic term. A few hundred pairs can pin down a rank-4 change but not a
  d × d one, and a full softmax puts every look-alike document (the question posts of a mixed corpus) against
  every query at every step. (s, b) are Platt-fitted on held-out queries afterwards in both recipes.
- "low_rank_qneg": "low_rank" with each batch's queries, read as documents, among the negatives
  (`TrainConfig.query_negatives`): a restatement of a question is not its answer. Where users' queries are questions
  and question posts sit in the corpus, this is the mistake cosine makes, and the posts alone, one negative among
  hundreds, teach it slowly. Where queries are text cut from the passages (ICT), a query is nearly its own passage,
  so the signal fights the positive; model selection on held-out judged queries decides (benchmarks/results/
  query_negatives.md).

Which recipe wins depends on the corpus and the pairs, so `qkrag bench` trains each and keeps the best on
validation queries; benchmarks/results/main_job_*.md name the choice and every recipe's held-out figure. "auto"
offers "low_rank" only when those validation queries are judged (a collection's qrels): held out from synthetic
pairs, they reward the generator's way of asking, and a map with nothing holding it near the start learns that
instead of what users ask (benchmarks/results/recipe_policy.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from qkrag.errors import fail
from qkrag.projection.train import TrainConfig

#: Above this many documents a full softmax costs more per step than it gives: sample `random_negatives` instead.
FULL_SOFTMAX_DOCUMENTS = 20_000

_LOW_RANK: dict[str, Any] = {"residual_rank": 4, "learning_rate": 3e-3, "batch_size": 128, "full_softmax": True,
                             "random_negatives": 4096, "init_weight": 0.0, "bce_weight": 0.0, "epochs": 100,
                             "patience": 15}
RECIPES: dict[str, dict[str, Any]] = {
    "full": {},
    "low_rank": _LOW_RANK,
    "low_rank_qneg": {**_LOW_RANK, "query_negatives": True},
}

#: What each recipe is, in the words help texts use (`recipe_choices`).
RECIPE_HELP: dict[str, str] = {
    "full": "every entry of Q and K",
    "low_rank": "I + a rank-4 change, every document a negative",
    "low_rank_qneg": "low_rank with the batch's queries as negatives too",
}


#: Recipes "auto" offers only when model selection validates on judged queries (see the module docstring).
NEEDS_JUDGED_VALIDATION = frozenset({"low_rank", "low_rank_qneg"})


def recipe_choices() -> str:
    """The recipes in words, for help texts: "full (every entry of Q and K), low_rank (...), ..."."""
    return ", ".join(f"{name} ({RECIPE_HELP[name]})" for name in RECIPES)


def auto_recipes(judged: bool) -> tuple[str, ...]:
    """The recipes "auto" tries: every one when validation queries are judged, else those safe to choose on
    synthetic pairs."""
    return tuple(name for name in RECIPES if judged or name not in NEEDS_JUDGED_VALIDATION)


def expand_recipes(choice: Sequence[str], judged: bool) -> tuple[str, ...]:
    """Recipe names with "auto" replaced by `auto_recipes(judged)`, each checked, order kept, no repeats."""
    names: list[str] = []
    for name in choice:
        for one in (auto_recipes(judged) if name == "auto" else (name,)):
            if one not in RECIPES:
                raise fail(f"recipe {one!r}", "is not a training recipe", f"use auto or one of {', '.join(RECIPES)}")
            if one not in names:
                names.append(one)
    return tuple(names)


def left_out(choice: Sequence[str], judged: bool) -> str | None:
    """Why "auto" left recipes out, in words, or None when it left none out (nor did the rest of `choice` add them)."""
    if "auto" not in choice:
        return None
    tried = expand_recipes(choice, judged)
    skipped = [name for name in auto_recipes(True) if name not in tried]
    them = "them" if len(skipped) > 1 else "it"
    return (f"{', '.join(skipped)} not tried: validation sees only synthetic pairs (judged queries would allow {them})"
            if skipped else None)


def recipe_config(name: str, n_documents: int | None = None, **settings: Any) -> TrainConfig:
    """The TrainConfig of recipe `name`, with `settings` (seed, loss, progress...) underneath: the recipe's own
    values win, so "low_rank" keeps its epoch cap. Over FULL_SOFTMAX_DOCUMENTS documents, negatives are sampled."""
    if name not in RECIPES:
        raise fail(f"recipe {name!r}", "is not a training recipe", f"use one of {', '.join(RECIPES)}")
    config = dataclasses.replace(TrainConfig(**settings), **RECIPES[name])
    if config.full_softmax and n_documents is not None and n_documents > FULL_SOFTMAX_DOCUMENTS:
        config.full_softmax = False
    return config


def recipe_configs(choice: str, n_documents: int | None = None, overrides: dict[str, Any] | None = None,
                   judged: bool = True, **settings: Any) -> dict[str, TrainConfig]:
    """{name: TrainConfig} for `choice`, one recipe's name or "auto" (`auto_recipes(judged)`: `judged` says whether
    model selection validates on judged queries), each checked: `settings` sit under each recipe's values and
    `overrides` (what a user set explicitly, e.g. --epochs) over them."""
    names = expand_recipes((choice,), judged)
    configs = {name: dataclasses.replace(recipe_config(name, n_documents, **settings), **(overrides or {}))
               for name in names}
    for config in configs.values():
        config.check()
    return configs

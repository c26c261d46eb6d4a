"""Named training recipes: the settings model selection chooses among."""

from __future__ import annotations

import dataclasses

import pytest

from qkrag.errors import InputError
from qkrag.projection.recipes import (FULL_SOFTMAX_DOCUMENTS, NEEDS_JUDGED_VALIDATION, RECIPES, expand_recipes,
                                     left_out, recipe_choices, recipe_config, recipe_configs)
from qkrag.projection.train import TrainConfig


def test_the_full_recipe_is_the_default_config_with_the_callers_settings():
    assert recipe_config("full", seed=3, loss="distill") == TrainConfig(seed=3, loss="distill")


def test_the_low_rank_recipe_wins_over_the_callers_settings_it_names():
    config = recipe_config("low_rank", 500, epochs=30, loss="both")
    assert (config.residual_rank, config.full_softmax, config.epochs, config.loss) == (4, True, 100, "both")
    config.check()


def test_large_corpora_sample_their_negatives():
    assert not recipe_config("low_rank", FULL_SOFTMAX_DOCUMENTS + 1).full_softmax
    assert recipe_config("low_rank", FULL_SOFTMAX_DOCUMENTS).full_softmax


def test_an_unknown_recipe_names_the_choices():
    with pytest.raises(InputError, match="low_rank") as error:
        recipe_config("lowrank")
    assert all(name in str(error.value) for name in RECIPES)


def test_auto_means_every_recipe_on_judged_queries_and_the_safe_ones_on_synthetic_pairs():
    assert expand_recipes(("auto",), judged=True) == tuple(RECIPES)
    assert expand_recipes(("auto",), judged=False) == tuple(n for n in RECIPES if n not in NEEDS_JUDGED_VALIDATION)
    assert {"low_rank", "low_rank_qneg"} <= NEEDS_JUDGED_VALIDATION and "full" not in NEEDS_JUDGED_VALIDATION
    # a recipe the user names is tried whatever the validation; repeats collapse
    assert expand_recipes(("low_rank", "auto"), judged=False) == ("low_rank", "full")
    assert set(recipe_configs("auto", judged=False)) == {"full"}
    assert "low_rank, low_rank_qneg not tried" in left_out(("auto",), judged=False)
    assert left_out(("auto",), judged=True) is None and left_out(("full", "low_rank"), judged=False) is None
    # named beside auto: tried, so not left out
    assert left_out(("auto", "low_rank", "low_rank_qneg"), judged=False) is None
    assert left_out(("auto", "low_rank"), judged=False).startswith("low_rank_qneg not tried")
    with pytest.raises(InputError, match="use auto or one of"):
        expand_recipes(("lowrank",), judged=True)


def test_low_rank_qneg_is_low_rank_with_the_queries_as_negatives_and_every_recipe_has_help():
    plain, qneg = recipe_config("low_rank", 500), recipe_config("low_rank_qneg", 500)
    assert qneg.query_negatives and not plain.query_negatives and not recipe_config("full").query_negatives
    assert dataclasses.replace(qneg, query_negatives=False) == plain
    assert all(f"{name} (" in recipe_choices() for name in RECIPES)

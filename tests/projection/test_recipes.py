"""Named training recipes: the settings model selection chooses among."""

from __future__ import annotations

import pytest

from qkrag.errors import InputError
from qkrag.projection.recipes import FULL_SOFTMAX_DOCUMENTS, RECIPES, recipe_config
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

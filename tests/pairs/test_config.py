"""qkrag.pairs.config: GenerateConfig checks its values, and few-shot examples are drawn reproducibly."""

from __future__ import annotations

import pytest

from qkrag.errors import InputError
from qkrag.pairs.config import GenerateConfig, draw_examples


def test_config_rejects_bad_values():
    with pytest.raises(InputError, match="policy"):
        GenerateConfig(policy="easiest")
    with pytest.raises(InputError, match="at most 8"):
        GenerateConfig(examples=tuple(f"q{i}" for i in range(9)))
    assert GenerateConfig(candidates=5, per_call=2).calls == 3


def test_template_follows_the_examples():
    assert GenerateConfig().template_name == "query_zero_shot"
    assert GenerateConfig(examples=("what is a comet?",)).template_name == "query_few_shot"
    assert GenerateConfig(template="judge", examples=("what is a comet?",)).template_name == "judge"


def test_examples_are_drawn_seeded_distinct_and_from_the_pool():
    pool = [f"query {i}" for i in range(20)]
    drawn = draw_examples(pool, 5, seed=3)
    assert len(drawn) == 5 and len(set(drawn)) == 5 and set(drawn) <= set(pool)
    assert draw_examples(iter(pool), 5, seed=3) == drawn  # any iterable; the same seed, the same examples
    assert draw_examples(pool, 5, seed=4) != drawn
    assert sorted(draw_examples(pool[:3], 8)) == sorted(pool[:3])  # never more than the pool holds
    assert draw_examples(pool, 0) == () and draw_examples([], 4) == ()

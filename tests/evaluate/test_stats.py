"""qkrag.evaluate.stats: seeded bootstrap intervals and the sign-flip test."""

from __future__ import annotations

import numpy as np

from qkrag.evaluate.stats import Bootstrap, bootstrap_ci


def test_bootstrap_is_seeded() -> None:
    x = np.random.default_rng(0).random(50)
    assert bootstrap_ci(x) == bootstrap_ci(x)
    assert bootstrap_ci(x, Bootstrap(seed=1)) != bootstrap_ci(x, Bootstrap(seed=2))
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_sign_flip_p_value_one_and_two_sided():
    from qkrag.evaluate.stats import sign_flip_p_value

    up = np.full(12, 0.1)
    assert sign_flip_p_value(up, alternative="greater") < 0.001  # all 12 gain: 1 of 4096 sign patterns is as good
    assert sign_flip_p_value(-up, alternative="greater") > 0.99
    assert sign_flip_p_value(-up) < 0.001  # two-sided: a consistent loss is as extreme as a gain
    assert sign_flip_p_value(np.zeros(5)) == 1.0 and sign_flip_p_value([]) == 1.0

"""The reference's own correlations agree with scipy.stats, which they stand in for."""

from __future__ import annotations

import numpy as np
import pytest
from quant_reference import pearson, spearman
from scipy import stats


@pytest.mark.parametrize("n", [2, 3, 5, 15, 30])
def test_pearson_and_spearman_are_scipys(n: int) -> None:
    rng = np.random.default_rng(n)
    for trial in range(200):
        x = rng.standard_normal(n)
        y = rng.standard_normal(n)
        if trial % 3 == 0:  # ties, as rounded factor values make them
            x, y = np.round(x, 1), np.round(y, 1)
        if np.unique(x).size < 2 or np.unique(y).size < 2:
            continue  # constant: no correlation (the reference returns None first)
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], rel=0, abs=1e-15)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], rel=0, abs=1e-15)
    line = np.arange(n, dtype=float)  # perfect correlations
    for y in (3 * line + 1, -line):
        assert pearson(line, y) == pytest.approx(stats.pearsonr(line, y)[0], rel=0, abs=1e-15)

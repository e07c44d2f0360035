"""Fixtures for the quant tests: synthetic data directories and hand-made CSV files."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.quant.synth import write_synthetic


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 symbols x 600 business days, seed 7 (read-only for the tests)."""
    directory = tmp_path_factory.mktemp("synth")
    write_synthetic(directory, symbols=30, bars=600, seed=7)
    return directory

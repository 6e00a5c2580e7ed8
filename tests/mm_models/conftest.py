"""Shared fixtures for the mm_models tests."""

from __future__ import annotations

import pytest
from mm_testdata import read_arrays, seed_all, split

from cilp_plugin.data import synth


@pytest.fixture(scope="session")
def small_arrays(tmp_path_factory):
    """48 pairs (24 per class): enough to exercise the engine, not to learn."""
    return read_arrays(synth.generate(tmp_path_factory.mktemp("data") / "small", 24, seed=7))


@pytest.fixture
def small_split(small_arrays):
    return split(small_arrays, 0.25)


@pytest.fixture(autouse=True)
def _seeded():
    seed_all(0)

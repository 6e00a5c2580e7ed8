"""Shared fixtures: small generated data sets, made once per test session."""

import shutil

import pytest

from plugin import synth


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 pairs per class; read-only: copy it (``data_copy``) before changing it."""
    return synth.generate(tmp_path_factory.mktemp("tiny") / "data", n_per_class=8, seed=1)


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private, writable copy of ``tiny_data``."""
    return shutil.copytree(tiny_data, tmp_path / "data")

"""Shared fixtures: a private FiftyOne database, small generated data sets."""

import shutil

import pytest

from . import fiftyone_isolation

FIFTYONE_ENV = fiftyone_isolation.start()  # before anything imports fiftyone

from plugin import synth  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 pairs per class; read-only: copy it (``data_copy``) before changing it."""
    return synth.generate(tmp_path_factory.mktemp("tiny") / "data", n_per_class=8, seed=1)


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private, writable copy of ``tiny_data``."""
    return shutil.copytree(tiny_data, tmp_path / "data")

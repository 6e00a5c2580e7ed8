"""Shared fixtures: a private FiftyOne database, small generated data sets."""

import os
import shutil

import pytest

from . import fiftyone_isolation

FIFTYONE_ENV = fiftyone_isolation.start()  # before anything imports fiftyone

from cilp_plugin.data import synth  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def operators_may_use_tmp_paths(tmp_path_factory):
    """The operators accept paths only inside allowed folders (cilp_plugin.service.paths): allow pytest's."""
    os.environ["CILP_ALLOWED_ROOTS"] = str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 pairs per class; read-only: copy it (``data_copy``) before changing it."""
    return synth.generate(tmp_path_factory.mktemp("tiny") / "data", n_per_class=8, seed=1)


@pytest.fixture(scope="session")
def quirky_data(tmp_path_factory):
    """8 pairs per class, 2 of each quirk of published copies per class (``generate(quirks=2)``); read-only."""
    return synth.generate(tmp_path_factory.mktemp("quirky") / "data", n_per_class=8, seed=1, quirks=2)


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private, writable copy of ``tiny_data``."""
    return shutil.copytree(tiny_data, tmp_path / "data")


@pytest.fixture(scope="module")
def split_dataset(tiny_data):
    """``tiny_data`` ingested (one dataset per test module) and split 12 train / 4 val."""
    import uuid

    from cilp_plugin.dataset import ingest, splits

    dataset = ingest.ingest(tiny_data, f"split-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.25, seed=0)
    yield dataset
    dataset.delete()

"""Each class its colour in the App: the colour scheme ingest saves for the ground truth, and the one an
apply adds for its predictions, the same as the report's pictures."""

import uuid

import fiftyone as fo
import pytest

from cilp_plugin.data import synth
from cilp_plugin.dataset import CLASS_COLOURS, class_colours, colour_by_class, field_colours
from cilp_plugin.dataset.ingest import ingest
from cilp_plugin.dataset.splits import create_splits
from cilp_plugin.runs.training import train_on_dataset
from cilp_plugin.writeback import apply_run, pictures
from mm_models import ModelConfig, TrainConfig

CLASSES = ["cube", "sphere", "cylinder"]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = synth.generate(tmp_path_factory.mktemp("colours") / "data", 4, seed=5, classes=CLASSES, workers=1)
    dataset = ingest(root, f"colours-{uuid.uuid4().hex[:8]}").dataset
    yield dataset
    dataset.delete()


def test_every_class_has_its_own_colour_cube_and_sphere_keep_theirs():
    colours = class_colours(["cube", "sphere", "cylinder", "torus"])
    assert colours["cube"] == CLASS_COLOURS["cube"] and colours["sphere"] == CLASS_COLOURS["sphere"]
    assert len(set(colours.values())) == 4
    assert pictures.class_colours is class_colours and pictures.CLASS_COLOURS is CLASS_COLOURS


def test_ingest_colours_the_ground_truth_by_class(three):
    scheme = fo.load_dataset(three.name).app_config.color_scheme
    assert scheme.color_by == "value"
    assert field_colours(three, "ground_truth") == class_colours(CLASSES)


def test_two_classes_keep_the_default_colours(split_dataset):
    assert field_colours(split_dataset, "ground_truth") == CLASS_COLOURS


def test_an_apply_colours_its_predictions_and_keeps_the_other_fields(three, tmp_path):
    colour_by_class(three, ["elsewhere"], ["a", "b"])
    create_splits(three, val=0.25, seed=0)
    run = train_on_dataset(three, ModelConfig(family="lidar", widths=(4, 8, 8, 8)),
                           TrainConfig(epochs=1, batch_size=4, device="cpu", precision="fp32"),
                           runs_dir=tmp_path, name="tiny_lidar")
    apply_run(three, run.run_dir, embedding_map="none", device="cpu")
    saved = fo.load_dataset(three.name)
    assert field_colours(saved, "tiny_lidar") == class_colours(CLASSES)
    assert field_colours(saved, "ground_truth") == class_colours(CLASSES)
    assert field_colours(saved, "elsewhere") == class_colours(["a", "b"])
    assert [entry["path"] for entry in saved.app_config.color_scheme.fields].count("tiny_lidar") == 1

"""Three classes at 96 x 96 end to end: generate cube, sphere, cylinder with 96 x 96 images and
96 x 96 beams; ingest; split; train a fusion classifier from the CLI and the four CILP stages;
apply both; evaluate; the confusion picture.

Small and fast (CPU): 24 pairs per class, 1 to 2 epochs a stage.
"""

import contextlib
import io
import json
import uuid

import fiftyone as fo
import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from cilp_plugin import cli
from cilp_plugin.data import synth
from cilp_plugin.dataset.ingest import ingest
from cilp_plugin.dataset.splits import create_splits
from cilp_plugin.dataset.views import all_slices, dataset_classes
from cilp_plugin.runs.pipeline import train_cilp
from cilp_plugin.runs.registry import recorded_runs
from cilp_plugin.runs.training import train_on_dataset
from cilp_plugin.writeback import apply_run
from cilp_plugin.writeback.pictures import CONFUSION_PNG, write_pictures
from mm_models import ModelConfig, TrainConfig, load_run
from mm_models.stages import pipeline_spec

pytestmark = pytest.mark.slow  # its module fixture trains five runs

CLASSES = ["cube", "sphere", "cylinder"]
PER_CLASS = 24
SIZE = (96, 96)  # the images' and the range images' (azimuth x zenith)
FAST = ["--epochs", "2", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, monkeypatch_module):
    """The three-class 96 x 96 data ingested and split 54 / 18, intermediate add trained from the CLI,
    the CILP stages trained, both classifiers applied."""
    monkeypatch_module.setenv("CILP_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    root = synth.generate(tmp_path_factory.mktemp("classes") / "shapes", PER_CLASS, seed=3, classes=CLASSES,
                          image_size=SIZE, beams=SIZE)
    dataset = ingest(root, f"classes-{uuid.uuid4().hex[:8]}").dataset
    create_splits(dataset, val=0.25, seed=0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", dataset.name, "--family", "intermediate", "--fusion", "add", *FAST])
    assert code == 0, out.getvalue()
    train_cilp(dataset, epochs={"lidar": 2, "cilp": 1, "projector": 1, "rgb2lidar": 1}, batch_size=16,
               device="cpu", precision="fp32")
    applied = {run: apply_run(dataset, run, device="cpu") for run in ("intermediate_add", "rgb2lidar")}
    yield {"dataset": dataset, "train_out": out.getvalue(), "applied": applied}
    dataset.delete()


@pytest.fixture(scope="module")
def dataset(trained):
    return trained["dataset"]


def test_the_dataset_records_its_classes_and_the_split_keeps_each(dataset):
    assert dataset_classes(dataset) == CLASSES == dataset.default_classes == dataset.info["classes"]
    val = dataset.select_group_slices("rgb").match_tags("val")
    assert sorted(val.count_values("ground_truth.label").values()) == [6, 6, 6]


def test_the_dataset_records_its_sizes_and_its_slices_follow_them(dataset):
    assert dataset.info["image_size"] == list(SIZE) and dataset.info["beams"] == list(SIZE)
    sample = dataset.select_group_slices("rgb").first()
    group = dataset.get_group(sample.group.id)
    assert Image.open(group["rgb"].filepath).size == SIZE
    assert Image.open(group["depth"].filepath).size == SIZE[::-1]  # zenith rows, azimuth columns
    points = np.asarray(o3d.io.read_point_cloud(group["lidar"].filepath).points)
    assert 0 < len(points) == group["lidar"].lidar_returns <= SIZE[0] * SIZE[1]


@pytest.mark.parametrize("run", ["intermediate_add", "lidar", "cilp", "projector", "rgb2lidar"])
def test_every_run_reads_96_by_96_inputs(dataset, run):
    shapes = load_run(recorded_runs(dataset)[run]).spec.input_shapes()
    assert set(shapes.values()) == {(4, *SIZE)}


@pytest.mark.parametrize("run", ["intermediate_add", "lidar", "rgb2lidar"])
def test_the_classifiers_tell_three_classes_apart_and_name_them(dataset, run):
    loaded = load_run(recorded_runs(dataset)[run])
    assert loaded.spec.num_classes == 3
    assert loaded.manifest["class_names"] == CLASSES
    assert {"val/macro_f1", "val/precision_2", "val/recall_2", "val/f1_0"} <= set(loaded.manifest["best"])


def test_the_cli_prints_the_macro_f1(trained):
    assert "macro F1" in trained["train_out"]


@pytest.mark.parametrize("run", ["intermediate_add", "rgb2lidar"])
def test_predictions_name_a_class_with_three_logits(dataset, trained, run):
    predictions = all_slices(dataset).values(run)
    assert len(predictions) == 3 * 3 * PER_CLASS and None not in predictions
    for prediction in predictions:
        assert prediction.label in CLASSES and len(prediction.logits) == 3
        probabilities = np.exp(prediction.logits) / np.exp(prediction.logits).sum()
        assert prediction.confidence == pytest.approx(probabilities.max(), abs=1e-5)
        assert prediction.label == CLASSES[int(np.argmax(prediction.logits))]


@pytest.mark.parametrize("run", ["intermediate_add", "rgb2lidar"])
def test_the_evaluation_scores_three_classes_on_val(dataset, trained, run):
    result = trained["applied"][run]
    assert result.eval_key == f"eval_{run}"
    assert set(CLASSES) <= set(result.report) and int(result.report["macro avg"]["support"]) == 18
    confusion = dataset.load_evaluation_results(result.eval_key).confusion_matrix(classes=CLASSES)
    assert confusion.shape == (3, 3) and confusion.sum() == 18
    assert confusion.sum(1).tolist() == [6, 6, 6]


def test_the_confusion_picture_has_a_panel_per_evaluation(dataset, tmp_path):
    written = write_pictures(dataset, tmp_path)
    assert set(written[CONFUSION_PNG]) == {"eval_intermediate_add", "eval_rgb2lidar"}
    assert (tmp_path / CONFUSION_PNG).stat().st_size > 0


def test_a_model_of_another_class_count_is_refused(dataset, tmp_path):
    runs = recorded_runs(dataset)
    two_classes = pipeline_spec("lidar", {})
    with pytest.raises(ValueError, match=r"model: it tells 2 classes apart, dataset '.*' has 3 "
                                         r"\(cube, sphere, cylinder\); num_classes must be 3"):
        train_on_dataset(dataset, two_classes, TrainConfig(epochs=1, device="cpu"), runs_dir=tmp_path)
    assert pipeline_spec("rgb2lidar", {"projector": runs["projector"]}).num_classes == 3
    assert json.loads((runs["lidar"] / "manifest.json").read_text())["model"]["num_classes"] == 3
    assert not (tmp_path / dataset.slug / "lidar").exists()


def test_a_two_class_run_is_not_applied_to_three_classes(dataset, tmp_path, tiny_data):
    two = ingest(tiny_data, f"two-{uuid.uuid4().hex[:8]}").dataset
    try:
        create_splits(two, val=0.25, seed=0)
        result = train_on_dataset(two, ModelConfig(family="lidar", widths=(4, 8, 8, 8)),
                                  TrainConfig(epochs=1, batch_size=8, device="cpu"), runs_dir=tmp_path)
        assert result.manifest["class_names"] == ["cube", "sphere"]
        assert result.manifest["model"]["num_classes"] == 2
        with pytest.raises(ValueError, match=r"its model tells 2 classes apart, dataset '.*' has 3"):
            apply_run(dataset, result.run_dir, device="cpu")
    finally:
        fo.delete_dataset(two.name)

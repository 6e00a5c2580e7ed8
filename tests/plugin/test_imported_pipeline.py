"""Point clouds from elsewhere, end to end: imported with labels of their own and a sensor of 48 x 32
beams (the images stay 64 x 64), ingested, a fusion classifier and the CILP stages trained, applied."""

import csv
import shutil
import uuid

import pytest

from cilp_plugin import cli
from cilp_plugin.data import layout, synth
from cilp_plugin.dataset.ingest import ingest
from cilp_plugin.dataset.splits import create_splits
from cilp_plugin.dataset.views import all_slices, dataset_classes
from cilp_plugin.runs.pipeline import train_cilp
from cilp_plugin.runs.training import train_on_dataset
from cilp_plugin.writeback import apply_run
from mm_models import ModelConfig, TrainConfig

from .test_pointclouds import write_cloud

pytestmark = pytest.mark.slow  # trains a fusion classifier and the CILP stages on the imported pairs

#: the generated shapes, renamed as a user's own rig would name them
LABELS = {"cube": "crate", "sphere": "buoy", "cylinder": "barrel"}


def test_imported_point_clouds_train_and_apply_under_their_own_labels(tmp_path):
    data = synth.generate(tmp_path / "generated", 16, seed=4, classes=list(LABELS))
    src, rows = tmp_path / "rig", []
    for pair in layout.scan(data).pairs:  # one flat folder of images and clouds, as a recording gives them
        azimuth, zenith = layout.read_angles(pair.folder)
        xyza = layout.depth_to_xyza(layout.read_depth(pair.lidar_path), azimuth, zenith)
        stem = f"{pair.label}-{pair.stem}"
        write_cloud(src / "clouds" / f"{stem}.pcd", xyza[:3].reshape(3, -1).T[xyza[3].ravel() > 0])
        (src / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pair.rgb_path, src / "images" / f"{stem}.png")
        rows.append((stem, LABELS[pair.label]))
    with open(tmp_path / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows([("stem", "label"), *rows])
    assert cli.main(["import-pointclouds", str(src), str(tmp_path / "imported"), "--labels",
                     str(tmp_path / "labels.csv"), "--beams", "-16", "15.5", "48", "-16", "15.5", "32"]) == 0

    dataset = ingest(tmp_path / "imported", f"rig-{uuid.uuid4().hex[:8]}").dataset
    try:
        assert sorted(dataset_classes(dataset)) == sorted(LABELS.values())
        assert (dataset.info["image_size"], dataset.info["beams"]) == ([64, 64], [48, 32])
        create_splits(dataset, val=0.25, seed=0)
        result = train_on_dataset(dataset, ModelConfig(family="intermediate", fusion="add"),
                                  TrainConfig(epochs=1, batch_size=16, device="cpu", precision="fp32"),
                                  runs_dir=tmp_path / "runs")
        assert sorted(result.manifest["class_names"]) == sorted(LABELS.values())
        assert result.manifest["model"]["beams"] == [48, 32]  # its maps: RGB 4 x 4 pooled to LiDAR's 3 x 2
        train_cilp(dataset, epochs=1, batch_size=16, device="cpu", precision="fp32", runs_dir=tmp_path / "runs")
        for run in (result.run_dir, tmp_path / "runs" / dataset.slug / "rgb2lidar"):
            applied = apply_run(dataset, run, device="cpu")
            assert int(applied.report["macro avg"]["support"]) == 12
            predictions = all_slices(dataset).values(applied.field)
            assert None not in predictions and {p.label for p in predictions} <= set(LABELS.values())
            assert all(len(p.logits) == 3 for p in predictions)
    finally:
        dataset.delete()

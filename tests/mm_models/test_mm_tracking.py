"""metrics.csv / curves are covered in test_mm_engine; here: the optional wandb run, offline."""

import csv
import json
import struct

import pytest
from mm_testdata import TINY, random_pairs

from mm_models import CLASS_NAMES, ModelConfig, TrainConfig, predict, train

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


def wandb_records(path):
    """The protobuf records of a ``run-*.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    data, block, position, pending = path.read_bytes(), 32768, 7, b""  # 7-byte file header
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # block trailer
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if length == kind == 0:  # zero padding to the end of the block
            position += left - 7
            continue
        pending += data[position:position + length]
        position += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def complete_records(path, timeout: float = 30.0):
    """The records once the log holds its exit record: wandb's service may still be writing
    the file for a moment after ``finish()`` returns."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.25)


def offline_wandb(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def predictions_table(wandb_run) -> dict[str, list]:
    """The logged ``val/predictions`` table of an offline wandb run folder, column -> values."""
    [table_file] = wandb_run.glob("files/media/table/val/predictions*.table.json")
    table = json.loads(table_file.read_text())
    return {name: [row[i] for row in table["data"]] for i, name in enumerate(table["columns"])}


def test_offline_wandb_run_holds_metrics_predictions_and_checkpoint(small_split, tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path)
    train_data, val_data = small_split
    run = tmp_path / "run"
    train(TINY, TrainConfig(epochs=2, batch_size=8, precision="fp32", wandb=True, logged_predictions=8),
          train_data, val_data, run)

    [wandb_run] = (run / "wandb").glob("offline-run-*")  # inside the run folder, offline
    [log] = wandb_run.glob("run-*.wandb")
    history, artifacts, config = [], {}, {}
    for record in complete_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {"/".join(item.nested_key) or item.key: item.value_json for item in record.history.item}
            if "val/loss" in items:  # the per-epoch rows (the predictions table is logged apart)
                history.append(items)
        elif kind == "artifact":
            artifacts[record.artifact.type] = [entry.path for entry in record.artifact.manifest.contents]
        elif kind == "run":
            config = {item.key: item.value_json for item in record.run.config.update}

    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [json.loads(h["epoch"]) for h in history] == [1, 2]
    for logged, row in zip(history, rows):
        for key in ("train/loss", "val/loss", "val/accuracy", "val/f1", "lr", "samples_per_s"):
            assert json.loads(logged[key]) == pytest.approx(float(row[key]), rel=1e-6), key
    assert json.loads(config["spec"])["config"]["family"] == "intermediate"
    assert sorted(artifacts["model"]) == ["manifest.json", "model.safetensors"]

    column = predictions_table(wandb_run)
    true_labels = [CLASS_NAMES[int(v)] for v in val_data.labels[:8]]
    assert column["label"] == true_labels and set(true_labels) == {"cube", "sphere"}
    assert column["prediction"] == ["sphere" if p > 0.5 else "cube" for p in column["p_sphere"]]
    assert not list((tmp_path / "elsewhere").rglob("*.wandb"))


def test_a_three_class_predictions_table_names_the_classes(tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path)
    classes = ["cube", "sphere", "cylinder"]
    data = random_pairs(12, len(classes))
    result = train(ModelConfig(family="lidar", widths=(4, 8, 8, 8), num_classes=3),
                   TrainConfig(epochs=1, batch_size=6, device="cpu", precision="fp32", wandb=True,
                               logged_predictions=6),
                   data, data, tmp_path / "run", class_names=classes)

    [wandb_run] = (result.run_dir / "wandb").glob("offline-run-*")
    column = predictions_table(wandb_run)
    assert column["label"] == [classes[i % 3] for i in range(6)]
    predicted = predict(result.run_dir, data.subset(slice(0, 6)), device="cpu")
    assert column["prediction"] == predicted.names(classes)
    assert column["confidence"] == pytest.approx(predicted.confidences, abs=1e-4)

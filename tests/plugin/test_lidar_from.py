"""train-cilp --lidar-from: the assessment's lidar_cnn.pt imported as the lidar stage, the stages on top of it.

A randomly initialised state dict with the file's keys stands in for NVIDIA's file.
"""

import json

import pytest
import torch

from cilp_plugin import cli
from cilp_plugin.runs.registry import recorded_runs
from tests.mm_models.test_mm_assessment import assessment_classifier


@pytest.fixture(scope="module")
def lidar_cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("assessment") / "lidar_cnn.pt"
    torch.save(assessment_classifier().state_dict(), path)
    return path


def test_train_cilp_imports_lidar_cnn_and_builds_the_chain_on_it(split_dataset, lidar_cnn, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    code = cli.main(["train-cilp", split_dataset.name, "--lidar-from", str(lidar_cnn), "--epochs", "1",
                     "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--run-prefix", "nv_"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"nv_lidar: imported from {lidar_cnn}" in out
    runs = recorded_runs(split_dataset)
    manifest = json.loads((runs["nv_lidar"] / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["train"]["epochs"] == 0
    assert manifest["imported"]["from"] == str(lidar_cnn)
    assert manifest["imported"]["sha256"] == __import__("hashlib").sha256(lidar_cnn.read_bytes()).hexdigest()
    assert manifest["spec"]["config"]["lidar_input"] == "range" and manifest["val_size"] == 4
    # the later stages are built from the imported classifier: its 100-d layer locks CILP's LiDAR
    # tower, its 3,200-d map is the projector's target, its head ends the RGB -> LiDAR classifier
    for stage in ("cilp", "projector", "rgb2lidar"):
        spec = json.loads((runs[f"nv_{stage}"] / "manifest.json").read_text())["spec"]
        assert manifest["checkpoint_sha256"] in json.dumps(spec), stage
    assert cli.main(["apply", split_dataset.name, "nv_lidar", "--device", "cpu", "--embedding-map", "none"]) == 0
    assert split_dataset.select_group_slices("rgb").count("nv_lidar") == len(split_dataset)
    assert "eval_nv_lidar" in split_dataset.list_evaluations()


def test_lidar_from_refuses_a_wrong_file_before_any_stage_trains(split_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"embedder.0.weight": torch.zeros(50, 4, 3, 3)}, wrong)
    assert cli.main(["train-cilp", split_dataset.name, "--lidar-from", str(wrong), "--run-prefix", "bad_"]) == 2
    err = capsys.readouterr().err
    assert "embedder.0.weight has shape [50, 4, 3, 3], expected [50, 1, 3, 3]" in err and "missing" in err
    assert cli.main(["train-cilp", split_dataset.name, "--lidar-from", str(wrong), "--stages", "cilp"]) == 2
    assert "it replaces the lidar stage; include lidar in the stages" in capsys.readouterr().err
    assert not any(name.startswith("bad_") for name in recorded_runs(split_dataset))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("manifest.json"))


def test_the_train_cilp_operator_imports_lidar_cnn_from_a_path_it_may_use(split_dataset, lidar_cnn, tmp_path,
                                                                         monkeypatch):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    result = foo.execute_operator("@cilp/multimodal/train_cilp", ctx={"dataset": split_dataset, "params": {
        "stages": ["lidar"], "lidar_from": str(lidar_cnn), "run_prefix": "op_"}})
    assert result.error is None, result.error
    assert "op_lidar: imported from" in result.result["summary"]
    manifest = json.loads((recorded_runs(split_dataset)["op_lidar"] / "manifest.json").read_text())
    assert manifest["imported"]["from"] == str(lidar_cnn)

    with pytest.raises(ExecutionError, match="lidar_from: /etc/lidar_cnn.pt is outside the folders the operators"):
        foo.execute_operator("@cilp/multimodal/train_cilp", ctx={"dataset": split_dataset, "params": {
            "stages": ["lidar"], "lidar_from": "/etc/lidar_cnn.pt", "run_prefix": "out_"}})
    assert "out_lidar" not in recorded_runs(split_dataset)

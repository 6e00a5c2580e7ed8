"""train_fusion and apply_model through execute_operator: runs, predictions, evaluations, bad input."""

import shutil

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionError

from plugin import splits

URI = "@cilp/multimodal"


@pytest.fixture(scope="module")
def dataset(split_dataset):
    return split_dataset


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("CILP_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    run = foo.execute_operator(f"{URI}/train_fusion", ctx={
        "dataset": dataset, "params": {"family": "late", "epochs": 2, "batch_size": 8}})
    assert run.error is None, run.error
    return run.result


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_train_fusion_records_a_finished_run(dataset, trained):
    assert trained["run"] == "late" and trained["best_epoch"] in (1, 2)
    assert trained["params"] == 1_994_793
    assert dataset.info["cilp_runs"]["late"] == trained["run_dir"]
    assert 0 <= trained["val_accuracy"] <= 1


def test_apply_model_writes_predictions_on_every_slice_and_an_evaluation(dataset, trained):
    run = foo.execute_operator(f"{URI}/apply_model", ctx={"dataset": dataset, "params": {"run": "late"}})
    assert run.error is None, run.error
    assert run.result["field"] == "late" and run.result["predicted"] == 16

    flat = splits.all_slices(dataset)
    labels = flat.values("late.label")
    assert len(labels) == 48 and set(labels) <= {"cube", "sphere"}
    for pid in ("cube_0003", "sphere_0006"):
        group = flat.match(fo.ViewField("pair_id") == pid)
        assert len(set(group.values("late.confidence"))) == 1, "slices of a pair disagree"
    assert dataset.list_evaluations() == ["eval_late"]
    evaluated = dataset.select_group_slices("rgb").match_tags("val")
    assert set(evaluated.values("eval_late")) <= {True, False}
    assert run.result["accuracy"] == pytest.approx(
        sum(evaluated.values("eval_late")) / len(evaluated))
    results = dataset.load_evaluation_results("eval_late")
    assert results.confusion_matrix().sum() == 4


@pytest.mark.parametrize("params, message", [
    ({"family": "transformer"}, "family"),
    ({"epochs": -1}, "epochs"),
    ({"train_tag": "nope"}, "No pairs are tagged 'nope'"),
])
def test_train_fusion_rejects_bad_params_and_writes_nothing(dataset, trained, params, message):
    runs_before = dict(dataset.info["cilp_runs"])
    with pytest.raises(ExecutionError, match=message):
        foo.execute_operator(f"{URI}/train_fusion", ctx={"dataset": dataset, "params": {**params, "name": "bad"}})
    assert dataset.reload() or dataset.info["cilp_runs"] == runs_before


def test_apply_model_rejects_a_corrupted_checkpoint_and_writes_nothing(dataset, trained, tmp_path):
    broken = shutil.copytree(trained["run_dir"], tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ExecutionError, match="model.safetensors"):
        foo.execute_operator(f"{URI}/apply_model", ctx={"dataset": dataset, "params": {"run": str(broken)}})
    assert not dataset.has_sample_field("broken")


def test_apply_model_rejects_an_unknown_run(dataset, trained):
    with pytest.raises(ExecutionError, match="not a run folder, nor a run of dataset"):
        foo.execute_operator(f"{URI}/apply_model", ctx={"dataset": dataset, "params": {"run": "nothing_here"}})

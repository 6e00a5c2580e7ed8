"""train_fusion and apply_model through execute_operator: runs, predictions, evaluations, bad input."""

import json
import shutil
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError

from cilp_plugin import writeback
from cilp_plugin.dataset import views
from cilp_plugin.runs.registry import recorded_runs

URI = "@cilp/multimodal"


@pytest.fixture(scope="module")
def dataset(split_dataset):
    return split_dataset


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("CILP_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    run = foo.execute_operator(f"{URI}/train_fusion", ctx={
        "dataset": dataset, "params": {"family": "late", "epochs": 2, "batch_size": 8, "precision": "fp32",
                                       "data": "streamed"}})
    assert run.error is None, run.error
    return run.result


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_train_fusion_records_a_finished_run(dataset, trained):
    assert trained["run"] == "late" and trained["best_epoch"] in (1, 2)
    assert trained["params"] == 1_994_793
    assert str(recorded_runs(dataset)["late"]) == trained["run_dir"]
    assert 0 <= trained["val_accuracy"] <= 1
    manifest = json.loads((Path(trained["run_dir"]) / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["data"]["mode"] == "streamed"  # the form's choices


def test_apply_model_writes_predictions_on_every_slice_and_an_evaluation(dataset, trained):
    run = foo.execute_operator(f"{URI}/apply_model", ctx={"dataset": dataset, "params": {"run": "late"}})
    assert run.error is None, run.error
    assert run.result["field"] == "late" and run.result["predicted"] == 16

    flat = views.all_slices(dataset)
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


def test_apply_model_writes_embeddings_and_an_embedding_map(dataset, trained):
    run = foo.execute_operator(f"{URI}/apply_model", ctx={"dataset": dataset, "params": {"run": "late"}})
    assert run.error is None, run.error
    assert run.result["embedding_field"] == "late_embedding" and run.result["brain_key"] == "late_map"

    flat = views.all_slices(dataset)
    embeddings = np.array(flat.values("late_embedding"))
    assert embeddings.shape == (48, 20)  # late fusion's head: Linear(4, 20) + ReLU + Linear(20, 1)
    by_pair = {}
    for pid, embedding in zip(flat.values("pair_id"), embeddings):
        assert np.array_equal(by_pair.setdefault(pid, embedding), embedding), f"slices of {pid} disagree"

    assert dataset.list_brain_runs() == ["late_map"]
    assert len(dataset.load_brain_view("late_map")) == 16  # its view names no staged field
    rgb = dataset.select_group_slices("rgb")
    results = dataset.load_brain_results("late_map")
    assert results.points.shape == (16, 2) and sorted(results.sample_ids) == sorted(rgb.values("id"))
    assert np.isfinite(results.points).all() and results.points.std(axis=0).min() > 0


def test_apply_model_maps_small_sets_with_tsne(dataset, trained):
    # FiftyOne's t-SNE defaults (50 PCA dims, perplexity 30) fail on 16 points of 20-d
    run = foo.execute_operator(f"{URI}/apply_model", ctx={
        "dataset": dataset, "params": {"run": "late", "field": "late_tsne", "embedding_map": "tsne"}})
    assert run.error is None, run.error
    assert dataset.load_brain_results("late_tsne_map").points.shape == (16, 2)
    dataset.delete_brain_run("late_tsne_map")
    dataset.delete_evaluation("eval_late_tsne")
    for name in ("late_tsne", "late_tsne_embedding"):
        dataset.delete_sample_field(name)


def test_an_evaluation_scores_only_the_eval_tag_and_says_which_pairs(dataset, trained):
    none = writeback.apply_model(dataset, "late", field="late_untagged", eval_tag="holdout", embedding_map="none")
    assert none.report is None and none.eval_key is None and "eval_late_untagged" not in dataset.list_evaluations()
    assert "no evaluation: no predicted pair is tagged 'holdout'" in none.summary()  # not every pair, silently
    every = writeback.apply_model(dataset, "late", field="late_untagged", eval_tag=None, embedding_map="none")
    assert every.report["macro avg"]["support"] == 16
    assert "on 16 pairs (all of them: no evaluation tag, training pairs included)" in every.summary()
    val = writeback.apply_model(dataset, "late", field="late_untagged", embedding_map="none")
    assert val.report["macro avg"]["support"] == 4 and "on 4 pairs tagged 'val'" in val.summary()
    dataset.delete_evaluation("eval_late_untagged")
    for name in ("late_untagged", "late_untagged_embedding"):
        dataset.delete_sample_field(name)


def test_apply_replaces_only_what_an_earlier_apply_wrote(dataset, trained):
    flat = views.all_slices(dataset)
    flat.set_values("notes", ["mine"] * len(flat))  # a user's own field that happens to share a run's name
    try:
        for field in ("notes", "ground_truth", "lidar_returns"):
            with pytest.raises(ValueError, match=f"field '{field}' .* was not written by an apply"):
                writeback.apply_model(dataset, "late", field=field, embedding_map="none")
        assert flat.values("notes") == ["mine"] * len(flat)
        assert not dataset.has_sample_field("notes_embedding")
        first = writeback.apply_model(dataset, "late", field="mine_again", embedding_map="none")
        again = writeback.apply_model(dataset, "late", field="mine_again", embedding_map="none")  # its own: fine
        assert first.report == again.report
        rgb = dataset.select_group_slices("rgb")  # a user's evaluation under the key an apply would take:
        rgb.evaluate_classifications("mine_again", gt_field="ground_truth", eval_key="eval_theirs")
        with pytest.raises(ValueError, match="evaluation 'eval_theirs' .* scores 'mine_again', not 'theirs'"):
            writeback.apply_model(dataset, "late", field="theirs", embedding_map="none")
        assert dataset.get_evaluation_info("eval_theirs").config.pred_field == "mine_again"
        assert not dataset.has_sample_field("theirs") and not [
            f for f in dataset.get_field_schema() if f.startswith("staged_")]
    finally:
        for key in ("eval_theirs", "eval_mine_again"):
            if key in dataset.list_evaluations():
                dataset.delete_evaluation(key)
        for name in ("notes", "mine_again", "mine_again_embedding"):
            if dataset.has_sample_field(name):
                dataset.delete_sample_field(name)


def test_apply_model_interrupted_leaves_nothing_behind(dataset, trained):
    def interrupt_at_the_map(fraction, label):
        if label.startswith("embedding map"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writeback.apply_model(dataset, "late", field="late_stopped", progress=interrupt_at_the_map)
    assert not dataset.has_sample_field("late_stopped") and not dataset.has_sample_field("late_stopped_embedding")
    assert "eval_late_stopped" not in dataset.list_evaluations()
    assert "late_stopped_map" not in dataset.list_brain_runs()
    assert not [f for f in dataset.get_field_schema() if f.startswith("staged_")]


def test_an_interrupted_re_apply_keeps_the_previous_results(dataset, trained):
    writeback.apply_model(dataset, "late", field="late_again")
    flat = views.all_slices(dataset)
    before = (flat.values("late_again.confidence"), flat.values("eval_late_again"),
              dataset.load_brain_results("late_again_map").points.copy())
    dataset.select_group_slices("rgb").set_field("late_again.confidence", 0.5).save()  # tell old from new

    def interrupt_at_the_map(fraction, label):
        if label.startswith("embedding map"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writeback.apply_model(dataset, "late", field="late_again", progress=interrupt_at_the_map)
    rgb = dataset.select_group_slices("rgb")
    assert set(rgb.values("late_again.confidence")) == {0.5}, "the previous predictions were replaced"
    assert flat.values("eval_late_again") == before[1]
    assert np.array_equal(dataset.load_brain_results("late_again_map").points, before[2])
    assert not [f for f in dataset.get_field_schema() if f.startswith("staged_")]
    assert not [k for k in dataset.list_evaluations() + dataset.list_brain_runs() if k.startswith("staged_")]

    writeback.apply_model(dataset, "late", field="late_again", embedding_map="none")  # completes: replaced
    assert flat.values("late_again.confidence") == before[0]
    info = dataset.get_evaluation_info("eval_late_again").config
    assert info.pred_field == "late_again"  # the swapped-in evaluation names the final field
    assert len(dataset.load_evaluation_view("eval_late_again")) == 4  # the val pairs: no staged field named
    assert dataset.load_evaluation_results("eval_late_again").confusion_matrix().sum() == 4
    assert "late_again_map" not in dataset.list_brain_runs()  # this apply made no map
    dataset.delete_evaluation("eval_late_again")
    for name in ("late_again", "late_again_embedding"):
        dataset.delete_sample_field(name)


def test_apply_model_rejects_an_unknown_embedding_map(dataset, trained):
    with pytest.raises(ExecutionError, match="embedding_map"):
        foo.execute_operator(f"{URI}/apply_model", ctx={
            "dataset": dataset, "params": {"run": "late", "field": "late_mds", "embedding_map": "mds"}})
    assert not dataset.has_sample_field("late_mds")


@pytest.mark.parametrize("params, message", [
    ({"family": "transformer"}, "family"),
    ({"epochs": -1}, "epochs"),
    ({"train_tag": "nope"}, "No pairs are tagged 'nope'"),
])
def test_train_fusion_rejects_bad_params_and_writes_nothing(dataset, trained, params, message):
    runs_before = recorded_runs(dataset)
    with pytest.raises(ExecutionError, match=message):
        foo.execute_operator(f"{URI}/train_fusion", ctx={"dataset": dataset, "params": {**params, "name": "bad"}})
    dataset.reload()
    assert recorded_runs(dataset) == runs_before


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


def test_train_cilp_takes_a_stages_list_or_the_forms_ticked_stages(dataset, trained):
    common = {"epochs": 1, "batch_size": 8, "precision": "fp32", "device": "cpu", "run_prefix": "sdk_"}
    try:
        run = foo.execute_operator(f"{URI}/train_cilp", ctx={"dataset": dataset, "params": {
            "stages": ["lidar"], **common}})
        assert run.error is None, run.error
        assert run.result["runs"] == {"lidar": "sdk_lidar"}
        ticked = {"stage_lidar": False, "stage_cilp": True, "stage_projector": False, "stage_rgb2lidar": False}
        run = foo.execute_operator(f"{URI}/train_cilp", ctx={"dataset": dataset, "params": {**ticked, **common}})
        assert run.error is None, run.error
        assert run.result["runs"] == {"cilp": "sdk_cilp"}  # built from the sdk_lidar run recorded above
        with pytest.raises(ExecutionError, match="no_stage.*stages: tick at least one stage"):
            foo.execute_operator(f"{URI}/train_cilp", ctx={"dataset": dataset, "params": {
                **ticked, "stage_cilp": False, **common}})
    finally:
        for name in ("sdk_lidar", "sdk_cilp"):
            if name in recorded_runs(dataset):
                dataset.delete_run(name)

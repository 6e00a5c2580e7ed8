"""The plugin registers cleanly; each operator works from the SDK and the App server's routes."""

import json
import uuid

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError
from fiftyone.operators.registry import OperatorRegistry
from starlette.testclient import TestClient

from cilp_plugin.data import synth
from cilp_plugin.dataset import ingest, splits, views
from cilp_plugin.runs.registry import record_run, shipped_checkpoint
from cilp_plugin.runs.table import training_runs

URI = "@cilp/multimodal"
EXPECTED = ["load_rgb_lidar_dataset", "create_splits", "train_fusion", "train_cilp", "apply_model",
            "find_cross_modal_matches"]
PANELS = ["cilp_runs"]
THREE = ["cube", "sphere", "cylinder"]


@pytest.fixture(scope="module")
def client():
    from fiftyone.server.app import app

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def loaded(tiny_data):
    """A dataset made by the load operator from a local folder."""
    name = f"ops-{uuid.uuid4().hex[:8]}"
    run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset",
                               ctx={"params": {"source": "folder", "path": str(tiny_data), "name": name}})
    assert run.error is None, run.error
    yield fo.load_dataset(name), run.result
    fo.delete_dataset(name)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """cube, sphere, cylinder (3 pairs each), split, with the shipped (two-class) lidar checkpoint
    recorded as its run 'lidar'."""
    from mm_models.checkpoint import read_manifest

    root = synth.generate(tmp_path_factory.mktemp("three") / "data", 3, seed=7, classes=THREE, workers=1)
    dataset = ingest.ingest(root, f"three-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.34, seed=0)
    lidar = shipped_checkpoint("lidar")
    record_run(dataset, "lidar", lidar, read_manifest(lidar))
    yield dataset
    dataset.delete()


def form_fields(client, dataset, operator: str, params: dict | None = None) -> dict:
    """The properties of the operator's form, as the App server resolves them for ``dataset``."""
    return client.post("/operators/resolve-type", json={
        "dataset_name": dataset.name, "operator_uri": f"{URI}/{operator}", "target": "inputs",
        "params": params or {}}).json()["type"]["properties"]


def test_plugin_registers_every_operator_without_errors():
    registry = OperatorRegistry()
    assert registry.list_errors() == []
    uris = [op.uri for op in registry.list_operators() if op.uri.startswith(URI)]
    assert uris == [f"{URI}/{name}" for name in EXPECTED + PANELS]


def test_app_server_lists_the_operators_without_errors(client, loaded):
    dataset, _ = loaded
    answer = client.post("/operators", json={"dataset_name": dataset.name}).json()
    assert answer["errors"] == []
    names = {op["uri"] for op in answer["operators"]}
    assert {f"{URI}/{name}" for name in EXPECTED} <= names


def test_load_operator_builds_the_grouped_dataset(loaded):
    dataset, result = loaded
    assert result["added"] == 16 and result["groups"] == 16
    assert sorted(dataset.group_slices) == ["depth", "lidar", "rgb"]


def test_load_operator_applies_its_own_defaults_for_synthetic_data(tmp_path):
    name = f"synth-{uuid.uuid4().hex[:8]}"
    run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={
        "params": {"name": name, "n_per_class": 5, "dest": str(tmp_path / "synthetic")}})
    assert run.error is None, run.error
    dataset = fo.load_dataset(name)
    assert len(dataset) == 10 and dataset.info["data_root"] == str(tmp_path / "synthetic")
    dataset.delete()


def test_load_operator_renders_the_classes_asked_for(tmp_path):
    name = f"shapes-{uuid.uuid4().hex[:8]}"
    run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={
        "params": {"name": name, "n_per_class": 4, "classes": ["cube", "sphere", "cone"],
                   "dest": str(tmp_path / "shapes")}})
    assert run.error is None, run.error
    dataset = fo.load_dataset(name)
    assert dataset.default_classes == ["cube", "sphere", "cone"] and len(dataset) == 12
    assert dataset.select_group_slices("rgb").count_values("ground_truth.label") == {"cube": 4, "sphere": 4, "cone": 4}
    dataset.delete()


def test_load_operator_renders_the_sizes_asked_for(tmp_path):
    name = f"sizes-{uuid.uuid4().hex[:8]}"
    run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={
        "params": {"name": name, "n_per_class": 3, "image_size": 32, "beams": 16, "dest": str(tmp_path / "sized")}})
    assert run.error is None, run.error
    dataset = fo.load_dataset(name)
    assert (dataset.info["image_size"], dataset.info["beams"]) == ([32, 32], [16, 16]) and len(dataset) == 6
    rgb = dataset.select_group_slices("rgb").first()
    assert np.load(rgb.range_path).shape == (16, 16) and rgb.filepath.startswith(str(tmp_path / "sized"))
    dataset.delete()


@pytest.mark.parametrize("classes, message", [(["cube"], "choose two shapes or more"),
                                              (["cube", "prism"], "unknown shape 'prism'")])
def test_load_form_flags_classes_the_generator_cannot_render(client, classes, message):
    form = client.post("/operators/resolve-type", json={
        "dataset_name": None, "operator_uri": f"{URI}/load_rgb_lidar_dataset", "target": "inputs",
        "params": {"source": "synthetic", "classes": classes},
    }).json()
    field = form["type"]["properties"]["classes"]
    assert field["invalid"] and message in field["error_message"]


@pytest.mark.parametrize("params, message", [
    ({"source": "folder"}, "Path: path. Reason: Required property"),
    ({"source": "folder", "path": "/nonexistent/data"}, "/nonexistent/data is not a folder"),
    ({"source": "ftp"}, "source"),
])
def test_load_operator_reports_bad_params_and_writes_nothing(params, message):
    name = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ExecutionError, match=message):
        foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={"params": {**params, "name": name}})
    assert not fo.dataset_exists(name)


def test_split_operator_tags_pairs_and_exports_json(loaded, tmp_path):
    dataset, _ = loaded
    run = foo.execute_operator(f"{URI}/create_splits", ctx={
        "dataset": dataset, "params": {"val": 0.25, "seed": 5, "to_json": str(tmp_path / "s.json")}})
    assert run.error is None, run.error
    assert (run.result["train"], run.result["val"]) == (12, 4)
    assert views.all_slices(dataset).count_sample_tags() == {"train": 36, "val": 12}
    assert json.loads((tmp_path / "s.json").read_text())["seed"] == 5


def test_split_operator_through_the_app_server_route(client, loaded, tmp_path):
    dataset, _ = loaded
    (tmp_path / "ref.json").write_text(json.dumps({"train": ["cube_0001", "sphere_0002"], "val": ["cube_0003"],
                                                   "seed": 42, "subset_percentage": 0.3}))
    answer = client.post("/operators/execute", json={
        "dataset_name": dataset.name, "operator_uri": f"{URI}/create_splits",
        "params": {"from_json": str(tmp_path / "ref.json")}, "view": [],
    })
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body.get("error") is None, body
    assert body["result"]["train"] == 2 and body["result"]["missing"] == []
    assert views.all_slices(dataset).count_sample_tags() == {"train": 6, "val": 3}


def test_load_operator_through_the_app_server_route(client, tmp_path):
    name = f"route-{uuid.uuid4().hex[:8]}"
    answer = client.post("/operators/execute", json={
        "dataset_name": None, "operator_uri": f"{URI}/load_rgb_lidar_dataset",
        "params": {"source": "synthetic", "n_per_class": 3, "dest": str(tmp_path / "d"), "name": name},
        "view": [],
    })
    assert answer.status_code == 200 and answer.json().get("error") is None, answer.text
    assert len(fo.load_dataset(name)) == 6
    fo.delete_dataset(name)


def test_forms_resolve_with_validation(client, loaded, tmp_path):
    dataset, _ = loaded
    form = client.post("/operators/resolve-type", json={
        "dataset_name": dataset.name, "operator_uri": f"{URI}/load_rgb_lidar_dataset", "target": "inputs",
        "params": {"source": "folder", "path": str(tmp_path / "nope")},
    }).json()
    path_field = form["type"]["properties"]["path"]
    assert path_field["invalid"] and "is not a folder" in path_field["error_message"]
    form = client.post("/operators/resolve-type", json={
        "dataset_name": dataset.name, "operator_uri": f"{URI}/create_splits", "target": "inputs",
        "params": {},
    }).json()
    assert {"val", "test", "subset", "seed", "stratify", "from_json", "to_json"} <= set(form["type"]["properties"])


def test_apply_form_offers_runs_shipped_checkpoints_and_embedding_maps(client, loaded):
    from cilp_plugin.runs.registry import shipped_checkpoints

    dataset, _ = loaded

    def form(params):
        return client.post("/operators/resolve-type", json={
            "dataset_name": dataset.name, "operator_uri": f"{URI}/apply_model", "target": "inputs",
            "params": params}).json()["type"]["properties"]

    fields = form({})  # no runs on this dataset yet: the shipped checkpoints are offered first
    assert {"source", "checkpoint", "field", "tags", "eval_tag", "embedding_map", "device"} <= set(fields)
    assert fields["source"]["default"] == "checkpoint" and "run" not in fields
    offered = fields["checkpoint"]["type"]["values"]
    assert "intermediate_add" in offered and "cilp" in offered and "rgb2lidar" in offered
    assert offered == [name for name in shipped_checkpoints() if name != "projector"]  # nothing to write alone
    assert fields["embedding_map"]["type"]["values"] == ["pca", "tsne", "umap", "none"]
    assert fields["embedding_map"]["default"] == "pca"
    fields = form({"source": "run"})
    assert "checkpoint" not in fields and "no runs recorded" in fields["run"]["view"]["description"]


def test_split_operator_leaves_out_pairs_with_excluded_tags(client, quirky_data):
    name = f"quirky-ops-{uuid.uuid4().hex[:8]}"
    run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset",
                               ctx={"params": {"source": "folder", "path": str(quirky_data), "name": name}})
    assert run.error is None, run.error
    assert "4 pairs with an all-black RGB image (tag blank_rgb)" in run.result["summary"]
    dataset = fo.load_dataset(name)
    try:
        form = client.post("/operators/resolve-type", json={
            "dataset_name": name, "operator_uri": f"{URI}/create_splits", "target": "inputs",
            "params": {"exclude_tags": ["duplicate", "train"]}}).json()["type"]["properties"]["exclude_tags"]
        assert "this dataset: blank_rgb: 4 pairs, duplicate: 4 pairs" in form["view"]["description"]
        assert form["invalid"] and "'train' is a split tag" in form["error_message"]

        run = foo.execute_operator(f"{URI}/create_splits", ctx={
            "dataset": dataset, "params": {"val": 0.25, "seed": 0, "exclude_tags": ["blank_rgb", "duplicate"]}})
        assert run.error is None, run.error
        assert (run.result["train"], run.result["val"]) == (6, 2)  # 4 pairs a class left: 3 train, 1 val
        assert run.result["excluded"] == {"blank_rgb": 4, "duplicate": 4}
        rgb = dataset.select_group_slices("rgb")
        assert set(rgb.match_tags(["train", "val"]).values("pair_id")).isdisjoint(
            rgb.match_tags(["blank_rgb", "duplicate"]).values("pair_id"))
        assert views.all_slices(dataset).count_sample_tags() == {"train": 18, "val": 6, "blank_rgb": 12,
                                                                  "duplicate": 12}
        run = foo.execute_operator(f"{URI}/create_splits", ctx={
            "dataset": dataset, "params": {"val": 0.25, "exclude_tags": ["duplicate"]}})
        assert run.error is None and run.result["excluded"] == {"duplicate": 4}
        back = views.all_slices(dataset).match_tags("blank_rgb").count_sample_tags()
        assert back.get("train", 0) + back.get("val", 0) == back["blank_rgb"] == 12  # back in the split
        with pytest.raises(ExecutionError, match="'val' is a split tag"):
            foo.execute_operator(f"{URI}/create_splits", ctx={"dataset": dataset, "params": {"exclude_tags": ["val"]}})
    finally:
        dataset.delete()


@pytest.mark.parametrize("operator", ["train_fusion", "train_cilp", "apply_model"])
def test_training_and_apply_forms_show_the_datasets_classes(client, loaded, three_classes, operator):
    dataset, _ = loaded
    fields = form_fields(client, dataset, operator)
    assert fields["classes"]["view"]["label"] == "2 classes: cube, sphere — one logit (BCE)"
    assert fields["sizes"]["view"]["label"] == "inputs: images 64 x 64, range images 64 x 64 (azimuth x zenith beams)"
    assert form_fields(client, three_classes, operator)["classes"]["view"]["label"] == \
        "3 classes: cube, sphere, cylinder — a softmax head of 3 logits"


REFUSED = "run '{}' tells 2 classes apart (cube, sphere); this dataset has 3: a model of another class count is refused"


@pytest.mark.parametrize("operator, params, run", [
    ("train_cilp", {"stage_lidar": False}, "lidar"),  # the later stages are built from the recorded lidar run
    ("train_fusion", {"family": "lidar", "name": "lidar", "resume": True}, "lidar"),
    ("apply_model", {"source": "run", "run": "lidar"}, "lidar"),
    ("apply_model", {"source": "checkpoint", "checkpoint": "late"}, "late"),
])
def test_forms_say_when_a_runs_classes_are_not_the_datasets(client, three_classes, operator, params, run):
    fields = form_fields(client, three_classes, operator, params)
    assert fields[f"classes_of_{run}"]["view"]["label"] == REFUSED.format(run)


@pytest.mark.parametrize("operator, params", [
    ("train_cilp", {}),  # every stage trained anew
    ("train_fusion", {"family": "lidar", "name": "lidar"}),  # not resumed: replaced or renamed
    ("apply_model", {"source": "checkpoint", "checkpoint": "cilp"}),  # classifies nothing
])
def test_forms_say_nothing_of_runs_they_do_not_read(client, three_classes, operator, params):
    assert not [name for name in form_fields(client, three_classes, operator, params) if name.startswith("classes_of")]


def test_the_runs_table_shows_each_runs_classes(three_classes):
    assert [(row["run"], row["classes"]) for row in training_runs(three_classes)] == [("lidar", "cube, sphere")]

"""Paths sent to the operators (by the App, possibly a stranger's) stay inside the allowed folders.

Each test narrows ``CILP_ALLOWED_ROOTS`` to ``tmp_path/allowed``; ``tmp_path/outside`` is
then outside every root (FiftyOne's dataset dir and the runs dir lie elsewhere).
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionError
from starlette.testclient import TestClient

from cilp_plugin.dataset import views
from cilp_plugin.service import paths

URI = "@cilp/multimodal"


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """(allowed, outside): two folders, only the first allowed; outside holds a file of the user's."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    monkeypatch.setenv(paths.ALLOWED_ROOTS_ENV, str(allowed))
    return allowed, outside


def tags_of(dataset):
    return views.all_slices(dataset).count_sample_tags()


# --------------------------------------------------------------------------- the rule


def test_confine_accepts_paths_strictly_inside_a_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert paths.confine("dest", root / "sub" / "new", [root]) == root / "sub" / "new"
    for refused in (root, tmp_path / "elsewhere", root / ".." / "elsewhere", "relative/path"):
        with pytest.raises(paths.PathNotAllowed, match="^dest: .* is outside the folders the operators may use"):
            paths.confine("dest", refused, [root])


def test_confine_follows_symbolic_links(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(paths.PathNotAllowed, match=r"link/split.json \(that is, .*outside/split.json\) is outside"):
        paths.confine("to_json", root / "link" / "split.json", [root])


def test_the_roots_are_fiftyones_dataset_dir_the_runs_dir_and_the_environment(tmp_path, monkeypatch):
    from cilp_plugin.runs.registry import default_runs_dir

    extra = [tmp_path / "a", tmp_path / "b", tmp_path / "a" / "inside"]
    monkeypatch.setenv(paths.ALLOWED_ROOTS_ENV, os.pathsep.join(map(str, extra)))
    monkeypatch.setenv("CILP_RUNS_DIR", str(tmp_path / "runs"))
    roots = paths.allowed_roots()
    assert Path(fo.config.default_dataset_dir).resolve() in roots
    assert default_runs_dir() == tmp_path / "runs" and tmp_path / "runs" in roots
    assert set(extra[:2]) <= set(roots) and extra[2] not in roots, "a root inside another is left out"
    with pytest.raises(paths.PathNotAllowed) as error:
        paths.confine("dest", "/", roots)
    assert str(extra[0]) in str(error.value) and "CILP_ALLOWED_ROOTS" in str(error.value)


# --------------------------------------------------------------------------- load_rgb_lidar_dataset


@pytest.mark.parametrize("source", ["synthetic", "url"])
def test_load_operator_refuses_a_dest_outside_and_deletes_nothing(roots, source):
    _, outside = roots
    name = f"paths-{uuid.uuid4().hex[:8]}"
    params = {"source": source, "name": name, "dest": str(outside), "overwrite": True, "n_per_class": 2,
              "url": "https://example.invalid/data.zip"}
    with pytest.raises(ExecutionError, match=f"dest: {outside} is outside the folders the operators may use"):
        foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={"params": params})
    assert [p.name for p in outside.iterdir()] == ["precious.txt"] and not fo.dataset_exists(name)


def test_load_operator_overwrites_only_a_data_folder(roots):
    allowed, _ = roots
    folder = allowed / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    name = f"paths-{uuid.uuid4().hex[:8]}"
    params = {"source": "synthetic", "name": name, "dest": str(folder), "overwrite": True, "n_per_class": 2}
    with pytest.raises(ExecutionError, match="holds more than the generator's class folders .notes.txt."):
        foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={"params": params})
    assert (folder / "notes.txt").read_text() == "mine"

    params["dest"] = str(allowed / "synthetic")  # inside, and a data folder (or none yet): fine, twice
    for _ in range(2):
        run = foo.execute_operator(f"{URI}/load_rgb_lidar_dataset", ctx={"params": params})
        assert run.error is None, run.error
    assert len(fo.load_dataset(name)) == 4
    fo.delete_dataset(name)


def test_load_operator_refuses_a_data_folder_outside(roots, tiny_data):
    _, outside = roots
    data = shutil.copytree(tiny_data, outside / "data")
    name = f"paths-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ExecutionError, match="is not a folder the operators may use"):
        foo.execute_operator(f"{URI}/load_rgb_lidar_dataset",
                             ctx={"params": {"source": "folder", "path": str(data), "name": name}})
    assert not fo.dataset_exists(name) and not (outside / "data.cache").exists()


# --------------------------------------------------------------------------- create_splits


@pytest.fixture(scope="module")
def dataset(tiny_data):
    from cilp_plugin.dataset import ingest

    dataset = ingest.ingest(tiny_data, f"paths-{uuid.uuid4().hex[:8]}").dataset
    yield dataset
    dataset.delete()


def test_split_operator_writes_json_only_inside_the_allowed_folders(roots, dataset):
    allowed, outside = roots
    before = tags_of(dataset)
    for target, message in [(outside / "split.json", "to_json: .* is outside the folders"),
                            (outside / "precious.txt", "to_json: .* is outside the folders"),
                            (allowed / "split.txt", "to_json: expected a .json file")]:
        with pytest.raises(ExecutionError, match=message):
            foo.execute_operator(f"{URI}/create_splits", ctx={"dataset": dataset, "params": {"to_json": str(target)}})
    assert [p.name for p in outside.iterdir()] == ["precious.txt"] and (outside / "precious.txt").read_text() == "mine"
    assert not (allowed / "split.txt").exists() and tags_of(dataset) == before

    run = foo.execute_operator(f"{URI}/create_splits", ctx={
        "dataset": dataset, "params": {"val": 0.25, "to_json": str(allowed / "split.json")}})
    assert run.error is None, run.error
    assert json.loads((allowed / "split.json").read_text())["seed"] == 42


def test_split_operator_reads_json_only_inside_the_allowed_folders(roots, dataset):
    _, outside = roots
    (outside / "ref.json").write_text(json.dumps({"train": ["cube_0001"], "val": ["cube_0002"]}))
    before = tags_of(dataset)
    with pytest.raises(ExecutionError, match="from_json: .* is outside the folders"):
        foo.execute_operator(f"{URI}/create_splits",
                             ctx={"dataset": dataset, "params": {"from_json": str(outside / "ref.json")}})
    assert tags_of(dataset) == before


def test_the_app_server_route_is_confined_and_its_form_says_why(roots, dataset):
    from fiftyone.server.app import app

    _, outside = roots
    with TestClient(app) as client:
        answer = client.post("/operators/execute", json={
            "dataset_name": dataset.name, "operator_uri": f"{URI}/create_splits",
            "params": {"to_json": str(outside / "split.json")}, "view": []})
        form = client.post("/operators/resolve-type", json={
            "dataset_name": dataset.name, "operator_uri": f"{URI}/load_rgb_lidar_dataset", "target": "inputs",
            "params": {"source": "synthetic", "dest": str(outside)}}).json()
    assert answer.status_code == 500 and "Path: to_json. Reason: to_json: " in answer.text
    assert "is outside the folders the operators may use" in answer.text and not (outside / "split.json").exists()
    dest = form["type"]["properties"]["dest"]
    assert dest["invalid"] and "outside the folders the operators may use" in dest["error_message"]


# --------------------------------------------------------------------------- apply_model, find_cross_modal_matches


def test_apply_model_opens_run_folders_only_inside_the_allowed_folders(roots, dataset):
    _, outside = roots
    with pytest.raises(ExecutionError, match="not a run folder, nor a run of dataset .* only inside"):
        foo.execute_operator(f"{URI}/apply_model",
                             ctx={"dataset": dataset, "params": {"source": "run", "run": str(outside)}})


def test_find_cross_modal_matches_takes_a_run_name_not_a_path(dataset):
    selected = [dataset.select_group_slices("rgb").first().id]
    with pytest.raises(ExecutionError, match="run name: expected letters"):
        foo.execute_operator(f"{URI}/find_cross_modal_matches",
                             ctx={"dataset": dataset, "selected": selected, "params": {"run": "../../etc"}})

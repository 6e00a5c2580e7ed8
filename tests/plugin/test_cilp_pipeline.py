"""The CILP pipeline on a dataset, end to end: train-cilp, apply, maps, indexes, search, operators, CLI.

The four stages train once (module fixture) on 2 x 100 easy generated pairs,
80 / 20, with few epochs (1.5 to 2 minutes on a busy 2-core CPU); everything else
reads what they wrote. The last test retrains rgb2lidar through the operator.
"""

import contextlib
import csv
import dataclasses
import io
import shutil
import uuid

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError
from fiftyone.operators.registry import OperatorRegistry

from cilp_plugin import cli
from cilp_plugin.data import layout, synth
from cilp_plugin.dataset import arrays
from cilp_plugin.dataset.ingest import ingest
from cilp_plugin.dataset.splits import create_splits
from cilp_plugin.dataset.views import all_slices
from cilp_plugin.runs.pipeline import train_cilp
from cilp_plugin.runs.registry import record_run, recorded_runs
from cilp_plugin.writeback import apply_run
from cilp_plugin.writeback.cilp import apply_cilp, find_cross_modal_matches
from mm_models import load_run, outputs_of

pytestmark = pytest.mark.slow  # its module fixture trains the four CILP stages

URI = "@cilp/multimodal"
EASY = dataclasses.replace(synth.LEGACY, distance=(6.0, 8.0), size=(1.0, 1.4), brightness=0.8, offset=0.2)
PER_CLASS = 100
EPOCHS = {"lidar": 1, "cilp": 6, "projector": 1, "rgb2lidar": 1}  # cilp: 60-70 % val top-5 among 200
STAGES = ("lidar", "cilp", "projector", "rgb2lidar")
SLICES = ("rgb", "depth", "lidar")
MAPS = ("cilp_rgb_map", "cilp_lidar_map")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("cilp") / "easy", PER_CLASS, seed=5, config=EASY)


@pytest.fixture(scope="module")
def pipeline(easy_data, tmp_path_factory, monkeypatch_module):
    """``easy_data`` ingested, split 160 / 40, the four stages trained, cilp and rgb2lidar applied."""
    runs_dir = tmp_path_factory.mktemp("runs")
    monkeypatch_module.setenv("CILP_RUNS_DIR", str(runs_dir))
    dataset = ingest(easy_data, f"cilp-{uuid.uuid4().hex[:8]}").dataset
    create_splits(dataset, val=0.2, seed=0)
    # the reference's CILP (both towers trained): the instance-level search tests need it; the
    # locked tower (the default) is tested on its own below
    results = train_cilp(dataset, epochs=EPOCHS, batch_size=16, device="cpu", precision="fp32",
                         lidar_tower="trained")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["apply", dataset.name, "cilp", "--device", "cpu"])
    rgb2lidar = apply_run(dataset, "rgb2lidar", device="cpu")
    yield {"dataset": dataset, "results": results, "runs_dir": runs_dir, "apply_code": code,
           "apply_out": out.getvalue(), "rgb2lidar": rgb2lidar}
    dataset.delete()


@pytest.fixture(scope="module")
def dataset(pipeline):
    return pipeline["dataset"]


def rgb_id(dataset, pair_id):
    return dataset.select_group_slices("rgb").match(fo.ViewField("pair_id") == pair_id).first().id


def by_pair(dataset, slice_name, field):
    view = dataset.select_group_slices(slice_name)
    return dict(zip(*view.values(["pair_id", field])))


def snapshot(dataset):
    """What an apply writes: per slice, pair -> embedding / similarity / rank, and the brain runs."""
    dataset.reload()
    values = {s: {f: by_pair(dataset, s, f) for f in ("cilp_embedding", "cilp_pair_similarity", "cilp_pair_rank")}
              for s in SLICES}
    points = {key: dataset.load_brain_results(key).points.copy() for key in MAPS}
    return values, sorted(dataset.list_brain_runs()), points


def leftovers(dataset):
    dataset.reload()
    return ([f for f in dataset.get_field_schema() if f.startswith("staged_")]
            + [k for k in dataset.list_brain_runs() if k.startswith("staged_")])


# --------------------------------------------------------------------------- 1. stages and write-back


def test_every_stage_is_recorded_linked_and_loads(pipeline, dataset):
    recorded = recorded_runs(dataset)
    assert set(STAGES) <= set(recorded)
    for stage, result in pipeline["results"].items():
        assert recorded[stage] == result.run_dir == pipeline["runs_dir"] / dataset.slug / stage
        loaded = load_run(recorded[stage])
        assert loaded.manifest["status"] == "finished"
        assert len(result.history) == EPOCHS[stage], stage
    kinds = {stage: load_run(recorded[stage]).spec for stage in STAGES}
    assert {s: spec.kind for s, spec in kinds.items()} == {
        "lidar": "classifier", "cilp": "cilp", "projector": "projector", "rgb2lidar": "rgb2lidar"}
    assert kinds["lidar"].config.family == "lidar"
    assert {role: p.run for role, p in kinds["projector"].parents.items()} == {
        "cilp": str(recorded["cilp"]), "lidar": str(recorded["lidar"])}
    assert kinds["rgb2lidar"].parents["projector"].run == str(recorded["projector"])


def test_apply_writes_the_cilp_fields_and_the_rgb2lidar_predictions(pipeline, dataset):
    assert pipeline["apply_code"] == 0, pipeline["apply_out"]
    assert f"for {2 * PER_CLASS} pairs" in pipeline["apply_out"] and "cilp_search" in pipeline["apply_out"]
    for name in ("cilp_embedding", "cilp_pair_similarity", "cilp_pair_rank", "rgb2lidar", "rgb2lidar_embedding"):
        assert dataset.has_sample_field(name), name
    flat = all_slices(dataset)
    assert len(flat) == 3 * 2 * PER_CLASS
    assert set(flat.values("rgb2lidar.label")) <= {"cube", "sphere"} and None not in flat.values("rgb2lidar.label")
    result = pipeline["rgb2lidar"]
    assert result.field == "rgb2lidar" and result.eval_key == "eval_rgb2lidar"
    assert "eval_rgb2lidar" in dataset.list_evaluations()
    evaluated = dataset.select_group_slices("rgb").match_tags("val")
    assert len(evaluated) == 40
    assert result.report["accuracy"] == pytest.approx(np.mean(evaluated.values("eval_rgb2lidar")))


# --------------------------------------------------------------------------- 2. embeddings and pair scores


def test_each_slice_holds_its_own_modalitys_embedding(pipeline, dataset):
    data = arrays.from_dataset(dataset)
    out = outputs_of(load_run(recorded_runs(dataset)["cilp"]), data.tensors(), device="cpu")
    expected = {"rgb": out["rgb_features"], "lidar": out["lidar_features"], "depth": out["lidar_features"]}
    assert not np.allclose(out["rgb_features"], out["lidar_features"], atol=1e-2)  # the check can tell them apart
    for slice_name in SLICES:
        stored = by_pair(dataset, slice_name, "cilp_embedding")
        assert sorted(stored) == sorted(data.pair_ids), slice_name
        written = np.stack([stored[pid] for pid in data.pair_ids])
        assert written.shape == (2 * PER_CLASS, 200), slice_name
        np.testing.assert_allclose(written, expected[slice_name], atol=1e-5, err_msg=slice_name)


def test_pair_similarity_is_the_dot_product_of_the_pairs_embeddings_and_ranks_follow(dataset):
    rgb, lidar = by_pair(dataset, "rgb", "cilp_embedding"), by_pair(dataset, "lidar", "cilp_embedding")
    pair_ids = sorted(rgb)
    R, L = np.stack([rgb[p] for p in pair_ids]), np.stack([lidar[p] for p in pair_ids])
    dots = (R * L).sum(1)
    scores = R @ L.T  # row i: pair i's RGB against every LiDAR
    best = 1 + (scores > dots[:, None] + 1e-5).sum(1)  # near-ties (float rounding) may count either way
    worst = (scores >= dots[:, None] - 1e-5).sum(1)  # the true pair counts itself
    for slice_name in SLICES:
        similarity = by_pair(dataset, slice_name, "cilp_pair_similarity")
        rank = np.array([by_pair(dataset, slice_name, "cilp_pair_rank")[p] for p in pair_ids])
        np.testing.assert_allclose([similarity[p] for p in pair_ids], dots, atol=1e-5, err_msg=slice_name)
        assert ((best <= rank) & (rank <= worst)).all(), slice_name
    assert rank.min() >= 1 and (rank == 1).any() and rank.max() > 5


# --------------------------------------------------------------------------- 3. maps and indexes


def test_maps_and_the_similarity_index_exist_and_nothing_staged_is_left(dataset):
    assert {run: dataset.get_brain_info(run).config.type for run in dataset.list_brain_runs()
            if run.startswith("cilp_")} == {
        "cilp_rgb_map": "visualization", "cilp_lidar_map": "visualization", "cilp_search": "similarity"}
    points = {key: dataset.load_brain_results(key).points for key in MAPS}
    n = 2 * PER_CLASS
    assert points["cilp_rgb_map"].shape == points["cilp_lidar_map"].shape == (n, 2)
    assert all(np.isfinite(p).all() and p.std(axis=0).min() > 0 for p in points.values())
    assert not np.allclose(points["cilp_rgb_map"], points["cilp_lidar_map"])  # one map per modality
    # both maps hold the default (rgb) slice's samples, which the App's Embeddings panel colours on every
    # slice; their views name no staged field: the App and the report load them with every point
    for key in MAPS:
        assert dataset.load_brain_view(key).distinct("group.name") == ["rgb"], key
        assert len(dataset.load_brain_view(key)) == n, key
    assert len(dataset.load_brain_results("cilp_search").sample_ids) == 3 * n  # every slice
    val = dataset.select_group_slices("rgb").match_tags("val")
    assert len(dataset.load_evaluation_view("eval_rgb2lidar")) == len(val)
    assert leftovers(dataset) == []


def test_the_default_locked_lidar_tower_gives_an_rgb_classifier_before_fine_tuning(pipeline, dataset):
    """CILP with the LiDAR tower locked to the lidar run: its RGB embeddings carry the class, so the
    chain classifies before fine-tuning, where the trained-tower chain of the fixture cannot."""
    results = train_cilp(dataset, stages=["lidar", "cilp", "projector", "rgb2lidar"], run_prefix="locked_",
                         epochs={"lidar": 10, "cilp": 6, "projector": 6, "rgb2lidar": 1}, batch_size=16,
                         device="cpu", precision="fp32")
    cilp = results["cilp"].spec
    assert cilp.config.lidar_tower == "locked" and cilp.parents["lidar"].run == str(results["lidar"].run_dir)
    locked = results["rgb2lidar"].manifest["initial"]["val/accuracy"]
    trained = pipeline["results"]["rgb2lidar"].manifest["initial"]["val/accuracy"]
    # measured here: 0.72-0.95 against 0.5 (chance); on the default data 99.75 % against 64-65 %
    assert locked >= 0.65 and locked >= trained + 0.15, (locked, trained)


# --------------------------------------------------------------------------- 4. cross-modal search


def test_rgb_finds_its_own_lidar_in_the_top_5_for_most_val_pairs(dataset):
    val = dataset.select_group_slices("rgb").match_tags("val")
    found = []
    for sample_id, pair_id in zip(*val.values(["id", "pair_id"])):
        matches = find_cross_modal_matches(dataset, [sample_id], k=5)
        assert matches.values("group.name") == ["lidar"] * 5
        found.append(pair_id in matches.values("pair_id"))
    assert len(found) == 40 and np.mean(found) > 0.5, f"{sum(found)} of {len(found)}"


@pytest.mark.parametrize("query_slice", ["lidar", "depth"])
def test_lidar_and_depth_samples_find_rgb_images(dataset, query_slice):
    view = dataset.select_group_slices(query_slice).match_tags("val")
    matches = find_cross_modal_matches(dataset, view.values("id")[:3], k=4)
    assert matches.values("group.name") == ["rgb"] * 4
    assert matches.first().media_type == "image"


# --------------------------------------------------------------------------- 5. a swapped pair


def returns_centre(path):
    """Where the object sits in a LiDAR range image: the mean row and column of its returns."""
    rows, cols = np.nonzero(layout.read_depth(path) < layout.NO_RETURN)
    return np.array([rows.mean(), cols.mean()])


@pytest.fixture(scope="module")
def swapped(pipeline, easy_data, tmp_path_factory):
    """A copy of the data where a val cube and a val sphere exchanged their LiDAR, the cilp run applied.

    The sphere is the one whose object sits farthest from the cube's in the view: two scenes that
    differ in shape alone (same place, similar size) are a harder test than a few epochs of CILP pass.
    """
    dataset = pipeline["dataset"]
    val = sorted(dataset.select_group_slices("rgb").match_tags("val").values("pair_id"))
    lidar = {pid: easy_data / f"{pid.split('_')[0]}s" / "lidar" / f"{pid.split('_')[1]}.npy" for pid in val}
    cube = next(p for p in val if p.startswith("cube"))
    sphere = max((p for p in val if p.startswith("sphere")),
                 key=lambda p: np.linalg.norm(returns_centre(lidar[p]) - returns_centre(lidar[cube])))
    root = shutil.copytree(easy_data, tmp_path_factory.mktemp("swapped") / "data")
    a, b = (root / lidar[p].relative_to(easy_data) for p in (cube, sphere))
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    other = ingest(root, f"swapped-{uuid.uuid4().hex[:8]}").dataset
    result = apply_cilp(other, recorded_runs(dataset)["cilp"], device="cpu")
    yield other, (cube, sphere), result
    other.delete()


def test_a_pair_with_another_classs_lidar_scores_among_the_lowest(swapped):
    other, pairs, result = swapped
    assert result.pairs == 2 * PER_CLASS and result.run == "cilp"
    similarity = by_pair(other, "rgb", "cilp_pair_similarity")
    lowest = sorted(similarity, key=similarity.get)[:len(similarity) // 20]  # bottom 5 %
    assert set(pairs) <= set(lowest), {p: sorted(similarity.values()).index(similarity[p]) for p in pairs}
    rank = by_pair(other, "lidar", "cilp_pair_rank")
    assert all(rank[p] > 5 for p in pairs)


def test_a_query_embedding_of_another_size_is_refused(swapped):
    other = swapped[0]
    sample = other.select_group_slices("rgb").first()
    sample["cilp_embedding"] = np.full(100, 0.1)
    sample.save()
    with pytest.raises(ValueError, match="selected embeddings are 100-d.*holds 200-d"):
        find_cross_modal_matches(other, [sample.id], k=5)


# --------------------------------------------------------------------------- 6. bad inputs


def test_a_later_stage_without_its_parent_run_is_refused_before_training(split_dataset, pipeline):
    before = sorted(p.name for p in pipeline["runs_dir"].iterdir())
    with pytest.raises(ValueError, match="'cilp' run 'cilp'.*does not have"):
        train_cilp(split_dataset, stages=["projector"], epochs=1, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="'lidar' run 'lidar'"):  # cilp would train first: it must not
        train_cilp(split_dataset, stages=["cilp", "projector"], epochs=1, batch_size=8, device="cpu")
    split_dataset.reload()
    assert recorded_runs(split_dataset) == {}
    assert sorted(p.name for p in pipeline["runs_dir"].iterdir()) == before


def test_a_recorded_parent_of_the_wrong_kind_is_named_before_training(split_dataset, pipeline):
    cilp_run = recorded_runs(pipeline["dataset"])["cilp"]
    before = sorted(p.name for p in pipeline["runs_dir"].iterdir())
    record_run(split_dataset, "lidar", cilp_run, load_run(cilp_run).manifest)
    try:  # the recorded 'lidar' (the locked tower of cilp) is checked before the cilp stage trains
        with pytest.raises(ValueError, match="stage 'cilp': the 'lidar' run 'lidar' .*expected a LiDAR-only "
                                             "classifier"):
            train_cilp(split_dataset, stages=["cilp", "projector"], epochs=1, batch_size=8, device="cpu")
    finally:
        split_dataset.delete_run("lidar")
    assert sorted(p.name for p in pipeline["runs_dir"].iterdir()) == before


def test_apply_indexes_the_pair_scores_and_replaces_former_per_slice_indexes(split_dataset):
    """The grid's "Sort by" lists indexed fields only; indexes of one slice, which failed the App's
    search on another slice, are deleted by a re-apply."""
    import fiftyone.brain as fob


    dataset = split_dataset.clone(f"{split_dataset.name}-indexes")
    try:
        rgb = dataset.select_group_slices("rgb")
        fob.compute_similarity(rgb, embeddings=np.eye(len(rgb), 4), backend="sklearn", brain_key="cilp_rgb_sim",
                               progress=False)  # an index under its former name, from an older apply
        assert cli.main(["apply", dataset.name, "--checkpoint", "cilp"]) == 0
        dataset.reload()
        indexed = {spec["key"][0][0] for spec in dataset.get_index_information().values()}
        assert {"cilp_pair_similarity", "cilp_pair_rank"} <= indexed
        similarity = sorted(key for key in dataset.list_brain_runs()
                            if dataset.get_brain_info(key).config.type == "similarity")
        assert similarity == ["cilp_search"]
        assert len(find_cross_modal_matches(dataset, [rgb.first().id], k=3)) == 3
    finally:
        dataset.delete()


def test_apply_logs_no_map_messages_of_fiftyones(split_dataset):
    """FiftyOne logs "Generating visualization..." for every map, which an apply printed 1-3 times."""
    import logging

    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("fiftyone.brain.visualization")  # what FiftyOne's console handler prints
    logger.addHandler(handler)
    dataset = split_dataset.clone(f"{split_dataset.name}-quiet")
    try:
        assert cli.main(["apply", dataset.name, "--checkpoint", "cilp", "intermediate_add"]) == 0
    finally:
        logger.removeHandler(handler)
        dataset.delete()
    assert logged == []


def test_progress_names_the_stage_once(split_dataset, tmp_path):
    labels = []
    train_cilp(split_dataset, stages=["lidar"], epochs=1, batch_size=8, device="cpu", precision="fp32",
               run_prefix="progress_", runs_dir=tmp_path, progress=lambda fraction, label: labels.append(label))
    split_dataset.delete_run("progress_lidar")
    epoch_labels = [label for label in labels if "epoch 1/1: " in label]
    assert epoch_labels and all(label.startswith("stage 1/1: progress_lidar: epoch 1/1: ") for label in epoch_labels), \
        labels


@pytest.mark.parametrize("epochs, message", [
    ({"clip": 3}, "epochs: unknown stages clip"),
    ({"lidar": 0}, "epochs: expected an integer >= 1"),  # not silently the preset's
])
def test_bad_epochs_are_named(split_dataset, epochs, message):
    with pytest.raises(ValueError, match=message):
        train_cilp(split_dataset, stages=["lidar"], epochs=epochs, device="cpu")


def test_a_projector_run_cannot_be_applied(dataset, capsys):
    fields, brain_runs = sorted(dataset.get_field_schema()), sorted(dataset.list_brain_runs())
    with pytest.raises(ValueError, match="projector run has nothing to write back"):
        apply_run(dataset, "projector")
    with pytest.raises(ValueError, match="not a cilp run"):
        apply_cilp(dataset, "projector")
    assert cli.main(["apply", dataset.name, "projector"]) == 2
    assert "projector run" in capsys.readouterr().err
    dataset.reload()
    assert sorted(dataset.get_field_schema()) == fields and sorted(dataset.list_brain_runs()) == brain_runs


def test_a_query_without_an_embedding_names_the_field(split_dataset):
    sample_id = split_dataset.select_group_slices("rgb").first().id
    with pytest.raises(ValueError, match="cilp_embedding"):
        find_cross_modal_matches(split_dataset, [sample_id], k=5)
    assert not split_dataset.has_sample_field("cilp_embedding")


@pytest.mark.parametrize("ids, k, message", [
    ([], 5, "selection: select one or more samples"),
    (None, 0, "k: expected a positive integer"),
    (["0123456789abcdef01234567"], 5, "not samples of dataset"),
])
def test_bad_selections_are_named(dataset, ids, k, message):
    ids = [rgb_id(dataset, "cube_0000")] if ids is None else ids
    with pytest.raises(ValueError, match=message):
        find_cross_modal_matches(dataset, ids, k=k)


def test_a_mixed_selection_is_refused(dataset):
    rgb = rgb_id(dataset, "cube_0000")
    lidar = dataset.select_group_slices("lidar").first().id
    with pytest.raises(ValueError, match="one modality"):
        find_cross_modal_matches(dataset, [rgb, lidar], k=5)


def test_an_interrupted_reapply_keeps_the_previous_results(dataset, monkeypatch):
    import fiftyone.brain as fob

    marked = all_slices(dataset).match(fo.ViewField("pair_id") == "cube_0005")
    real = marked.values("cilp_pair_similarity")
    marked.set_values("cilp_pair_similarity", [42.0] * len(real))  # a re-apply would overwrite it
    before_values, before_runs, before_points = snapshot(dataset)
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(kwargs.get("brain_key"))
        raise KeyboardInterrupt

    monkeypatch.setattr(fob, "compute_visualization", interrupt)
    with pytest.raises(KeyboardInterrupt):
        apply_cilp(dataset, "cilp", device="cpu")
    assert calls and calls[0].startswith("staged_")  # it got as far as the maps (indexes already staged)
    monkeypatch.undo()

    after_values, after_runs, after_points = snapshot(dataset)
    assert leftovers(dataset) == []
    assert after_runs == before_runs
    for key in MAPS:
        np.testing.assert_array_equal(after_points[key], before_points[key])
    for slice_name in SLICES:
        for name, values in before_values[slice_name].items():
            assert after_values[slice_name][name].keys() == values.keys()
            for pid, value in values.items():
                np.testing.assert_array_equal(after_values[slice_name][name][pid], value)
    assert set(marked.values("cilp_pair_similarity")) == {42.0}
    marked.set_values("cilp_pair_similarity", real)
    assert len(find_cross_modal_matches(dataset, [rgb_id(dataset, "cube_0000")], k=3)) == 3  # the index works


# --------------------------------------------------------------------------- 7. operators, 8. CLI


def test_both_operators_are_registered_without_errors():
    registry = OperatorRegistry()
    assert registry.list_errors() == []
    uris = {op.uri for op in registry.list_operators()}
    assert {f"{URI}/train_cilp", f"{URI}/find_cross_modal_matches"} <= uris


def test_find_cross_modal_matches_operator(dataset):
    query = rgb_id(dataset, "sphere_0001")
    run = foo.execute_operator(f"{URI}/find_cross_modal_matches", ctx={
        "dataset": dataset, "selected": [query], "params": {"k": 5}})
    assert run.error is None, run.error
    assert run.result["slice"] == "lidar" and len(run.result["matches"]) == 5
    with pytest.raises(ExecutionError, match="selection"):
        foo.execute_operator(f"{URI}/find_cross_modal_matches", ctx={"dataset": dataset, "params": {"k": 5}})


def test_cli_search_prints_the_matches(dataset, capsys):
    assert cli.main(["search", dataset.name, "cube_0001", "--k", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "nearest to the rgb of cube_0001:"
    assert [line.split(".")[0].strip() for line in lines[1:]] == ["1", "2", "3", "4", "5"]
    assert all("(cube)" in line or "(sphere)" in line for line in lines[1:])
    assert cli.main(["search", dataset.name, "cube_9999"]) == 2
    assert "no pair 'cube_9999'" in capsys.readouterr().err


def test_train_cilp_operator_retrains_a_later_stage_from_the_recorded_runs(pipeline, dataset):
    recorded = recorded_runs(dataset)
    flat = all_slices(dataset)
    few = {"op_train": dataset.select_group_slices("rgb").match_tags("train").values("pair_id")[:32],
           "op_val": dataset.select_group_slices("rgb").match_tags("val").values("pair_id")[:16]}
    for tag, pair_ids in few.items():  # a quick retrain on a few pairs
        flat.match(fo.ViewField("pair_id").is_in(pair_ids)).tag_samples(tag)
    try:
        run = foo.execute_operator(f"{URI}/train_cilp", ctx={"dataset": dataset, "params": {
            "stages": ["rgb2lidar"], "epochs": 1, "batch_size": 16, "overwrite": True, "device": "cpu",
            "data": "streamed", "train_tag": "op_train", "val_tag": "op_val"}})
    finally:
        flat.untag_samples(list(few))
    assert run.error is None, run.error
    assert run.result["runs"] == {"rgb2lidar": "rgb2lidar"}
    assert "rgb2lidar: best epoch 1, val loss" in run.result["summary"]
    dataset.reload()
    assert recorded_runs(dataset) == recorded
    loaded = load_run(recorded["rgb2lidar"])
    assert loaded.manifest["best"]["epoch"] == 1 and loaded.manifest["train"]["batch_size"] == 16
    assert loaded.manifest["epochs_completed"] == 1 and loaded.manifest["data"]["mode"] == "streamed"
    assert (loaded.manifest["train_size"], loaded.manifest["val_size"]) == (32, 16)
    assert dataset.count_sample_tags().keys() == {"train", "val"}
    assert loaded.spec.parents["projector"].run == str(recorded["projector"])


def test_report_has_the_cilp_rows_and_the_chain_before_fine_tuning(dataset, tmp_path, capsys):
    assert cli.main(["report", "--dataset", dataset.name, "--out", str(tmp_path / "report")]) == 0
    rows = {row["run"]: row for row in csv.DictReader(open(tmp_path / "report" / "report.csv"))}
    manifests = {stage: load_run(folder).manifest for stage, folder in recorded_runs(dataset).items()}
    cilp = manifests["cilp"]["best"]
    assert float(rows["cilp"]["top-1 %"]) == pytest.approx(100 * cilp["val/rgb2lidar_top1"])
    assert float(rows["cilp"]["top-5 %"]) == pytest.approx(100 * cilp["val/rgb2lidar_top5"])
    assert rows["cilp"]["accuracy %"] == ""  # a contrastive run has no accuracy
    assert float(rows["projector"]["val loss"]) == pytest.approx(manifests["projector"]["best"]["val/loss"])
    before = manifests["rgb2lidar"]["initial"]["val/accuracy"]
    assert float(rows["rgb2lidar (before training)"]["accuracy %"]) == pytest.approx(100 * before)
    assert float(rows["rgb2lidar"]["accuracy %"]) == pytest.approx(100 * manifests["rgb2lidar"]["best"]["val/accuracy"])
    assert "embedding_maps.png" in capsys.readouterr().out
    assert (tmp_path / "report" / "embedding_maps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("query_slice", SLICES)
def test_the_one_index_finds_each_slices_own_neighbours(dataset, query_slice):
    """What the App's similarity search does on the slice shown (FiftyOne 1.22's panel searches
    the active slice, flattened): the query looked up in the whole index, the search confined to
    that slice."""
    shown = dataset.select_group_slices(query_slice)
    query = shown.first()
    found = shown.sort_by_similarity(query.id, k=3, brain_key="cilp_search")
    assert found.values("group.name") == [query_slice] * 3
    assert found.first().id == query.id  # nearest to itself


def test_the_joint_map_places_both_modalities_of_every_pair(dataset):
    from cilp_plugin.writeback.cilp import applied_runs, joint_map

    assert applied_runs(dataset) == ["cilp"]
    joint = joint_map(dataset, "cilp")
    n = 2 * PER_CLASS
    assert joint.points.shape == (2 * n, 2) and np.isfinite(joint.points).all()
    assert joint.modalities == ["rgb"] * n + ["lidar"] * n and joint.pair_ids[:n] == joint.pair_ids[n:]
    truth = dict(zip(*dataset.select_group_slices("rgb").values(["pair_id", "ground_truth.label"])))
    assert [truth[p] for p in joint.pair_ids] == joint.labels
    # aligned: a pair's two points are nearer each other than two points of random pairs
    gap = np.linalg.norm(joint.points[:n] - joint.points[n:], axis=1)
    shuffled = np.linalg.norm(joint.points[:n] - np.random.default_rng(0).permutation(joint.points[n:]), axis=1)
    assert np.median(gap) < np.median(shuffled)
    with pytest.raises(ValueError, match="no 'other_embedding' field: apply the 'other' run first"):
        joint_map(dataset, "other")


def test_the_runs_panel_trains_a_stage_further_with_train_cilp(dataset):
    """What "Train it further" in the runs panel opens for a run of each kind."""
    from cilp_plugin.runs.table import train_further

    operator, params = train_further(dataset, "cilp")
    assert operator == "train_cilp"
    assert params == {"stage_lidar": False, "stage_cilp": True, "stage_projector": False, "stage_rgb2lidar": False,
                      "run_prefix": "", "epochs": 2 * EPOCHS["cilp"], "resume": True}
    operator, params = train_further(dataset, "lidar")  # a classifier: train_fusion, its model and name
    assert operator == "train_fusion"
    assert params == {"family": "lidar", "fusion": "concat", "downsample": "maxpool", "name": "lidar",
                      "epochs": 2 * EPOCHS["lidar"], "resume": True}

"""The shipped checkpoints: every demo model, small, reproduced on regenerated data, applied by name."""

import json

import fiftyone.operators as foo
import pytest
import torch

from cilp_plugin import cli
from cilp_plugin.data import layout, synth
from cilp_plugin.dataset import arrays
from cilp_plugin.dataset.splits import make_split
from cilp_plugin.runs.registry import SHIPPED_DIR, shipped_checkpoints
from mm_models import load_run
from mm_models.engine import evaluate
from mm_models.stages import objective_for

pytestmark = pytest.mark.slow  # regenerates 2 x 1,000 pairs and measures every checkpoint

DEMO_MODELS = ["cilp", "intermediate_add", "intermediate_add_strided", "intermediate_concat", "intermediate_mul",
               "late", "lidar", "projector", "rgb2lidar"]
URI = "@cilp/multimodal"


def test_every_demo_model_is_shipped_small_and_says_how_it_was_made():
    assert shipped_checkpoints() == DEMO_MODELS
    total = sum(path.stat().st_size for path in SHIPPED_DIR.rglob("*") if path.is_file())
    assert total < 50e6, f"{total / 1e6:.1f} MB"
    for name in DEMO_MODELS:
        manifest = json.loads((SHIPPED_DIR / name / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["checkpoint_sha256"]
        assert {"data", "preset", "device", "precision", "val"} <= set(manifest["shipped"]), name
        assert manifest["shipped"]["data"]["look"] in synth.LOOKS, name
        for parent in manifest["spec"]["parents"].values():  # named by their shipped names
            assert parent["run"] in DEMO_MODELS


@pytest.fixture(scope="module")
def shipped_val(tmp_path_factory):
    """The val pairs the checkpoints were measured on, regenerated (the generator is deterministic) in
    the look they were made with."""
    made = json.loads((SHIPPED_DIR / "late" / "manifest.json").read_text())["shipped"]["data"]
    root = synth.generate(tmp_path_factory.mktemp("shipped") / "data", made["pairs"] // 2, seed=made["seed"],
                          config=synth.LOOKS[made["look"]])
    pair_ids = [pair.pair_id for pair in layout.scan(root).require_usable().pairs]
    split = make_split(pair_ids, val=made["val_fraction"], seed=made["split_seed"])
    assert len(split.val) == made["val_size"]
    return arrays.from_folder(root, split.val).tensors()


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_a_shipped_checkpoint_reproduces_its_val_metrics(shipped_val, name):
    run = load_run(SHIPPED_DIR / name)
    objective = objective_for(run.spec, run.manifest["train"]["batch_size"])
    measured = evaluate(run.model, objective, shipped_val, batch_size=256, device=torch.device("cpu"),
                        precision="fp32")
    shipped, trained = run.manifest["shipped"]["val"], run.manifest["best"]
    if "val/accuracy" in trained:  # a classifier: the shipped weights and the trained ones, within 0.5 points
        assert 100 * measured["accuracy"] == pytest.approx(100 * shipped["val/accuracy"], abs=0.5)
        assert 100 * measured["accuracy"] == pytest.approx(100 * trained["val/accuracy"], abs=0.5)
        assert measured["accuracy"] >= 0.95
    elif "val/rgb2lidar_top1" in trained:  # CILP: retrieval among the 400 val pairs
        assert 100 * measured["rgb2lidar_top1"] == pytest.approx(100 * shipped["val/rgb2lidar_top1"], abs=0.5)
        assert 100 * measured["rgb2lidar_top1"] == pytest.approx(100 * trained["val/rgb2lidar_top1"], abs=2)
    else:  # the projector's MSE
        assert measured["loss"] == pytest.approx(shipped["val/loss"], rel=0.005)
        assert measured["loss"] == pytest.approx(trained["val/loss"], rel=0.02)


def test_cilp_apply_takes_shipped_checkpoints_by_name(split_dataset, capsys):
    assert cli.main(["apply", split_dataset.name, "--checkpoint", "intermediate_add", "late",
                     "--embedding-map", "none"]) == 0
    out = capsys.readouterr().out
    assert "wrote 'intermediate_add'" in out and "wrote 'late'" in out
    rgb = split_dataset.select_group_slices("rgb")
    assert rgb.count("intermediate_add") == rgb.count("late") == len(rgb)
    assert {"eval_intermediate_add", "eval_late"} <= set(split_dataset.list_evaluations())


def test_cilp_apply_wants_one_of_runs_and_checkpoints(split_dataset, capsys):
    assert cli.main(["apply", split_dataset.name]) == 2
    assert "give runs or --checkpoint NAME ... (one of them)" in capsys.readouterr().err
    assert cli.main(["apply", split_dataset.name, "late", "--checkpoint", "late"]) == 2
    assert "give runs or --checkpoint NAME ... (one of them)" in capsys.readouterr().err
    assert cli.main(["apply", split_dataset.name, "--checkpoint", "late", "lidar", "--field", "x"]) == 2
    assert "--field: names the prediction field of one run" in capsys.readouterr().err
    assert cli.main(["apply", split_dataset.name, "--checkpoint", "nonesuch"]) == 2
    assert "checkpoint 'nonesuch': not a shipped checkpoint; expected one of cilp, intermediate_add" \
        in capsys.readouterr().err


def test_apply_model_operator_takes_a_shipped_checkpoint(split_dataset):
    result = foo.execute_operator(f"{URI}/apply_model", ctx={
        "dataset": split_dataset, "params": {"checkpoint": "rgb2lidar", "embedding_map": "none"}})
    assert result.error is None, result.error
    assert result.result["field"] == "rgb2lidar" and result.result["eval_key"] == "eval_rgb2lidar"
    assert split_dataset.select_group_slices("rgb").count("rgb2lidar") == 16

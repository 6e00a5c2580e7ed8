"""The CILP stages on the one engine: specs, parents, frozen parts, resume, load, bad input."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from mm_models import (
    CILP,
    CheckpointError,
    CILPConfig,
    ModelConfig,
    ModelSpec,
    PairTensors,
    ProjectorConfig,
    RGBToLiDARConfig,
    TrainConfig,
    build,
    load_run,
    outputs_of,
    parent,
    predict,
    train,
)
from mm_models import checkpoint as ckpt
from mm_models.engine import param_groups
from mm_models.inputs import MaskNoReturn, ScaleXYZ, Standardize
from mm_models.losses import Contrastive, clip_loss, true_pair_ranks

W = (4, 8, 8, 8)
LIDAR = ModelConfig(family="lidar", widths=W)
SMALL_CILP = CILPConfig(widths=W, embed_dim=16, vector_hidden=16)
FAST = dict(batch_size=8, precision="fp32", device="cpu", epochs=2)


@pytest.fixture(scope="module")
def stages(tmp_path_factory, small_arrays):
    """The four stages trained once on 36 / 12 pairs with tiny widths."""
    from mm_testdata import split

    train_data, val_data = split(small_arrays, 0.25)
    root = tmp_path_factory.mktemp("stages")
    runs = {"lidar": train(LIDAR, TrainConfig(**FAST), train_data, val_data, root / "lidar"),
            "cilp": train(SMALL_CILP, TrainConfig(**FAST), train_data, val_data, root / "cilp")}
    spec = ModelSpec("projector", ProjectorConfig(hidden=(32,)),
                     {"cilp": parent(root / "cilp", "cilp"), "lidar": parent(root / "lidar", "lidar")})
    runs["projector"] = train(spec, TrainConfig(**FAST), train_data, val_data, root / "projector")
    spec = ModelSpec("rgb2lidar", RGBToLiDARConfig(), {"projector": parent(root / "projector", "projector")})
    runs["rgb2lidar"] = train(spec, TrainConfig(**FAST), train_data, val_data, root / "rgb2lidar")
    return {"runs": runs, "root": root, "train": train_data, "val": val_data}


def read_rows(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def test_every_stage_trains_saves_and_reloads_identically(stages):
    val = stages["val"]
    for name, result in stages["runs"].items():
        loaded = load_run(result.run_dir)
        assert loaded.spec == result.spec and result.manifest["status"] == "finished", name
        before, after = outputs_of(result.model, val), outputs_of(loaded, val)
        assert before.keys() == after.keys()
        for key in before:
            np.testing.assert_array_equal(before[key], after[key], err_msg=f"{name}.{key}")
    assert set(outputs_of(stages["runs"]["cilp"].model, val)) == {"rgb_features", "lidar_features", "logit_scale"}
    assert predict(stages["runs"]["rgb2lidar"].run_dir, val).logits.shape == (len(val),)


def test_metric_columns_follow_the_objective(stages):
    runs = stages["runs"]
    cilp = list(read_rows(runs["cilp"].run_dir / "metrics.csv")[0])
    for name in ("loss", "rgb2lidar_top1", "rgb2lidar_top5", "lidar2rgb_top1", "lidar2rgb_top5",
                 "true_pair_cosine", "other_pair_cosine", "logit_scale", "temperature"):
        assert f"val/{name}" in cilp and f"train/{name}" in cilp, name
    assert "val/accuracy" not in cilp
    projector = list(read_rows(runs["projector"].run_dir / "metrics.csv")[0])
    assert "val/loss" in projector and "val/cosine" in projector
    assert "val/accuracy" in list(read_rows(runs["rgb2lidar"].run_dir / "metrics.csv")[0])
    assert {"similarity.png", "matches.png"} <= {p.name for p in runs["cilp"].run_dir.iterdir()}
    assert runs["cilp"].manifest["pictures"] == ["similarity.png", "matches.png"]


def test_val_retrieval_counts_every_val_pair(stages):
    cilp = stages["runs"]["cilp"]
    out = outputs_of(cilp.model, stages["val"])
    ranks = true_pair_ranks(torch.from_numpy(out["rgb_features"]), torch.from_numpy(out["lidar_features"]))
    assert cilp.best["val/rgb2lidar_top5"] == pytest.approx((ranks <= 5).float().mean().item())


def test_manifest_records_the_spec_and_its_parents(stages):
    runs, root = stages["runs"], stages["root"]
    manifest = json.loads((runs["rgb2lidar"].run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "rgb2lidar" and manifest["objective"] == "Classification"
    projector = manifest["spec"]["parents"]["projector"]
    assert projector["run"] == str(root / "projector")
    assert projector["sha256"] == ckpt.file_sha256(root / "projector" / "model.safetensors")
    assert set(projector["spec"]["parents"]) == {"cilp", "lidar"}
    assert set(manifest["initial"]) >= {"val/loss", "val/accuracy"}  # the chain before fine-tuning
    assert ModelSpec.from_dict(manifest["spec"]) == runs["rgb2lidar"].spec


def test_frozen_parents_are_bit_identical_after_training(stages):
    runs = stages["runs"]
    projection = runs["projector"].model
    cilp, lidar = load_run(runs["cilp"].run_dir).model, load_run(runs["lidar"].run_dir).model
    for name, tensor in cilp.rgb.state_dict().items():
        assert torch.equal(projection.rgb_encoder.state_dict()[name], tensor), name
    for name, tensor in lidar.state_dict().items():
        assert torch.equal(projection.target.state_dict()[name], tensor), name
    trainable = sum(p.numel() for p in projection.projector.parameters())
    assert runs["projector"].manifest["trainable_params"] == trainable < runs["projector"].manifest["params"]
    # the projector itself trained
    initial = build(runs["projector"].spec)
    assert not torch.equal(initial.projector[0].weight, projection.projector[0].weight)


def test_rgb2lidar_fine_tunes_the_whole_chain_unless_told(stages, tmp_path):
    runs = stages["runs"]
    projection = load_run(runs["projector"].run_dir).model
    tuned = runs["rgb2lidar"].model
    assert not torch.equal(tuned.rgb_encoder.embedder.head[-1].weight,
                           projection.rgb_encoder.embedder.head[-1].weight)
    spec = ModelSpec("rgb2lidar", RGBToLiDARConfig(freeze=("rgb_encoder", "head")),
                     {"projector": parent(runs["projector"].run_dir, "projector")})
    partly = train(spec, TrainConfig(**FAST), stages["train"], stages["val"], tmp_path / "partly").model
    for name, tensor in projection.rgb_encoder.state_dict().items():
        assert torch.equal(partly.rgb_encoder.state_dict()[name], tensor), name
    for name, tensor in projection.target.head.state_dict().items():
        assert torch.equal(partly.head.state_dict()[name], tensor), name
    assert not torch.equal(partly.projector[0].weight, projection.projector[0].weight)


def test_contrastive_batches_are_full_and_the_temperature_is_clips(stages, tmp_path):
    cilp = stages["runs"]["cilp"]
    assert cilp.manifest["train_size"] == 36 and cilp.model.logit_scale.numel() == 1
    # 36 pairs, batch 8: 4 full batches per epoch, the last 4 pairs left out
    assert cilp.manifest["best"]["samples_per_s"] > 0
    state = torch.load(cilp.run_dir / "last.pt", weights_only=True)
    assert state["step"] == 2 * (36 // 8)
    fresh = CILP(SMALL_CILP)
    assert fresh.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        fresh.logit_scale.fill_(10.0)
    out = fresh({"rgb": torch.rand(2, 4, 64, 64), "lidar": torch.rand(2, 4, 64, 64)})
    assert out["logit_scale"].item() == pytest.approx(100.0)  # clamped as CLIP does
    with pytest.raises(ValueError, match="fewer than one full batch of 64"):
        train(SMALL_CILP, TrainConfig(**{**FAST, "batch_size": 64}), stages["train"], stages["val"], tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_no_weight_decay_on_temperature_biases_and_norms():
    model = CILP(SMALL_CILP)
    decayed, free = param_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and free["weight_decay"] == 0.0
    assert any(p is model.logit_scale for p in free["params"])
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim <= 1 for p in free["params"])


def test_clip_loss_and_ranks_on_known_features():
    eye = torch.eye(4)
    assert clip_loss(eye, eye, torch.tensor(100.0)).item() < 1e-6
    assert clip_loss(eye, eye.flip(0), torch.tensor(100.0)).item() > 10
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    assert true_pair_ranks(queries, keys, chunk=2).tolist() == [3, 1, 1]
    metrics = Contrastive(set_size=2).metrics(
        {"rgb_features": eye, "lidar_features": eye, "logit_scale": torch.tensor(10.0)}, None)
    assert metrics["rgb2lidar_top1"] == 1.0 and metrics["true_pair_cosine"] == 1.0
    assert metrics["other_pair_cosine"] == 0.0 and metrics["temperature"] == pytest.approx(0.1)


def test_input_statistics_come_from_the_training_split_and_travel_with_the_run(stages):
    cilp = stages["runs"]["cilp"]
    rgb = stages["train"].rgb.double() / 255
    loaded = load_run(cilp.run_dir).model
    step = loaded.rgb.step
    assert isinstance(step, Standardize) and bool(step.fitted)
    expected = rgb.mean(dim=(0, 1, 2))
    torch.testing.assert_close(step.mean, expected.float(), rtol=1e-4, atol=1e-6)
    assert step.std[3] == 1.0  # the constant alpha channel
    assert cilp.manifest["input_statistics"] == ["rgb", "lidar"]
    # the LiDAR's are measured on what its ScaleXYZ sees: XYZ with the no-return beams zeroed, one
    # length for the three axes, no centring, the mask as it is
    lidar = stages["train"].lidar.double()
    masked_xyz = lidar[:, :3] * lidar[:, 3:]
    mask_step, lidar_step = loaded.lidar.step
    assert isinstance(mask_step, MaskNoReturn) and isinstance(lidar_step, ScaleXYZ)
    length = masked_xyz.square().mean().sqrt().float()
    torch.testing.assert_close(lidar_step.std, torch.stack([length, length, length, torch.tensor(1.0)]), rtol=1e-4,
                               atol=1e-5)
    assert not lidar_step.mean.any()
    assert masked_xyz.max() < 50  # the 50 m of no return never reached the statistics
    # the stages built on it keep its statistics instead of measuring their own
    assert stages["runs"]["projector"].manifest["input_statistics"] == []
    torch.testing.assert_close(stages["runs"]["rgb2lidar"].model.rgb_encoder.step.mean, step.mean)


def test_resumed_stage_equals_uninterrupted(stages, tmp_path):
    spec = stages["runs"]["projector"].spec
    config = TrainConfig(**{**FAST, "epochs": 3})
    train(spec, config, stages["train"], stages["val"], tmp_path / "straight")

    def crash(fraction, label):
        if label.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, config, stages["train"], stages["val"], tmp_path / "resumed", progress=crash)
    train(spec, config, stages["train"], stages["val"], tmp_path / "resumed", resume=True)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == ckpt.file_sha256(tmp_path / "resumed" / "model.safetensors")
    assert "initial" in manifest


# --------------------------------------------------------------------------- bad input


def test_a_changed_parent_is_refused(stages, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(stages["root"], root)
    spec = ModelSpec("projector", ProjectorConfig(hidden=(32,)),
                     {"cilp": parent(root / "cilp", "cilp"), "lidar": parent(root / "lidar", "lidar")})
    train(spec, TrainConfig(**{**FAST, "epochs": 1}), stages["train"], stages["val"], root / "p2")
    shutil.rmtree(root / "cilp")
    train(SMALL_CILP, TrainConfig(**{**FAST, "epochs": 1, "seed": 3}), stages["train"], stages["val"], root / "cilp")
    with pytest.raises(CheckpointError, match=r"parent 'cilp' \(.*cilp\) changed since this run was trained"):
        load_run(root / "p2")
    with pytest.raises(CheckpointError, match="parent 'cilp'"):
        train(spec, TrainConfig(**FAST), stages["train"], stages["val"], root / "p2", resume=True)


def test_missing_or_unfinished_parents_and_wrong_kinds_are_named(stages, tmp_path):
    root = stages["root"]
    with pytest.raises(CheckpointError, match=r"parent 'cilp': run folder .*nowhere not found"):
        parent(tmp_path / "nowhere", "cilp")
    with pytest.raises(ValueError, match="parent 'cilp': expected a cilp run, got a classifier run"):
        ModelSpec("projector", ProjectorConfig(), {"cilp": parent(root / "lidar", "cilp"),
                                                   "lidar": parent(root / "lidar", "lidar")})
    with pytest.raises(ValueError, match=r"parent 'lidar': expected a LiDAR-only classifier \(family lidar\), "
                                         "got a cilp run"):
        ModelSpec("projector", ProjectorConfig(), {"cilp": parent(root / "cilp", "cilp"),
                                                   "lidar": parent(root / "cilp", "lidar")})
    with pytest.raises(ValueError, match="parents: this rgb2lidar model is built from projector; missing projector"):
        ModelSpec("rgb2lidar", RGBToLiDARConfig())
    manifest = json.loads((root / "cilp" / "manifest.json").read_text())
    (tmp_path / "failed").mkdir()
    for name in ("model.safetensors", "metrics.csv"):
        (tmp_path / "failed" / name).write_bytes((root / "cilp" / name).read_bytes())
    (tmp_path / "failed" / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}))
    with pytest.raises(CheckpointError, match="has status 'failed', not 'finished'"):
        parent(tmp_path / "failed", "cilp")


def test_a_locked_lidar_tower_is_the_lidar_classifier_frozen(stages, tmp_path):
    locked = CILPConfig(widths=W, embed_dim=16, vector_hidden=16, lidar_tower="locked")
    with pytest.raises(ValueError, match="parents: this cilp model is built from lidar; missing lidar"):
        ModelSpec("cilp", locked)
    with pytest.raises(ValueError, match=r"lidar_tower: 'locked' needs the LiDAR classifier"):
        CILP(locked)
    with pytest.raises(ValueError, match="parent 'lidar': expected a LiDAR-only classifier"):
        ModelSpec("cilp", locked, {"lidar": parent(stages["root"] / "cilp", "lidar")})
    spec = ModelSpec("cilp", locked, {"lidar": parent(stages["root"] / "lidar", "lidar")})
    result = train(spec, TrainConfig(**FAST), stages["train"], stages["val"], tmp_path / "locked")
    classifier = load_run(stages["root"] / "lidar").model
    tower = result.model.lidar
    for name, tensor in classifier.state_dict().items():
        assert torch.equal(tower.classifier.state_dict()[name], tensor), name
    trainable = {name for name, p in result.model.named_parameters() if p.requires_grad}
    assert {"lidar.linear.weight", "lidar.linear.bias", "logit_scale"} <= trainable
    assert not any(name.startswith("lidar.classifier") for name in trainable)
    features = outputs_of(tmp_path / "locked", stages["val"])["lidar_features"]
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    assert load_run(tmp_path / "locked").spec.parents["lidar"].run == str(stages["root"] / "lidar")


def test_mismatched_input_sizes_between_parents_are_refused(stages, tmp_path):
    small = CILPConfig(widths=(4, 8), image_size=32, beams=32, embed_dim=8, vector_hidden=8)
    pairs = stages["train"]
    data = PairTensors(pairs.rgb[:, :32, :32].contiguous(), pairs.lidar[:, :, :32, :32].contiguous(), pairs.labels)
    train(small, TrainConfig(**{**FAST, "epochs": 1}), data, data, tmp_path / "cilp32")
    with pytest.raises(ValueError, match=r"cilp reads LiDAR grids of shape \(4, 32, 32\), the lidar classifier "
                                         r"\(4, 64, 64\)"):
        ModelSpec("projector", ProjectorConfig(), {"cilp": parent(tmp_path / "cilp32", "cilp"),
                                                   "lidar": parent(stages["root"] / "lidar", "lidar")})


def test_a_run_of_the_first_format_loads_as_a_raw_rgb_classifier(stages, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(stages["root"] / "lidar", old)
    manifest = json.loads((old / "manifest.json").read_text())
    config = {k: v for k, v in manifest["model"].items() if k != "rgb_input"}
    legacy = {k: v for k, v in manifest.items() if k not in ("spec", "kind", "objective", "select")}
    (old / "manifest.json").write_text(json.dumps({**legacy, "format": "mm_models.run/1", "model": config}))
    # a lidar classifier has no RGB step, so its weights load under the raw-RGB default
    assert load_run(old).spec.config.rgb_input == "raw"


def test_a_manifest_cannot_point_outside_its_run_folder(stages, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stages["root"] / "lidar", run)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "checkpoint": "../../etc/model.safetensors"}))
    with pytest.raises(CheckpointError, match="is not a file name in the run folder"):
        load_run(run)

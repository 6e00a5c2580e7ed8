"""Embedder, fusion and the model factory: shapes, parameter counts, config errors."""

import dataclasses

import pytest
import torch

from mm_models import FAMILIES, Embedder, ModelConfig, build_model, count_parameters
from mm_models.fusion import Fusion

# the published parameter counts of the reference experiments
REFERENCE_PARAMS = [
    (dict(family="late"), 1_994_793),
    (dict(family="intermediate", fusion="concat"), 4_517_805),
    (dict(family="intermediate", fusion="add"), 2_879_405),
    (dict(family="intermediate", fusion="mul"), 2_879_405),
    (dict(family="intermediate", fusion="add", downsample="strided"), 4_545_505),
]


def inputs(batch=2, size=64):
    return {"rgb": torch.rand(batch, 4, size, size), "lidar": torch.rand(batch, 4, size, size) * 50}


@pytest.mark.parametrize("kwargs, expected", REFERENCE_PARAMS)
def test_reference_parameter_counts(kwargs, expected):
    assert count_parameters(build_model(ModelConfig(**kwargs))) == expected


@pytest.mark.parametrize("downsample", ["maxpool", "strided"])
def test_embedder_map_and_vector_shapes(downsample):
    x = torch.rand(3, 4, 64, 64)
    embedder = Embedder(4, downsample=downsample)
    assert embedder(x).shape == (3, 200, 4, 4) and embedder.out_shape == (200, 4, 4)
    assert embedder.out_features == 3200
    vector = Embedder(4, downsample=downsample, out_dim=7)
    assert vector(x).shape == (3, 7) and vector.out_features == 7


def test_embedder_sizes_follow_input_size_and_widths():
    embedder = Embedder(3, widths=(8, 16, 32), input_size=32)
    assert embedder(torch.rand(2, 3, 32, 32)).shape == (2, 32, 4, 4) == (2, *embedder.out_shape)
    wide = Embedder(4, input_size=(96, 128))
    assert wide(torch.rand(2, 4, 96, 128)).shape == (2, 200, 6, 8) and wide.out_features == 200 * 48
    strided = Embedder(4, downsample="strided", input_size=(40, 24))  # a stride-2 conv rounds up: 40 -> 3, 24 -> 2
    assert strided(torch.rand(1, 4, 40, 24)).shape == (1, 200, 3, 2) == (1, *strided.out_shape)
    pooled = Embedder(4, input_size=(96, 128), pooled_size=(4, 4))
    assert pooled(torch.rand(2, 4, 96, 128)).shape == (2, 200, 4, 4)
    with pytest.raises(ValueError, match=r"input_size: 8x64 is too small for 4 blocks \(each halves it\): "
                                         r"expected 16 or more a side"):
        Embedder(4, input_size=(8, 64))
    with pytest.raises(ValueError, match=r"pooled_size: \(8, 8\) is larger than the map \(4, 4\)"):
        Embedder(4, pooled_size=(8, 8))


def test_inputs_of_other_sizes_are_fused_on_the_smaller_map():
    config = ModelConfig(family="intermediate", fusion="add", image_size=(96, 128), beams=(64, 32), num_classes=3)
    model = build_model(config)
    assert config.input_shapes() == {"rgb": (4, 96, 128), "lidar": (4, 64, 32)}
    assert model.encoders["rgb"].out_shape == model.encoders["lidar"].out_shape == (200, 4, 2)
    out = model({"rgb": torch.rand(2, 4, 96, 128), "lidar": torch.rand(2, 4, 64, 32)})
    assert out["logits"].shape == (2, 3) and out["embedding"].shape == (2, 128)
    late = build_model(dataclasses.replace(config, family="late"))  # vectors: each encoder keeps its map
    assert late({"rgb": torch.rand(1, 4, 96, 128), "lidar": torch.rand(1, 4, 64, 32)})["logits"].shape == (1, 3)


def test_sizes_are_checked_and_old_configs_read_as_square():
    with pytest.raises(ValueError, match=r"image_size: early fusion stacks the inputs' channels"):
        ModelConfig(family="early", image_size=96)
    with pytest.raises(ValueError, match=r"beams: expected two positive integers \(rows, columns\) or one, "
                                         r"got \[64, 0\]"):
        ModelConfig(beams=[64, 0])
    assert ModelConfig(image_size=[96, 96]).to_dict()["image_size"] == [96, 96]
    assert ModelConfig.from_dict({"image_size": 32}).beams == (32, 32)  # a config saved before beams
    assert ModelConfig.from_dict(ModelConfig(image_size=(96, 80), beams=48).to_dict()) == ModelConfig(
        image_size=(96, 80), beams=(48, 48))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("downsample", ["maxpool", "strided"])
def test_every_family_runs_and_embeds(family, downsample):
    model = build_model(ModelConfig(family=family, downsample=downsample, widths=(4, 8, 8, 8)))
    x = inputs(3)
    out = model(x)
    assert out["logits"].shape == (3,)
    embedding = model.embed(x)
    assert embedding.ndim == 2 and embedding.shape[0] == 3
    # the logit is the head's last layer applied to the embedding
    torch.testing.assert_close(out["embedding"], embedding)
    torch.testing.assert_close(model.head[-1](embedding).squeeze(-1), out["logits"])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_honours_strided_downsampling(family):
    maxpool = build_model(ModelConfig(family=family))
    strided = build_model(ModelConfig(family=family, downsample="strided"))
    convs = [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert convs and count_parameters(strided) > count_parameters(maxpool)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules())


@pytest.mark.parametrize("family", ["rgb", "lidar"])
def test_single_modality_classifier_exposes_3200_embedding(family):
    model = build_model(ModelConfig(family=family))
    x = {family: torch.rand(2, 4, 64, 64)}  # the other modality is not needed
    assert model.fuse(x).shape == (2, 3200)
    assert model(x)["logits"].shape == (2,) and model.embed(x).shape == (2, 128)
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Linear"]


def test_early_fusion_concatenates_eight_input_channels():
    model = build_model(ModelConfig(family="early", fusion="concat"))
    assert model.trunk.blocks[0][0].in_channels == 8
    assert model(inputs(2))["logits"].shape == (2,)


@pytest.mark.parametrize("mode, op", [("add", torch.add), ("mul", torch.mul)])
def test_fusion_modes(mode, op):
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(Fusion(mode)([a, b]), op(a, b))
    assert Fusion("concat")([a, b]).shape == (2, 6, 4, 4)


def test_missing_modality_is_named():
    model = build_model(ModelConfig(family="late", widths=(4, 8, 8, 8)))
    with pytest.raises(ValueError, match="missing lidar"):
        model({"rgb": torch.rand(1, 4, 64, 64)})


@pytest.mark.parametrize("field, value", [("family", "mid"), ("fusion", "max"), ("downsample", "avgpool")])
def test_unknown_choice_names_field_and_allowed_values(field, value):
    with pytest.raises(ValueError, match=rf"{field}: unknown value '{value}'; expected one of") as error:
        ModelConfig(**{field: value})
    allowed = {"family": "intermediate", "fusion": "concat", "downsample": "strided"}[field]
    assert allowed in str(error.value)


def test_model_config_round_trips_through_a_dict():
    config = ModelConfig(family="late", fusion="mul", downsample="strided", widths=(8, 16, 32, 32))
    data = config.to_dict()
    assert data["widths"] == [8, 16, 32, 32] and ModelConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="widths"):
        ModelConfig(widths=(8, -1))


def test_mm_models_imports_torch_only():
    import subprocess
    import sys

    code = ("import sys, mm_models; bad = [m for m in ('fiftyone', 'cilp_plugin', 'cilp_operators', 'wandb', "
            "'matplotlib') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lidar_input_is_the_same_for_a_scene_at_any_scale():
    """XYZ over one fitted length: a point cloud and its copy k times as large and far (fitted on its
    own) enter the model alike, with the shape kept and no-return beams at 0."""
    from mm_models.inputs import lidar_step

    torch.manual_seed(0)
    valid = (torch.rand(8, 1, 16, 16) < 0.2).float()
    xyz = torch.randn(8, 3, 16, 16) + torch.tensor([0.0, 17.0, 0.0]).view(1, 3, 1, 1)
    near = torch.cat([xyz * 0.15, valid], dim=1)
    far = torch.cat([xyz, valid], dim=1)
    far[:, :3] = torch.where(valid.bool(), far[:, :3], torch.full_like(far[:, :3], 100.0))  # another no-return
    seen = []
    for grids in (near, far):
        step = lidar_step("isotropic", mask_no_return=True, channels=4)
        step[1].fit([step[0](grids)])
        seen.append(step(grids))
    torch.testing.assert_close(seen[0], seen[1])
    assert not seen[0][:, :3][valid.expand(-1, 3, -1, -1) == 0].any()
    torch.testing.assert_close(seen[0][:, 3:], valid)

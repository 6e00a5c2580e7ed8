"""``ModelConfig`` and ``build_model``: every model from one small, serialisable config.

>>> model = build_model(ModelConfig(family="intermediate", fusion="add"))
>>> sum(p.numel() for p in model.parameters())
2879405
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .choices import (
    DOWNSAMPLE_MODES,
    FAMILIES,
    FUSION_MODES,
    LIDAR_INPUTS,
    MODALITIES,
    REFERENCE_SIZE,
    RGB_INPUTS,
    check_choice,
    check_size,
    config_from_dict,
    legacy_sizes,
)
from .encoders import DEFAULT_WIDTHS, Embedder, map_size
from .fusion import Fusion, FusionClassifier, mlp_head
from .inputs import input_step, lidar_step

#: hidden sizes of each family's classifier head (the reference's)
HEAD_HIDDEN = {
    "early": (128,),
    "late": (20,),
    "intermediate": (512, 128),
    "rgb": (128,),
    "lidar": (128,),
}


#: the fields of ModelConfig that are tuples (lists in its dict)
_TUPLES = ("widths", "head_hidden", "image_size", "beams")


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`build_model` builds; round-trips through a plain dict."""

    family: str = "intermediate"  # early | late | intermediate | rgb | lidar
    fusion: str = "concat"  # concat | add | mul: how modalities combine (unused by rgb / lidar)
    downsample: str = "maxpool"  # maxpool | strided: the 2x reduction after each conv block
    widths: tuple[int, ...] = DEFAULT_WIDTHS  # channels of the embedder's conv blocks
    image_size: tuple[int, int] = REFERENCE_SIZE  # (rows, columns) of the RGB image; one int: a square
    beams: tuple[int, int] = REFERENCE_SIZE  # (azimuth, zenith) beams of the LiDAR range image; one int: a square
    rgb_channels: int = 4  # RGBA
    lidar_channels: int = 4  # XYZ + valid-return mask
    late_dim: int = 2  # vector size of each late-fusion embedder
    vector_hidden: int = 128  # hidden size of the late-fusion embedders' vector heads
    mask_no_return: bool = True  # zero the XYZ of no-return beams (False: the reference's raw XYZA)
    rgb_input: str = "standardize"  # standardize (training-split statistics) | raw (the reference's [0, 1])
    lidar_input: str = "isotropic"  # isotropic (XYZ over one training-split length) | standardize | metres | range
    head_hidden: tuple[int, ...] = ()  # hidden sizes of the classifier head; () = the family's (HEAD_HIDDEN)
    num_classes: int = 2  # 2: one logit and BCE (the reference's); more: one logit per class and cross-entropy

    def __post_init__(self):
        check_choice("family", self.family, FAMILIES)
        check_choice("fusion", self.fusion, FUSION_MODES)
        check_choice("downsample", self.downsample, DOWNSAMPLE_MODES)
        check_choice("rgb_input", self.rgb_input, RGB_INPUTS)
        check_choice("lidar_input", self.lidar_input, LIDAR_INPUTS)
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "head_hidden", tuple(self.head_hidden))
        object.__setattr__(self, "image_size", check_size("image_size", self.image_size))
        object.__setattr__(self, "beams", check_size("beams", self.beams))
        if self.lidar_input == "range" and self.mask_no_return:
            raise ValueError("mask_no_return: the 'range' LiDAR input reads the ranges as stored, "
                             "no-return beams included; set mask_no_return to false")
        if not all(isinstance(h, int) and h > 0 for h in self.head_hidden):
            raise ValueError(f"head_hidden: expected positive integers, got {self.head_hidden!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes: expected an integer of at least 2, got {self.num_classes!r}")
        for name in ("rgb_channels", "lidar_channels", "late_dim", "vector_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.mask_no_return, bool):
            raise ValueError(f"mask_no_return: expected true or false, got {self.mask_no_return!r}")
        if not self.widths or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise ValueError(f"widths: expected positive integers, got {self.widths!r}")
        if self.family == "early" and self.image_size != self.beams:
            raise ValueError(f"image_size: early fusion stacks the inputs' channels, so the RGB image and the "
                             f"LiDAR range image must be one size; got {self.image_size} and beams {self.beams}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.family,) if self.family in MODALITIES else MODALITIES

    @property
    def logits(self) -> int:
        """The head's outputs: one logit for two classes (class 1 when > 0), else one per class."""
        return 1 if self.num_classes == 2 else self.num_classes

    def input_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``(channels, rows, columns)`` of each input the model reads."""
        shapes = {"rgb": (self.rgb_channels, *self.image_size), "lidar": (self.lidar_channels, *self.beams)}
        return {m: shapes[m] for m in self.modalities}

    def to_dict(self) -> dict:
        return {**asdict(self), **{name: list(getattr(self, name)) for name in _TUPLES}}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        # a config saved before lidar_input existed fed the LiDAR in metres; before beams, image_size sized both
        return config_from_dict(cls, {"lidar_input": "metres", **legacy_sizes(data)}, "model config")



def build_model(config: ModelConfig) -> FusionClassifier:
    """The classifier described by ``config`` (weights from the current torch seed)."""
    # what each encoder reads: the inputs, after their steps (the range step keeps one channel)
    channels = {"rgb": config.rgb_channels, "lidar": 1 if config.lidar_input == "range" else config.lidar_channels}
    sizes = {"rgb": config.image_size, "lidar": config.beams}
    fusion = Fusion(config.fusion)
    # maps of inputs of other sizes are max-pooled down to the smallest before they are fused
    maps = [map_size(sizes[m], len(config.widths), config.downsample) for m in config.modalities]
    fused_map = (min(rows for rows, _ in maps), min(columns for _, columns in maps))

    def embedder(in_channels: int, size: tuple[int, int], out_dim: int | None = None,
                 pooled_size: tuple[int, int] | None = None) -> Embedder:
        return Embedder(in_channels, config.widths, config.downsample, size,
                        out_dim=out_dim, hidden=config.vector_hidden, pooled_size=pooled_size)

    trunk = None
    if config.family == "early":
        # fuse the raw inputs, then one embedder over the fused channels
        encoders = {m: nn.Identity() for m in config.modalities}
        trunk = embedder(fusion.out_channels([channels[m] for m in config.modalities]), config.image_size)
        head_in = trunk.out_features
    elif config.family == "late":
        encoders = {m: embedder(channels[m], sizes[m], out_dim=config.late_dim) for m in config.modalities}
        head_in = fusion.out_channels([config.late_dim] * len(encoders))
    else:  # intermediate, rgb, lidar: map embedders, fused map flattened
        encoders = {m: embedder(channels[m], sizes[m], pooled_size=fused_map) for m in config.modalities}
        shape = next(iter(encoders.values())).out_shape
        head_in = fusion.out_channels([shape[0]] * len(encoders)) * shape[1] * shape[2]
    preprocess = {}
    if "rgb" in config.modalities:
        preprocess["rgb"] = input_step(config.rgb_input, config.rgb_channels)
    if "lidar" in config.modalities:
        preprocess["lidar"] = lidar_step(config.lidar_input, config.mask_no_return, config.lidar_channels)
    head = mlp_head(head_in, config.head_hidden or HEAD_HIDDEN[config.family], config.logits)
    return FusionClassifier(encoders, fusion, head, trunk, preprocess)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

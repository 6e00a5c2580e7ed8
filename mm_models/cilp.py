"""CILP: contrastive image-LiDAR pre-training and the models built on top of it.

The four stages of the cross-modal pipeline, each one run of the engine:

1. ``lidar``: a LiDAR-only classifier (:class:`~mm_models.fusion.FusionClassifier`);
   its flattened 200x4x4 map is the target space of stage 3.
2. ``cilp``: :class:`CILP`, an RGB and a LiDAR vector encoder whose L2-normalised
   embeddings are pulled together for true pairs (objective ``Contrastive``). The
   LiDAR encoder is either trained with the RGB one (``lidar_tower="trained"``, the
   reference) or locked (``"locked"``, as LiT locks one tower): the stage-1 LiDAR
   classifier's penultimate layer, frozen, then one trained linear map.
3. ``projector``: :class:`EmbeddingProjection`, a :class:`Projector` MLP from the
   CILP RGB embedding to the LiDAR classifier's embedding (objective ``Regression``);
   both parents are frozen.
4. ``rgb2lidar``: :class:`RGBToLiDAR`, CILP RGB encoder -> projector -> the LiDAR
   classifier's head: an RGB classifier that never saw a labelled image before
   fine-tuning (objective ``Classification``).

Frozen means ``requires_grad_(False)`` on the parameters (so the optimizer never
sees them) and eval mode during training; the tests check that a frozen parent's
weights are bit-identical after a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .choices import (
    DOWNSAMPLE_MODES,
    LIDAR_INPUTS,
    LIDAR_TOWERS,
    REFERENCE_SIZE,
    RGB2LIDAR_PARTS,
    RGB_INPUTS,
    check_choice,
    check_size,
    config_from_dict,
    legacy_sizes,
)
from .encoders import DEFAULT_WIDTHS, Embedder
from .fusion import FusionClassifier
from .inputs import input_step, lidar_step


@dataclass(frozen=True)
class CILPConfig:
    """The two encoders of :class:`CILP`; round-trips through a plain dict."""

    embed_dim: int = 200  # size of the shared, L2-normalised embedding space
    widths: tuple[int, ...] = DEFAULT_WIDTHS  # channels of each encoder's conv blocks
    downsample: str = "maxpool"  # maxpool | strided
    vector_hidden: int = 128  # hidden size of each encoder's vector head (3200 -> hidden -> embed_dim)
    image_size: tuple[int, int] = REFERENCE_SIZE  # (rows, columns) of the RGB image
    beams: tuple[int, int] = REFERENCE_SIZE  # (azimuth, zenith) beams of the LiDAR range image
    rgb_channels: int = 4
    lidar_channels: int = 4
    rgb_input: str = "standardize"  # standardize | raw
    mask_no_return: bool = True  # zero the XYZ of no-return beams
    lidar_input: str = "isotropic"  # isotropic | standardize | metres (a trained LiDAR tower's input)
    init_temperature: float = 0.07  # CLIP's: logit scale starts at log(1 / 0.07)
    max_logit_scale: float = 100.0  # CLIP's clamp on exp(logit scale)
    lidar_tower: str = "trained"  # trained | locked: the LiDAR classifier's penultimate layer, frozen

    def __post_init__(self):
        check_choice("downsample", self.downsample, DOWNSAMPLE_MODES)
        check_choice("lidar_tower", self.lidar_tower, LIDAR_TOWERS)
        check_choice("rgb_input", self.rgb_input, RGB_INPUTS)
        check_choice("lidar_input", self.lidar_input, tuple(i for i in LIDAR_INPUTS if i != "range"))
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "image_size", check_size("image_size", self.image_size))
        object.__setattr__(self, "beams", check_size("beams", self.beams))
        for name in ("embed_dim", "vector_hidden", "rgb_channels", "lidar_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not self.widths or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise ValueError(f"widths: expected positive integers, got {self.widths!r}")
        if not 0 < self.init_temperature < 1 or 1 / self.init_temperature > self.max_logit_scale:
            raise ValueError(f"init_temperature: expected a value in (1 / max_logit_scale, 1), "
                             f"got {self.init_temperature!r}")

    def input_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {"rgb": (self.rgb_channels, *self.image_size), "lidar": (self.lidar_channels, *self.beams)}

    def to_dict(self) -> dict:
        return {**asdict(self), **{name: list(getattr(self, name)) for name in ("widths", "image_size", "beams")}}

    @classmethod
    def from_dict(cls, data: dict) -> CILPConfig:
        # a config saved before lidar_input existed fed the LiDAR in metres
        return config_from_dict(cls, {"lidar_input": "metres", **legacy_sizes(data)}, "cilp config")


class UnitEncoder(nn.Module):
    """Input step -> conv embedder with a vector head -> L2 normalisation."""

    def __init__(self, step: nn.Module, embedder: Embedder):
        super().__init__()
        self.step = step
        self.embedder = embedder

    @property
    def out_features(self) -> int:
        return self.embedder.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.embedder(self.step(x)).float(), dim=-1)


class CILP(nn.Module):
    """Two unit-vector encoders and the learnable logit scale of their similarities.

    ``forward`` returns the keyword arguments of :func:`mm_models.losses.clip_loss`.
    A locked LiDAR tower needs the trained LiDAR classifier (``lidar_classifier``).
    """

    def __init__(self, config: CILPConfig = CILPConfig(), lidar_classifier: FusionClassifier | None = None):
        super().__init__()

        def encoder(step: nn.Module, channels: int, size: tuple[int, int]) -> UnitEncoder:
            return UnitEncoder(step, Embedder(channels, config.widths, config.downsample, size,
                                              out_dim=config.embed_dim, hidden=config.vector_hidden))

        self.rgb = encoder(input_step(config.rgb_input, config.rgb_channels), config.rgb_channels, config.image_size)
        if config.lidar_tower == "locked":
            if lidar_classifier is None:
                raise ValueError("lidar_tower: 'locked' needs the LiDAR classifier it locks (parent 'lidar')")
            self.lidar = LockedTower(lidar_classifier, config.embed_dim)
        else:
            self.lidar = encoder(lidar_step(config.lidar_input, config.mask_no_return, config.lidar_channels),
                                 config.lidar_channels, config.beams)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.max_log_scale = math.log(config.max_logit_scale)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "rgb_features": self.rgb(inputs["rgb"]),
            "lidar_features": self.lidar(inputs["lidar"]),
            "logit_scale": self.logit_scale.clamp(max=self.max_log_scale).exp(),
        }


@dataclass(frozen=True)
class ProjectorConfig:
    hidden: tuple[int, ...] = (1024, 2048)  # the reference's 200 -> 1024 -> 2048 -> 3200

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not all(isinstance(h, int) and h > 0 for h in self.hidden):
            raise ValueError(f"hidden: expected positive integers, got {self.hidden!r}")

    def to_dict(self) -> dict:
        return {"hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: dict) -> ProjectorConfig:
        return config_from_dict(cls, data, "projector config")


class Projector(nn.Sequential):
    """``Linear`` layers with ``BatchNorm1d + ReLU`` between them."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int):
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_features, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            in_features = size
        layers.append(nn.Linear(in_features, out_features))
        super().__init__(*layers)


class FrozenParts(nn.Module):
    """A model some of whose submodules (named in ``frozen``) never train."""

    frozen: tuple[str, ...] = ()

    def freeze(self, names: tuple[str, ...]) -> None:
        """Freeze the parts ``names`` and make every other part trainable (parts built from a
        parent's model arrive as that model left them, frozen or not)."""
        self.frozen = tuple(names)
        for name, part in self.named_children():
            part.requires_grad_(name not in self.frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self


class LockedTower(FrozenParts):
    """A LiDAR encoder locked to a trained classifier: its penultimate activations (frozen),
    a trained ``Linear`` to the shared size, L2 normalisation.

    On the generated data a LiDAR encoder trained contrastively matches pairs by where
    the object sits and how large it is, and its embedding hardly knows cubes from
    spheres; locked to the classifier, both CILP embeddings separate the classes and
    the RGB -> LiDAR chain classifies before any fine-tuning (see the README).
    """

    def __init__(self, classifier: FusionClassifier, out_features: int):
        super().__init__()
        self.classifier = classifier
        self.linear = nn.Linear(classifier.head[-1].in_features, out_features)
        self.freeze(("classifier",))

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(self.classifier.embed({"lidar": x})).float(), dim=-1)


class EmbeddingProjection(FrozenParts):
    """Stage 3: CILP RGB embedding -> projector, against the LiDAR classifier's embedding."""

    def __init__(self, rgb_encoder: UnitEncoder, projector: Projector, target: FusionClassifier):
        super().__init__()
        self.rgb_encoder = rgb_encoder
        self.projector = projector
        self.target = target
        self.freeze(("rgb_encoder", "target"))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"prediction": self.projector(self.rgb_encoder(inputs["rgb"])), "target": self.target.fuse(inputs)}


@dataclass(frozen=True)
class RGBToLiDARConfig:
    freeze: tuple[str, ...] = ()  # parts kept as the parents left them; () fine-tunes the whole chain

    def __post_init__(self):
        object.__setattr__(self, "freeze", tuple(self.freeze))
        for part in self.freeze:
            check_choice("freeze", part, RGB2LIDAR_PARTS)

    def to_dict(self) -> dict:
        return {"freeze": list(self.freeze)}

    @classmethod
    def from_dict(cls, data: dict) -> RGBToLiDARConfig:
        return config_from_dict(cls, data, "rgb2lidar config")


class RGBToLiDAR(FrozenParts):
    """Stage 4: an RGB classifier made of the CILP RGB encoder, the projector and the LiDAR head."""

    def __init__(self, rgb_encoder: UnitEncoder, projector: Projector, head: nn.Sequential,
                 freeze: tuple[str, ...] = ()):
        super().__init__()
        self.rgb_encoder = rgb_encoder
        self.projector = projector
        self.head = head
        self.freeze(freeze)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        """The LiDAR head's penultimate activations of the projected RGB embedding."""
        return self.head[:-1](self.projector(self.rgb_encoder(inputs["rgb"])))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        embedding = self.embed(inputs)
        return {"logits": self.head[-1](embedding).squeeze(-1), "embedding": embedding}

"""Fusion of per-modality tensors and the classifier built around it.

Every model here is one :class:`FusionClassifier`:

    inputs {"rgb": (B,4,S,S), "lidar": (B,4,S,S)}
      -> parameter-free input steps        (RGB standardised, LiDAR no-returns masked, by default)
      -> an encoder per modality          (identity for early fusion)
      -> Fusion: concat / add / mul        (along channels)
      -> a trunk                           (the embedder for early fusion, else identity)
      -> flatten -> MLP head -> logits     (two classes: one logit, class 1 when > 0; N > 2: N logits)
                                              and the penultimate embedding

so early, late and intermediate fusion, and the single-modality classifiers, differ
only in which encoders, trunk and head :func:`mm_models.factory.build_model` plugs in.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .choices import FUSION_MODES, check_choice
from .encoders import he_init


class Fusion(nn.Module):
    """Combine same-shaped tensors ``(B, C, ...)`` by channel concat, sum or product."""

    def __init__(self, mode: str = "concat"):
        super().__init__()
        check_choice("fusion", mode, FUSION_MODES)
        self.mode = mode

    def out_channels(self, channels: list[int]) -> int:
        if self.mode == "concat":
            return sum(channels)
        if len(set(channels)) != 1:
            raise ValueError(f"fusion: {self.mode!r} needs equal channel counts, got {channels}")
        return channels[0]

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.mode == "concat":
            return torch.cat(features, dim=1)
        fused = features[0]
        for feature in features[1:]:
            fused = fused + feature if self.mode == "add" else fused * feature
        return fused

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def mlp_head(in_features: int, hidden: tuple[int, ...], logits: int = 1) -> nn.Sequential:
    """``Linear + ReLU`` for each hidden size, then ``Linear(., logits)``."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [he_init(nn.Linear(in_features, size)), nn.ReLU(inplace=True)]
        in_features = size
    layers.append(nn.Linear(in_features, logits))
    return nn.Sequential(*layers)


class FusionClassifier(nn.Module):
    """Encoders keyed by modality -> fusion -> trunk -> flatten -> MLP head -> logit."""

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: Fusion,
        head: nn.Sequential,
        trunk: nn.Module | None = None,
        preprocess: dict[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.preprocess = nn.ModuleDict(preprocess or {})  # parameter-free steps per modality
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.trunk = trunk if trunk is not None else nn.Identity()
        self.head = head

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def fuse(self, inputs: dict[str, Tensor]) -> Tensor:
        """The fused representation the head sees, ``(B, F)``.

        For the single-modality classifiers this is the embedder's flattened map
        (3,200 values with the reference sizes).
        """
        missing = [m for m in self.encoders if m not in inputs]
        if missing:
            raise ValueError(
                f"inputs: missing {', '.join(missing)} (this model needs {', '.join(self.modalities)})"
            )
        features = [encoder(self.preprocess[m](inputs[m]) if m in self.preprocess else inputs[m])
                    for m, encoder in self.encoders.items()]
        return self.trunk(self.fusion(features)).flatten(1)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        """The head's penultimate activations ``(B, hidden)``: the sample's embedding."""
        return self.head[:-1](self.fuse(inputs))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``logits`` and the ``embedding`` they come from: ``(B,)`` for two classes (``sigmoid(logit)``
        is P(class 1)), ``(B, N)`` for N > 2 classes."""
        embedding = self.embed(inputs)
        return {"logits": self.head[-1](embedding).squeeze(-1), "embedding": embedding}

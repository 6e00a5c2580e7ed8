"""Training-time augmentations, applied to device-resident batches (``torchvision.transforms.v2``).

    augment = make_augmentation("rgb-affine")       # or "none"
    inputs = augment(inputs)                         # {"rgb": (B,4,H,W), "lidar": ...} -> same

``rgb-affine`` moves and scales each RGB image on its own (up to 10 % of the
side, 0.9-1.1x) and leaves the LiDAR alone. For CILP this takes away the easiest
thing a pair shares, where the object sits in the view, so the encoders must
match pairs by what the object is: without it, CILP's embeddings separate cubes
from spheres no better than chance allows (see the README's measurements).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .choices import AUGMENTATIONS, check_choice

Batch = dict[str, Tensor]


def make_augmentation(name: str) -> Callable[[Batch], Batch] | None:
    check_choice("augment", name, AUGMENTATIONS)
    if name == "none":
        return None
    from torchvision.transforms import v2

    affine = v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1))

    def rgb_affine(inputs: Batch) -> Batch:
        import torch

        rgb = torch.stack([affine(image) for image in inputs["rgb"]])  # parameters drawn per image
        return {**inputs, "rgb": rgb.contiguous(memory_format=torch.channels_last)}

    return rgb_affine

"""Parameter-free input steps a model applies to a modality before its encoder.

They live inside the model, so ``predict``, ``--resume`` and a shipped checkpoint
see exactly what training saw:

- :class:`Standardize` (RGB by default): per-channel mean and standard deviation,
  measured on the training split when a run starts and stored as buffers in the
  checkpoint. The DLI images are nearly black (mean pixel ~0.006) with a constant
  alpha channel; fed raw, the RGB classifier stays at chance for the whole demo,
  standardised it learns.
- :class:`MaskNoReturn` (LiDAR by default): zero the XYZ of beams without a return,
  then :class:`ScaleXYZ` (LiDAR by default): XYZ divided by one length measured on the
  training split, so inputs are near unit size at any distance (metres at 15-20 m would
  drown the standardised RGB wherever maps are added or multiplied) while the point
  cloud keeps its shape. Standardising each of X, Y, Z and the mask on its own (the
  ``standardize`` LiDAR input) stretched the lateral axes ~9x against depth and made
  the mask as loud as the depth: on objects at 2-5 m the LiDAR classifier then learnt
  silhouettes and positions by heart (docs/realism.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskNoReturn(nn.Module):
    """Zero the XYZ of beams without a return (mask channel 0).

    The course's XYZA puts no-return beams at the fictitious ``NO_RETURN`` range
    (50 m), a large constant that swamps the object's 9-14 m points. Zeroing them
    leaves the shape to the mask channel and the object's own XYZ; on the synthetic
    data the reference networks then learn several times faster.
    """

    def forward(self, xyza: Tensor) -> Tensor:
        xyz, valid = xyza[:, :-1], xyza[:, -1:]
        return torch.cat([xyz * valid, valid], dim=1)


class RangeOfXYZA(nn.Module):
    """The radial range each beam stored, ``|xyz|``, as one channel ``(B, 1, H, W)``: no-return
    beams keep their stored value (>= 50), as in the ``.npy`` files."""

    def forward(self, xyza: Tensor) -> Tensor:
        return torch.linalg.vector_norm(xyza[:, :-1].float(), dim=1, keepdim=True).to(xyza.dtype)


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with statistics fitted once on training data.

    ``fitted`` is a buffer too, so a model initialised from another run keeps that
    run's statistics instead of measuring new ones. A constant channel (the alpha
    of the DLI images) gets std 1: it becomes zero rather than noise.
    """

    def __init__(self, modality: str, channels: int):
        super().__init__()
        self.modality = modality
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, batches) -> None:
        """Measure the statistics from an iterable of ``(B, C, H, W)`` batches (float64 sums)."""
        total = torch.zeros(len(self.mean), dtype=torch.float64)
        squares, count = torch.zeros_like(total), 0
        for x in batches:
            x = x.double().transpose(0, 1).flatten(1).cpu()
            total += x.sum(1)
            squares += (x * x).sum(1)
            count += x.shape[1]
        if not count:
            raise ValueError(f"{self.modality}: no data to measure input statistics on")
        mean, std = self.statistics(total / count, squares / count)
        std[std < 1e-6] = 1.0
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def statistics(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        """Per channel: the ``(mean, std)`` the forward pass uses, from the first two moments."""
        return mean, (mean_square - mean * mean).clamp_min(0).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"{self.modality!r}, fitted={bool(self.fitted)}"


class ScaleXYZ(Standardize):
    """XYZ (the leading channels) divided by one length, their root mean square over the training
    grids (no-return beams zeroed); the last channel, the valid-return mask, passes unchanged.

    One length for the three axes keeps the geometry (a sphere's depth relief stays as deep as it is
    wide), and no centring keeps a masked beam at 0. Same buffers as :class:`Standardize`.
    """

    def statistics(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        scale = torch.ones_like(mean)
        scale[:-1] = mean_square[:-1].mean().sqrt()
        return torch.zeros_like(mean), scale


def fit_standardizers(model: nn.Module, batches_of) -> list[str]:
    """Fit every not-yet-fitted :class:`Standardize` in ``model`` on what it will see.

    ``batches_of(modality)`` yields that modality's input batches; the steps before
    a :class:`Standardize` in its ``nn.Sequential`` (e.g. :class:`MaskNoReturn`)
    are applied to them first. Returns the modalities that were fitted.
    """
    fitted = []
    for parent in model.modules():
        children = list(parent.children())
        for i, module in enumerate(children):
            if isinstance(module, Standardize) and not module.fitted:
                before = nn.Sequential(*children[:i]) if isinstance(parent, nn.Sequential) else nn.Identity()
                module.fit(before(x) for x in batches_of(module.modality))
                fitted.append(module.modality)
    return fitted


def input_step(rgb_input: str, channels: int) -> nn.Module:
    """The RGB step for ``rgb_input`` (one of :data:`mm_models.choices.RGB_INPUTS`)."""
    return Standardize("rgb", channels) if rgb_input == "standardize" else nn.Identity()


def lidar_step(lidar_input: str, mask_no_return: bool, channels: int) -> nn.Module:
    """The LiDAR steps: :class:`MaskNoReturn` when asked, then :class:`ScaleXYZ` for ``lidar_input``
    ``isotropic`` or :class:`Standardize` for ``standardize`` (one of :data:`mm_models.choices.LIDAR_INPUTS`); for
    ``range``, :class:`RangeOfXYZA` alone."""
    if lidar_input == "range":
        return RangeOfXYZA()
    steps = [MaskNoReturn()] if mask_no_return else []
    fitted_step = {"isotropic": ScaleXYZ, "standardize": Standardize}.get(lidar_input)
    if fitted_step:
        steps.append(fitted_step("lidar", channels))
    return steps[0] if len(steps) == 1 else nn.Sequential(*steps)

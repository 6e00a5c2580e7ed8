"""The convolutional embedder shared by every model (the course's ``Embedder``).

Four blocks of ``Conv3x3(pad 1) + ReLU``, each followed by a 2x downsampling:
``MaxPool2d(2)`` (the reference) or, for the ablation, a stride-2 ``Conv3x3 + ReLU``.
With the default widths a ``(B, 4, 64, 64)`` input becomes a ``(B, 200, 4, 4)`` map
(3,200 values); a ``(B, 4, 96, 128)`` one a ``(B, 200, 6, 8)`` map. With ``out_dim`` set, a
vector head ``Linear(flat, hidden) + ReLU + Linear(hidden, out_dim)`` turns the map into a
vector. Every size is derived from the input size and the widths; ``pooled_size`` pools the map
down to a smaller one (so that two inputs of other sizes can be fused).

Every layer followed by a ReLU (the convolutions, the heads' hidden layers) starts
from He initialisation, made for ReLU stacks: PyTorch's default keeps a third of the
variance per layer, which leaves the eight-conv strided variant near chance for
epochs (the README's strided ablation).
"""

from __future__ import annotations

from torch import Tensor, nn

from .choices import DOWNSAMPLE_MODES, REFERENCE_SIZE, check_choice, check_size

#: the reference channel widths of the four blocks
DEFAULT_WIDTHS = (50, 100, 200, 200)


def conv_block(in_channels: int, out_channels: int, downsample: str) -> nn.Sequential:
    """Conv3x3 + ReLU, then halve the spatial size.

    With max pooling the ReLU runs after the pool: ``relu(maxpool(x)) ==
    maxpool(relu(x))`` (ReLU is monotonic), on a 4x smaller tensor, so the block is
    the reference's, only cheaper.
    """
    check_choice("downsample", downsample, DOWNSAMPLE_MODES)
    conv = he_init(nn.Conv2d(in_channels, out_channels, 3, padding=1))
    if downsample == "maxpool":
        return nn.Sequential(conv, nn.MaxPool2d(2), nn.ReLU(inplace=True))
    return nn.Sequential(conv, nn.ReLU(inplace=True),
                         he_init(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)), nn.ReLU(inplace=True))


def map_size(input_size: tuple[int, int], blocks: int, downsample: str) -> tuple[int, int]:
    """``(rows, columns)`` of the map that ``blocks`` blocks make of an input of ``input_size``: max pooling
    halves a side rounding down, a stride-2 convolution (padding 1) rounding up."""
    def halve(side: int) -> int:
        return side // 2 if downsample == "maxpool" else (side + 1) // 2

    rows, columns = input_size
    for _ in range(blocks):
        rows, columns = halve(rows), halve(columns)
    return rows, columns


def he_init(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """He (Kaiming) normal weights for a layer followed by a ReLU, zero bias."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


class Embedder(nn.Module):
    """A conv trunk producing a feature map, optionally followed by a vector head.

    ``out_shape`` is the ``(C, H, W)`` of the map and ``out_features`` the size of
    what :meth:`forward` returns per sample (the flattened map, or ``out_dim``).
    """

    def __init__(
        self,
        in_channels: int = 4,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        downsample: str = "maxpool",
        input_size: int | tuple[int, int] = REFERENCE_SIZE,
        out_dim: int | None = None,
        hidden: int = 128,
        pooled_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        input_size = check_size("input_size", input_size)
        check_choice("downsample", downsample, DOWNSAMPLE_MODES)
        size = map_size(input_size, len(widths), downsample)
        if min(size) < 1:
            raise ValueError(f"input_size: {input_size[0]}x{input_size[1]} is too small for {len(widths)} blocks "
                             f"(each halves it): expected {2 ** len(widths)} or more a side")
        channels = (in_channels, *widths)
        self.blocks = nn.Sequential(
            *(conv_block(c_in, c_out, downsample) for c_in, c_out in zip(channels, channels[1:]))
        )
        if pooled_size is not None and tuple(pooled_size) != size:
            if any(p > s for p, s in zip(pooled_size, size)):
                raise ValueError(f"pooled_size: {tuple(pooled_size)} is larger than the map {size}")
            self.blocks.append(nn.AdaptiveMaxPool2d(tuple(pooled_size)))
            size = tuple(pooled_size)
        self.out_shape = (widths[-1], *size)
        flat = widths[-1] * size[0] * size[1]
        if out_dim is None:
            self.head = None
            self.out_features = flat
        else:
            self.head = nn.Sequential(
                nn.Flatten(), he_init(nn.Linear(flat, hidden)), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
            self.out_features = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, *input_size)`` -> ``(B, *out_shape)`` map, or ``(B, out_dim)``."""
        x = self.blocks(x)
        return x if self.head is None else self.head(x)

"""Pictures of a contrastive run: the similarity matrix and query / nearest-match pairs.

    similarity_png(path, rgb_features[:32] @ lidar_features[:32].T)
    matches_png(path, data, rgb_features, lidar_features)   # torchvision.utils.make_grid
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import atomic_write

#: tile frames in the matches grid: the true pair, another pair
TRUE_PAIR, OTHER_PAIR = (0.1, 0.8, 0.2), (0.35, 0.35, 0.35)


def similarity_png(path: Path, similarity: np.ndarray, title: str = "") -> None:
    """A heat map of cosine similarities, RGB rows against LiDAR columns; true pairs on the diagonal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.6, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(similarity, cmap="viridis", vmin=-1, vmax=1)
    axes.set_xlabel("LiDAR of val pair")
    axes.set_ylabel("RGB of val pair")
    axes.set_title(title or f"cosine similarity, first {len(similarity)} val pairs")
    figure.colorbar(image, ax=axes, shrink=0.85)
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))


def _visible_rgb(rgb: Tensor) -> Tensor:
    """``(N, H, W, 4)`` uint8 -> ``(N, 3, H, W)`` in [0, 1], each image stretched to its brightest pixel."""
    images = rgb[..., :3].permute(0, 3, 1, 2).float() / 255
    return images / images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


def _visible_lidar(xyza: Tensor) -> Tensor:
    """``(N, 4, H, W)`` XYZA -> ``(N, 3, H, W)`` grey range images in camera orientation (near bright)."""
    distance = xyza[:, :3].float().norm(dim=1)
    near = ((25.0 - distance) / 20.0).clamp(0, 1) * xyza[:, 3]
    upright = near.transpose(1, 2).flip(2)  # rows follow azimuth: transpose, azimuth right to left
    return upright[:, None].expand(-1, 3, -1, -1)


def _framed(tile: Tensor, colour: tuple[float, float, float], width: int = 2) -> Tensor:
    """A ``(3, H, W)`` tile inside a frame of ``colour``."""
    _, height, breadth = tile.shape
    frame = torch.tensor(colour)[:, None, None].repeat(1, height + 2 * width, breadth + 2 * width)
    frame[:, width:-width, width:-width] = tile
    return frame


def matches_png(path: Path, rgb: Tensor, lidar: Tensor, rgb_features: Tensor, lidar_features: Tensor,
                queries: int = 8, k: int = 4) -> None:
    """One row per query: the RGB image, its own LiDAR, then its ``k`` nearest LiDAR by CILP
    similarity (green frame: the true pair)."""
    from PIL import Image
    from torchvision.utils import make_grid

    queries = min(queries, len(rgb))
    k = min(k, len(lidar))
    similarity = rgb_features[:queries].float().cpu() @ lidar_features.float().cpu().T
    nearest = similarity.topk(k, dim=1).indices
    rgb_tiles = _visible_rgb(rgb[:queries].cpu())
    # range images of other beam counts than the image's pixels: drawn at the image's size, one grid
    lidar_tiles = F.interpolate(_visible_lidar(lidar.cpu()), size=rgb_tiles.shape[2:], mode="nearest")
    tiles = []
    for q in range(queries):
        tiles += [_framed(rgb_tiles[q], OTHER_PAIR), _framed(lidar_tiles[q], TRUE_PAIR)]
        tiles += [_framed(lidar_tiles[j], TRUE_PAIR if j == q else OTHER_PAIR) for j in nearest[q].tolist()]
    grid = make_grid(torch.stack(tiles), nrow=k + 2, padding=3, pad_value=1.0)
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST)
    atomic_write(path, lambda temp: picture.save(temp, format="PNG"))

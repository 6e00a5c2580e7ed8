"""Files derived from one LiDAR range image for the App: depth picture, point cloud, thumbnail.

Colour scales are fixed, so pictures compare across samples:

- depth PNG: ``turbo`` over ``DEPTH_RANGE`` metres (near = blue, far = red), no-return
  black; shown in camera orientation (up is up, left is left), i.e. the range image
  transposed, with azimuth running right to left.
- point cloud: the XYZ of the valid returns (metres, sensor at the origin, +y forward,
  +z up), coloured with ``turbo`` over ``HEIGHT_RANGE`` metres of z.
- thumbnail: a bird's-eye (top-down, normal +z) orthographic projection of the points,
  coloured by height, the grid image of the point-cloud slice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layout

DEPTH_RANGE = (5.0, 25.0)
HEIGHT_RANGE = (-3.0, 3.0)
THUMBNAIL_SIZE = 128


@functools.cache
def turbo_lut() -> np.ndarray:
    """The ``turbo`` colour map as a (256, 3) uint8 lookup table."""
    from matplotlib import colormaps

    return np.rint(colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colourise(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    index = np.clip((values - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    return turbo_lut()[index]


def depth_picture(depth: np.ndarray) -> np.ndarray:
    """RGBA picture of a range image in camera orientation; no-return is black."""
    upright = depth.T[:, ::-1]
    rgba = np.zeros(upright.shape + (4,), np.uint8)
    rgba[..., 3] = 255
    hits = upright < layout.NO_RETURN
    rgba[hits, :3] = colourise(upright[hits], DEPTH_RANGE)
    return rgba


@dataclass(frozen=True)
class Projection:
    """Where a bird's-eye thumbnail sits in the x-y plane (for FiftyOne's metadata)."""

    min_bound: tuple[float, float]
    max_bound: tuple[float, float]
    size: int = THUMBNAIL_SIZE


def birds_eye(points: np.ndarray, size: int = THUMBNAIL_SIZE) -> tuple[np.ndarray, Projection]:
    """Top-down RGBA thumbnail of points (N, 3), higher points drawn over lower ones."""
    image = np.zeros((size, size, 4), np.uint8)
    image[..., 3] = 255
    if len(points) == 0:
        return image, Projection((-1.0, -1.0), (1.0, 1.0), size)
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.15, 0.5)
    lo, hi = centre - half, centre + half
    cols = ((points[:, 0] - lo[0]) / (hi[0] - lo[0]) * (size - 1)).astype(int)
    rows = ((hi[1] - points[:, 1]) / (hi[1] - lo[1]) * (size - 1)).astype(int)  # far at the top
    order = np.argsort(points[:, 2])
    colours = colourise(points[order, 2], HEIGHT_RANGE)
    for dr in (0, 1):  # 2x2 dots
        for dc in (0, 1):
            image[np.minimum(rows[order] + dr, size - 1), np.minimum(cols[order] + dc, size - 1), :3] = colours
    return image, Projection(tuple(map(float, lo)), tuple(map(float, hi)), size)


#: the header of a point cloud without points (open3d refuses to write one): a scan with no return
EMPTY_PCD = (b"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
             b"TYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 0\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 0\nDATA binary\n")


def write_pcd(path: Path, points: np.ndarray) -> None:
    """A binary PCD with height colours (the App's 3-D viewer reads the rgb channel)."""
    import open3d as o3d

    if not len(points):
        Path(path).write_bytes(EMPTY_PCD)
        return

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points.astype(np.float64))
    cloud.colors = o3d.utility.Vector3dVector(colourise(points[:, 2], HEIGHT_RANGE) / 255.0)
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False):
        raise OSError(f"{path}: open3d could not write the point cloud")


@dataclass(frozen=True)
class DerivedFiles:
    """The derived files of one pair and the LiDAR statistics shown on every slice."""

    depth_png: Path
    pcd: Path
    thumbnail: Path
    projection: Projection
    returns: int
    min_range: float | None
    mean_range: float | None


def derive(pair: layout.Pair, azimuth: np.ndarray, zenith: np.ndarray, cache: Path) -> DerivedFiles:
    """Write the derived files of ``pair`` under ``cache``."""
    depth = layout.read_depth(pair.lidar_path)
    xyza = layout.depth_to_xyza(depth, azimuth, zenith)
    hits = xyza[3] > 0
    points = xyza[:3, hits].T
    files = {kind: cache / kind / f"{pair.pair_id}.{ext}"
             for kind, ext in (("depth", "png"), ("pcd", "pcd"), ("bev", "png"))}
    thumbnail, projection = birds_eye(points)
    files["depth"].write_bytes(layout.encode_png(depth_picture(depth)))
    write_pcd(files["pcd"], points)
    files["bev"].write_bytes(layout.encode_png(thumbnail))
    ranges = depth[hits]
    return DerivedFiles(
        depth_png=files["depth"], pcd=files["pcd"], thumbnail=files["bev"], projection=projection,
        returns=int(hits.sum()),
        min_range=float(ranges.min()) if len(ranges) else None,
        mean_range=float(ranges.mean()) if len(ranges) else None,
    )


def derive_many(jobs: list) -> list[DerivedFiles]:
    """:func:`derive` of each ``(pair, azimuth, zenith, cache)``: one task of an ingest's worker process
    (a function of this module, light to import, not of ``ingest``, which imports FiftyOne)."""
    return [derive(*job) for job in jobs]


def make_cache_dirs(cache: Path) -> None:
    for kind in ("depth", "pcd", "bev"):
        (cache / kind).mkdir(parents=True, exist_ok=True)

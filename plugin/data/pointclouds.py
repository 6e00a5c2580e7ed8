"""RGB images and point clouds from elsewhere, imported into the on-disk layout.

::

    SRC/<class>/.../<stem>.png  SRC/<class>/.../<stem>.pcd    (or .ply, or a KITTI .bin)
    SRC/.../<stem>.jpg          SRC/.../<stem>.bin            with labels.csv: stem,label

become ``DEST/<class folder>/rgb/<stem>.png`` (RGBA), ``lidar/<stem>.npy`` and the beams' angles, as
:mod:`.layout` writes them. A cloud becomes a range image by spherical projection, the inverse of
:func:`.layout.depth_to_xyza`: a point ``(x, y, z)`` at distance ``r`` lies on the beam of azimuth
``atan2(-x, y)`` (from +y, the sensor's forward, positive towards -x) and zenith ``-asin(z / r)``
(positive downwards); each beam keeps the nearest point's distance, ``NO_RETURN`` where it has
none. So ``depth_to_xyza`` puts every return back on its beam's centre at its distance.

Files that cannot be imported are listed with the reason, the others still are. Everything is
written into a temporary folder beside ``DEST``, moved into place at the end.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from . import layout, synth
from .layout import BadFile, FormatError
from .workers import process_pool

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CLOUD_SUFFIXES = (".pcd", ".ply", ".bin")
#: a label that can name a class folder
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- beams


@dataclass(frozen=True)
class BeamAxis:
    """``count`` beam centres evenly from ``low`` to ``high`` degrees, both included."""

    name: str  #: azimuth or zenith, for messages
    low: float
    high: float
    count: int

    def __post_init__(self):
        limit = 180 if self.name == "azimuth" else 90
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 2:
            raise ValueError(f"{self.name}: expected a whole number of beams >= 2, got {self.count!r}")
        if not -limit <= self.low < self.high <= limit:
            raise ValueError(f"{self.name}: expected degrees {-limit} <= min < max <= {limit}, "
                             f"got {self.low} and {self.high}")

    @property
    def step(self) -> float:
        return (self.high - self.low) / (self.count - 1)

    def radians(self) -> np.ndarray:
        """The beam centres as ``layout.read_angles`` gives them: float32 radians."""
        return np.deg2rad(np.linspace(self.low, self.high, self.count)).astype(np.float32)

    def beam_of(self, degrees: np.ndarray) -> np.ndarray:
        """The nearest beam of each angle, -1 beyond half a step outside the first and last beams (an
        azimuth axis around the whole circle wraps)."""
        index = np.rint((degrees - self.low) / self.step).astype(np.int64)
        if self.name == "azimuth" and abs(self.count * self.step - 360) < 1e-6:
            index %= self.count
        return np.where((index >= 0) & (index < self.count), index, -1)

    def describe(self) -> str:
        return f"{self.name} {self.low:g} to {self.high:g} degrees"


@dataclass(frozen=True)
class Beams:
    """A LiDAR's beams: the rows (azimuth) and columns (zenith) of its range image."""

    azimuth: BeamAxis
    zenith: BeamAxis

    @classmethod
    def from_values(cls, azimuth: Sequence, zenith: Sequence) -> Beams:
        """From ``[min, max, n]`` in degrees for each axis."""
        return cls(*(_axis(name, values) for name, values in (("azimuth", azimuth), ("zenith", zenith))))

    @classmethod
    def from_preset(cls, path: Path | str) -> Beams:
        """From a sensor preset: ``{"azimuth": [min, max, n], "zenith": [min, max, n]}``, degrees."""
        try:
            preset = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable JSON sensor preset ({exc})") from None
        if not isinstance(preset, dict) or not {"azimuth", "zenith"} <= preset.keys():
            raise ValueError(f'{path}: expected {{"azimuth": [min, max, n], "zenith": [min, max, n]}}')
        try:
            return cls.from_values(preset["azimuth"], preset["zenith"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def describe(self) -> str:
        return f"{self.azimuth.describe()}, {self.zenith.describe()}"


def _axis(name: str, values: Sequence) -> BeamAxis:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(values) != 3:
        raise ValueError(f"{name}: expected [min, max, n] (degrees, degrees, beams), got {values}")
    low, high, count = values
    try:
        low, high = float(low), float(high)
        count = int(count) if isinstance(count, str) and count.strip().isdigit() else count
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected min and max in degrees, got {values[0]!r} and {values[1]!r}") from None
    return BeamAxis(name, low, high, count)


# --------------------------------------------------------------------------- reading and projecting


def read_cloud(path: Path) -> np.ndarray:
    """A point cloud's XYZ, ``(M, 3)`` float64: ``.pcd`` and ``.ply`` by open3d, a KITTI ``.bin``
    (float32 rows x, y, z, intensity) by numpy; :class:`FormatError` naming the file."""
    if path.suffix.lower() == ".bin":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FormatError(f"{path}: unreadable ({exc.strerror or exc})") from None
        if len(data) % 16:
            raise FormatError(f"{path}: not a KITTI .bin point cloud: {len(data)} bytes are not whole rows of "
                              "float32 x, y, z, intensity (16 bytes each)")
        points = np.frombuffer(data, "<f4").reshape(-1, 4)[:, :3].astype(np.float64)
    else:
        import open3d as o3d

        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            points = np.asarray(o3d.io.read_point_cloud(str(path)).points)
    if not len(points):
        raise FormatError(f"{path}: no point read (an unreadable, corrupt or empty point cloud)")
    return points


def project(points: np.ndarray, beams: Beams) -> np.ndarray:
    """The range image ``(n_azimuth, n_zenith)`` float32 of ``points``: each beam the distance of its
    nearest point, ``NO_RETURN`` where it has none (points at ``NO_RETURN`` or beyond are none)."""
    points = points[np.isfinite(points).all(1)]
    x, y, z = points.T
    distance = np.sqrt(x * x + y * y + z * z)
    row = beams.azimuth.beam_of(np.degrees(np.arctan2(-x, y)))
    column = beams.zenith.beam_of(-np.degrees(np.arctan2(z, np.hypot(x, y))))
    keep = (row >= 0) & (column >= 0) & (distance > 0) & (distance < layout.NO_RETURN)
    depth = np.full(beams.azimuth.count * beams.zenith.count, layout.NO_RETURN, np.float32)
    np.minimum.at(depth, row[keep] * beams.zenith.count + column[keep], distance[keep].astype(np.float32))
    return depth.reshape(beams.azimuth.count, beams.zenith.count)


def _no_return_reason(points: np.ndarray, beams: Beams) -> str:
    finite = points[np.isfinite(points).all(1)]
    behind = int((finite[:, 1] <= 0).sum())
    far = int((np.linalg.norm(finite, axis=1) >= layout.NO_RETURN).sum())
    return (f"none of its {len(points)} points is within the beams ({beams.describe()}, nearer than "
            f"{layout.NO_RETURN:g} m): {behind} behind the sensor (y <= 0), {far} at {layout.NO_RETURN:g} m or "
            f"beyond, {len(points) - len(finite)} not finite")


def read_image(path: Path) -> np.ndarray:
    """An image in any PIL mode and size as RGBA uint8."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGBA"))
    except Exception as exc:  # PIL raises many types for corrupt data
        raise FormatError(f"{path}: unreadable image ({exc})") from None


# --------------------------------------------------------------------------- finding the pairs


@dataclass(frozen=True)
class Source:
    """An image and a point cloud of one stem, and the class folder they go to."""

    folder: str
    stem: str
    image: Path
    cloud: Path


def class_folder(label: str) -> str:
    """The class folder of a label: the layout's (``cube`` -> ``cubes``, ``torus`` -> ``tori``), else the
    label itself."""
    return synth.FOLDERS.get(label, label)


def read_labels(path: Path | str) -> dict[str, str]:
    """``stem,label`` rows (a first row ``stem,label`` is a header) -> ``{stem: label}``."""
    labels = {}
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable labels file ({exc})") from None
    for line, row in enumerate(rows, 1):
        row = [cell.strip() for cell in row]
        if not any(row) or (line == 1 and row == ["stem", "label"]):
            continue
        if len(row) != 2 or not all(row):
            raise ValueError(f"{path}: line {line}: expected two columns stem,label, got {','.join(row)!r}")
        stem, label = row
        if labels.setdefault(stem, label) != label:
            raise ValueError(f"{path}: line {line}: {stem!r} is labelled {labels[stem]!r} and {label!r}")
    return labels


def find_sources(src: Path | str, labels: Path | str | None = None, classes: Sequence[str] | None = None,
                 ) -> tuple[list[Source], list[BadFile]]:
    """The pairs under ``src`` (by stem) and the files that make none, with the reason.

    Without ``labels`` each folder of ``src`` is a class (its name the label, files at any depth in
    it); with them, the files at any depth under ``src`` pair by stem across folders and the
    ``stem,label`` file labels them. ``classes``: the labels to import (default: all; ``cube`` and
    ``cubes`` are one)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder does not exist")
    refused: list[BadFile] = []
    groups: dict[str | None, list[Path]] = defaultdict(list)  # label (None: from the labels file) -> files
    for path in sorted(_files(src)):
        if labels is not None:
            groups[None].append(path)
        elif path.parent == src:
            refused.append(BadFile(path, f"not in a class folder ({src}/<class>/...)"))
        else:
            groups[path.relative_to(src).parts[0]].append(path)
    stem_labels = read_labels(labels) if labels is not None else {}

    sources, seen = [], set()
    for group_label, files in groups.items():
        by_stem: dict[str, dict[str, list[Path]]] = defaultdict(lambda: {"image": [], "cloud": []})
        for path in files:
            by_stem[path.stem]["image" if path.suffix.lower() in IMAGE_SUFFIXES else "cloud"].append(path)
        for stem, found in sorted(by_stem.items()):
            seen.add(stem)
            label = group_label if labels is None else stem_labels.get(stem)
            problem = _pair_problem(found, label, labels, classes)
            if problem:
                refused += [BadFile(path, problem) for path in found["image"] + found["cloud"]]
            else:
                sources.append(Source(class_folder(label), stem, found["image"][0], found["cloud"][0]))
    refused += [BadFile(Path(labels), f"{stem!r} (label {label!r}): no image or point cloud of that stem in {src}")
                for stem, label in stem_labels.items() if stem not in seen]
    return sorted(sources, key=lambda s: (s.folder, s.stem)), refused


def _files(src: Path):
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES + CLOUD_SUFFIXES:
                yield Path(dirpath) / name


def _pair_problem(found: dict[str, list[Path]], label: str | None, labels, classes) -> str | None:
    images, clouds = found["image"], found["cloud"]
    if not clouds:
        return "an image without a point cloud of the same stem (.pcd, .ply or .bin)"
    if not images:
        return f"a point cloud without an image of the same stem ({', '.join(IMAGE_SUFFIXES)})"
    if len(images) > 1 or len(clouds) > 1:
        return "one of several files of one kind with this stem: " + ", ".join(str(p) for p in images + clouds)
    if label is None:
        return f"no label in {labels}"
    if labels is not None and not _LABEL.match(label):
        return f"label {label!r} cannot name a class folder (letters, digits, '_', '.', '-')"
    if classes is not None and class_folder(label) not in {class_folder(c) for c in classes}:
        return f"unknown label {label!r} (expected one of {', '.join(classes)})"
    return None


# --------------------------------------------------------------------------- importing


@dataclass
class ImportReport:
    """What an import wrote and what it refused."""

    dest: Path
    beams: Beams
    imported: dict[str, int] = field(default_factory=dict)  #: class folder -> pairs written
    refused: list[BadFile] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return sum(self.imported.values())

    def format_text(self, max_listed: int = 20) -> str:
        if self.pairs:
            per_class = ", ".join(f"{folder} {n}" for folder, n in self.imported.items())
            lines = [f"imported {self.pairs} pairs into {self.dest} ({per_class}); beams: {self.beams.describe()}"]
        else:
            lines = [f"nothing importable: {self.dest} not written"]
        if self.refused:
            lines.append(f"refused {len(self.refused)} files:")
            lines += [f"  {bad.path}: {bad.reason}" for bad in self.refused[:max_listed]]
            if len(self.refused) > max_listed:
                lines.append(f"  ... and {len(self.refused) - max_listed} more")
        return "\n".join(lines)


def _import_pair(source: Source, staging: Path, beams: Beams) -> list[BadFile]:
    """Write one pair into ``staging``, or what is wrong with its files (nothing written)."""
    try:
        points = read_cloud(source.cloud)
    except FormatError as exc:
        return [BadFile(source.cloud, str(exc).removeprefix(f"{source.cloud}: "))]
    depth = project(points, beams)
    if not (depth < layout.NO_RETURN).any():
        return [BadFile(source.cloud, _no_return_reason(points, beams))]
    try:
        rgba = read_image(source.image)
    except FormatError as exc:
        return [BadFile(source.image, str(exc).removeprefix(f"{source.image}: "))]
    layout.write_pair(staging / source.folder, source.stem, rgba, depth)
    return []


def import_pointclouds(
    src: Path | str, dest: Path | str, beams: Beams, *, labels: Path | str | None = None,
    classes: Sequence[str] | None = None, overwrite: bool = False,
    progress: Callable[[int], None] | None = None, workers: int | None = None,
) -> ImportReport:
    """Import the image/point-cloud pairs under ``src`` into ``dest`` (see the module's docstring).

    ``dest`` must not exist unless ``overwrite``; it is replaced only once the import is complete,
    and not written at all when no pair is importable (``report.pairs == 0``). ``progress`` is
    called with the number of pairs done since its last call; ``workers`` processes (default: 2
    from 200 pairs on)."""
    dest = Path(dest).resolve()
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: already exists (use --overwrite to replace it)")
    sources, refused = find_sources(src, labels, classes)
    report = ImportReport(dest, beams, refused=refused)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        azimuth, zenith = beams.azimuth.radians(), beams.zenith.radians()
        for folder in dict.fromkeys(s.folder for s in sources):
            layout.write_angles(layout.make_class_dirs(staging, folder), azimuth, zenith)
        workers = workers or (2 if len(sources) >= 200 else 1)
        with process_pool(workers) if workers > 1 else nullcontext() as pool:
            map_ = partial(pool.map, chunksize=16) if pool else map
            for source, bad in zip(sources, map_(partial(_import_pair, staging=staging, beams=beams), sources)):
                report.refused += bad
                if not bad:
                    report.imported[source.folder] = report.imported.get(source.folder, 0) + 1
                if progress:
                    progress(1)
        for folder in dict.fromkeys(s.folder for s in sources):
            if folder not in report.imported:
                shutil.rmtree(staging / folder)
        if report.pairs:
            _move_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _move_into_place(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``; an existing ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        dest.rename(old / dest.name)
    staging.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

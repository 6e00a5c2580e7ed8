"""Pairs -> the arrays ``mm_models`` trains on, from a dataset view or a raw folder.

RGB stays RGBA uint8 ``(N, H, W, 4)``; LiDAR becomes the course's XYZA float32
``(N, 4, AZIMUTH, ZENITH)`` (``(N, 64, 64, 4)`` and ``(N, 4, 64, 64)`` for the original; every
pair must have the first pair's sizes); labels are class indices into the classes (a dataset's, or a
folder's: 0 cube, 1 sphere, 2 cylinder, ...). Decoded arrays are cached on
disk under a key made of every file's path, size and modification time, so a
re-run skips the decoding and any change to the data makes a new entry.

The cache of a selection is an arrays folder (``mm_models.data``):
``CACHE/tensors/<fingerprint>/`` with ``rgb.npy``, ``lidar.npy``, ``labels.npy`` and
``index.json``, decoded and written ``CHUNK`` pairs at a time (memory flat in the
number of pairs) and returned memory-mapped: training reads it into memory or
streams it from there (``TrainConfig.data``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mm_models.arrays import INDEX, ArraysWriter, open_arrays

from ..data import layout
from .views import dataset_classes, default_cache_dir, with_tags

CACHE_VERSION = 1  # part of the fingerprint (runs record it: resume checks it)
CHUNK = 1024  # pairs decoded, then written, at a time (~80 MB)


class MissingFilesError(FileNotFoundError):
    """Files of some pairs are gone; ``missing`` lists ``(pair_id, path)``, the message names them."""

    def __init__(self, message: str, missing: list[tuple[str, str]]):
        super().__init__(message)
        self.missing = missing


@dataclass
class PairArrays:
    pair_ids: list[str]
    rgb: np.ndarray  # (N, H, W, 4) uint8; memory-mapped from ``source`` when cached
    lidar: np.ndarray  # (N, 4, H, W) float32; memory-mapped from ``source`` when cached
    labels: np.ndarray  # (N,) int64, index into classes
    fingerprint: str  # identifies the data: pair ids and file contents' keys
    source: Path | None = None  # the arrays folder (cache) rgb and lidar are mapped from
    classes: tuple[str, ...] = layout.LABELS  # label index -> class label

    def __len__(self) -> int:
        return len(self.pair_ids)

    def tensors(self):
        """As ``mm_models.PairTensors`` (still memory-mapped when cached: the engine places them)."""
        from mm_models.data import PairTensors

        return PairTensors.from_numpy(self.rgb, self.lidar, self.labels)


def _fingerprint(pair_ids: list[str], paths: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    missing = []
    for pid, (rgb, lidar) in zip(pair_ids, paths):
        digest.update(pid.encode())
        for path in (rgb, lidar):
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                missing.append((pid, path))
                continue
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if missing:
        shown = "; ".join(f"{pid}: {path}" for pid, path in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingFilesError(f"{len(missing)} files of {len({pid for pid, _ in missing})} pairs are missing "
                                f"({shown})", missing)
    return digest.hexdigest()[:24]


def load_pairs(pair_ids: list[str], labels: list[str], rgb_paths: list[str], range_paths: list[str],
               cache_dir: Path | str | None = None, classes: tuple[str, ...] | list[str] = layout.LABELS) -> PairArrays:
    """Decode (or reuse from ``cache_dir``) the arrays of the given pairs, in order; ``labels``
    become their indices in ``classes``.

    With ``cache_dir`` the arrays are decoded into the cache a chunk at a time and come
    back memory-mapped from it; without, they are decoded into memory.
    """
    if not pair_ids:
        raise ValueError("no pairs to load: the selection is empty")
    classes = tuple(classes)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"unknown labels {unknown}: expected {' / '.join(classes)}")
    fingerprint = _fingerprint(pair_ids, list(zip(rgb_paths, range_paths)))
    index_of = {label: i for i, label in enumerate(classes)}
    label_index = np.array([index_of[label] for label in labels], np.int64)
    if not cache_dir:
        rgb, lidar = _empty(len(pair_ids), _sizes(rgb_paths[0], range_paths[0]))
        _decode(rgb_paths, range_paths, rgb, lidar)
        return PairArrays(list(pair_ids), rgb, lidar, label_index, fingerprint, classes=classes)

    folder = Path(cache_dir) / "tensors" / fingerprint
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f"{fingerprint}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process decodes (torchrun's start together); the others wait
        arrays = None
        if (folder / INDEX).is_file():
            try:
                arrays, index = open_arrays(folder)
                if index.get("fingerprint") != fingerprint or index.get("count") != len(pair_ids):
                    raise ValueError(f"{folder}: holds other pairs")
            except ValueError:  # damaged: decode again
                arrays = None
                shutil.rmtree(folder, ignore_errors=True)
        if arrays is None:
            _decode_to_cache(folder, fingerprint, rgb_paths, range_paths, label_index, classes)
            Path(cache_dir, "tensors", f"{fingerprint}.npz").unlink(missing_ok=True)  # this version's predecessor
            arrays, _ = open_arrays(folder)
    return PairArrays(list(pair_ids), arrays["rgb"], arrays["lidar"], label_index, fingerprint, folder, classes)


def _sizes(rgb_path: str, range_path: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The image size and the beams of a pair, from its files."""
    return layout.read_rgb(rgb_path).shape[:2], layout.read_depth(range_path).shape


def _empty(count: int, sizes: tuple[tuple[int, int], tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    image_size, beams = sizes
    return np.empty((count, *image_size, 4), np.uint8), np.empty((count, 4, *beams), np.float32)


def _decode(rgb_paths, range_paths, rgb: np.ndarray, lidar: np.ndarray, angles: dict | None = None) -> None:
    """Decode the pairs of the paths into ``rgb`` and ``lidar`` (as many rows as paths, of their sizes:
    a file of another size is a ``FormatError`` naming it)."""
    angles = {} if angles is None else angles
    for i, (rgb_path, range_path) in enumerate(zip(rgb_paths, range_paths)):
        class_dir = os.path.dirname(os.path.dirname(range_path))
        if class_dir not in angles:
            angles[class_dir] = layout.read_angles(class_dir)
        rgb[i] = layout.read_rgb(rgb_path, rgb.shape[1:3])
        lidar[i] = layout.depth_to_xyza(layout.read_depth(range_path, lidar.shape[2:]), *angles[class_dir])


def _decode_to_cache(folder: Path, fingerprint: str, rgb_paths, range_paths, labels: np.ndarray,
                     classes: tuple[str, ...]) -> None:
    """Decode the pairs into the arrays folder ``folder``, ``CHUNK`` pairs at a time."""
    count = len(labels)
    rgb, lidar = _empty(min(CHUNK, count), _sizes(rgb_paths[0], range_paths[0]))
    angles: dict = {}
    with ArraysWriter(folder, {"rgb": ((count, *rgb.shape[1:]), np.uint8),
                               "lidar": ((count, *lidar.shape[1:]), np.float32),
                               "labels": ((count,), np.int64)},
                      {"fingerprint": fingerprint, "labels": list(classes)}) as out:
        for start in range(0, count, CHUNK):
            stop = min(start + CHUNK, count)
            _decode(rgb_paths[start:stop], range_paths[start:stop], rgb, lidar, angles)
            out.write(start, rgb=rgb[:stop - start], lidar=lidar[:stop - start], labels=labels[start:stop])


def from_folder(root: Path | str, pair_ids: list[str] | None = None,
                cache_dir: Path | str | None = None) -> PairArrays:
    """Arrays of the valid pairs under a raw data folder (optionally only ``pair_ids``); its classes
    are its class folders'."""
    report = layout.scan(root).require_usable()
    pairs = report.pairs
    if pair_ids is not None:
        wanted = set(pair_ids)
        pairs = [p for p in pairs if p.pair_id in wanted]
    return load_pairs([p.pair_id for p in pairs], [p.label for p in pairs],
                      [str(p.rgb_path) for p in pairs], [str(p.lidar_path) for p in pairs], cache_dir,
                      report.labels)


def from_dataset(dataset, tags: str | list[str] | None = None, cache_dir: Path | str | None = None) -> PairArrays:
    """Arrays of the pairs of a grouped dataset, optionally only those with ``tags``."""
    view = with_tags(dataset.select_group_slices("rgb"), tags)
    ids, labels, rgb, ranges = view.values(["pair_id", "ground_truth.label", "filepath", "range_path"])
    if not ids:
        raise ValueError(f"dataset '{dataset.name}' has no pairs tagged {tags!r} (create splits first)")
    root = dataset.info.get("data_root")
    if cache_dir is None and root:
        cache_dir = default_cache_dir(Path(root))
    try:
        return load_pairs(ids, labels, rgb, ranges, cache_dir, dataset_classes(dataset))
    except MissingFilesError as exc:
        raise MissingFilesError(
            f"dataset '{dataset.name}': {exc}. The data folder changed since it was ingested: restore the files, "
            f"or run `cilp ingest {root or 'DATA_FOLDER'} --name {dataset.name}` to remove the pairs whose "
            f"files vanished", exc.missing) from None

"""Pairs -> the arrays ``mm_models`` trains on, from a dataset view or a raw folder.

RGB stays RGBA uint8 ``(N, 64, 64, 4)``; LiDAR becomes the course's XYZA float32
``(N, 4, 64, 64)``; labels are 0 (cube) / 1 (sphere). Decoded arrays are cached on
disk under a key made of every file's path, size and modification time, so a
re-run skips the decoding and any change to the data makes a new entry.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import format as fmt

CACHE_VERSION = 1


class MissingFilesError(FileNotFoundError):
    """Files of some pairs are gone; ``missing`` lists ``(pair_id, path)``, the message names them."""

    def __init__(self, message: str, missing: list[tuple[str, str]]):
        super().__init__(message)
        self.missing = missing


@dataclass
class PairArrays:
    pair_ids: list[str]
    rgb: np.ndarray  # (N, H, W, 4) uint8
    lidar: np.ndarray  # (N, 4, H, W) float32
    labels: np.ndarray  # (N,) int64, index into format.LABELS
    fingerprint: str  # identifies the data: pair ids and file contents' keys

    def __len__(self) -> int:
        return len(self.pair_ids)

    def tensors(self):
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
               cache_dir: Path | str | None = None) -> PairArrays:
    """Decode (or reuse from ``cache_dir``) the arrays of the given pairs, in order."""
    if not pair_ids:
        raise ValueError("no pairs to load: the selection is empty")
    unknown = sorted(set(labels) - set(fmt.LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}: expected {' / '.join(fmt.LABELS)}")
    fingerprint = _fingerprint(pair_ids, list(zip(rgb_paths, range_paths)))
    label_index = np.array([fmt.LABELS.index(label) for label in labels], np.int64)
    cached = Path(cache_dir) / "tensors" / f"{fingerprint}.npz" if cache_dir else None
    if cached and cached.exists():
        with np.load(cached, allow_pickle=False) as arrays:
            return PairArrays(list(pair_ids), arrays["rgb"], arrays["lidar"], label_index, fingerprint)

    angles = {}
    rgb = np.empty((len(pair_ids), fmt.SIZE, fmt.SIZE, 4), np.uint8)
    lidar = np.empty((len(pair_ids), 4, fmt.SIZE, fmt.SIZE), np.float32)
    for i, (rgb_path, range_path) in enumerate(zip(rgb_paths, range_paths)):
        class_dir = Path(range_path).parent.parent
        if class_dir not in angles:
            angles[class_dir] = fmt.read_angles(class_dir)
        rgb[i] = fmt.read_rgb(rgb_path)
        lidar[i] = fmt.depth_to_xyza(fmt.read_depth(range_path), *angles[class_dir])
    if cached:
        from mm_models.checkpoint import atomic_write  # torch: not at plugin load

        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda temp: _save_npz(temp, rgb=rgb, lidar=lidar))
    return PairArrays(list(pair_ids), rgb, lidar, label_index, fingerprint)


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
        np.savez(handle, **arrays)


def from_folder(root: Path | str, pair_ids: list[str] | None = None,
                cache_dir: Path | str | None = None) -> PairArrays:
    """Arrays of the valid pairs under a raw data folder (optionally only ``pair_ids``)."""
    pairs = fmt.scan(root).require_usable().pairs
    if pair_ids is not None:
        wanted = set(pair_ids)
        pairs = [p for p in pairs if p.pair_id in wanted]
    return load_pairs([p.pair_id for p in pairs], [p.label for p in pairs],
                      [str(p.rgb_path) for p in pairs], [str(p.lidar_path) for p in pairs], cache_dir)


def from_dataset(dataset, tags: str | list[str] | None = None, cache_dir: Path | str | None = None) -> PairArrays:
    """Arrays of the pairs of a grouped dataset, optionally only those with ``tags``."""
    from .ingest import default_cache_dir
    from .splits import with_tags  # fiftyone: only where a dataset is read

    view = with_tags(dataset.select_group_slices("rgb"), tags)
    ids, labels, rgb, ranges = view.values(["pair_id", "ground_truth.label", "filepath", "range_path"])
    if not ids:
        raise ValueError(f"dataset '{dataset.name}' has no pairs tagged {tags!r} (create splits first)")
    root = dataset.info.get("data_root")
    if cache_dir is None and root:
        cache_dir = default_cache_dir(Path(root))
    try:
        return load_pairs(ids, labels, rgb, ranges, cache_dir)
    except MissingFilesError as exc:
        raise MissingFilesError(
            f"dataset '{dataset.name}': {exc}. The data folder changed since it was ingested: restore the files, "
            f"or run `cilp ingest {root or 'DATA_FOLDER'} --name {dataset.name}` to remove the pairs whose "
            f"files vanished", exc.missing) from None

"""Point-cloud import throughput: images + clouds -> the on-disk layout, in clouds/s.

Generated pairs are written out as a user's recording would hold them (one flat folder of PNG
images and point clouds, a labels CSV); then ``cilp import-pointclouds`` is timed on them, with
one worker process and with the default, and the imported range images are compared with the
generated ones (the projection is the exact inverse of the generator's, so they agree).

A generated cloud holds the object's returns only (a few hundred points); ``--points N`` pads each
to N points with returns behind the sensor (outside its beams, so the range images do not change),
the size of a spinning LiDAR's sweep (a KITTI scan has ~120,000).

    .venv/bin/python benchmarks/bench_import.py [--clouds 1000] [--format pcd|ply|bin] [--points 120000]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_csv import Results  # noqa: E402

from cilp_plugin.data import layout, synth  # noqa: E402
from cilp_plugin.data.pointclouds import Beams, import_pointclouds  # noqa: E402

#: the generator's beams: 64 centres from -16 degrees, 0.5 degrees apart
BEAMS = Beams.from_values((-16, 15.5, 64), (-16, 15.5, 64))


def write_cloud(path: Path, points: np.ndarray) -> None:
    """``points`` (M, 3) as a .pcd or .ply (open3d) or a KITTI .bin (float32 x, y, z, intensity)."""
    if path.suffix == ".bin":
        np.hstack([points, np.ones((len(points), 1))]).astype("<f4").tofile(path)
        return
    import open3d as o3d

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points.astype(np.float64))
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"{path}: open3d could not write it")


def recording(data: Path, out: Path, suffix: str, size: int = 0) -> tuple[Path, int]:
    """The pairs of ``data`` as a flat recording under ``out`` with a labels CSV, each cloud padded to
    ``size`` points behind the sensor; the CSV's path and the points written."""
    rng = np.random.default_rng(0)
    (out / "images").mkdir(parents=True)
    (out / "clouds").mkdir()
    rows, points = [("stem", "label")], 0
    for pair in layout.scan(data, validate=False).pairs:
        xyza = layout.depth_to_xyza(layout.read_depth(pair.lidar_path), *layout.read_angles(pair.folder))
        cloud = xyza[:3].reshape(3, -1).T[xyza[3].ravel() > 0]
        if size > len(cloud):
            behind = rng.uniform((-80, -80, -3), (80, -0.5, 10), (size - len(cloud), 3))  # y < 0: behind it
            cloud = np.concatenate([cloud, behind.astype(np.float32)])
        stem = f"{pair.label}-{pair.stem}"
        write_cloud(out / "clouds" / f"{stem}{suffix}", cloud)
        shutil.copyfile(pair.rgb_path, out / "images" / f"{stem}.png")
        rows.append((stem, pair.label))
        points += len(cloud)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    return labels, points


def difference(pair: layout.Pair, imported: Path) -> float:
    """The largest difference, in metres, between a generated range image and its import."""
    return float(np.abs(layout.read_depth(pair.lidar_path) - layout.read_depth(imported)).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds", type=int, default=1000, help="clouds to import, half cubes, half spheres")
    parser.add_argument("--format", choices=["pcd", "ply", "bin"], default="pcd")
    parser.add_argument("--points", type=int, default=0, help="pad each cloud to this many points (default: no)")
    args = parser.parse_args(argv)
    results = Results("bench_import", variant=args.format + (f"-{args.points}pts" if args.points else ""))
    with tempfile.TemporaryDirectory(prefix="bench_import.") as tmp:
        tmp = Path(tmp)
        data = synth.generate(tmp / "generated", args.clouds // 2, seed=42)
        labels, points = recording(data, tmp / "recording", f".{args.format}", args.points)
        clouds = 2 * (args.clouds // 2)
        print(f"{clouds} .{args.format} clouds ({points / clouds:,.0f} points each on average), {clouds} PNG "
              f"images\n")
        print("| workers | seconds | clouds/s |\n| --- | --- | --- |")
        for workers in (1, None):
            dest = tmp / f"imported-{workers}"
            began = time.perf_counter()
            report = import_pointclouds(tmp / "recording", dest, BEAMS, labels=labels, workers=workers)
            seconds = time.perf_counter() - began
            if report.pairs != clouds or report.refused:
                raise SystemExit(f"imported {report.pairs} of {clouds}, refused {len(report.refused)}")
            used = workers or (2 if clouds >= 200 else 1)
            results.add(clouds=clouds, format=args.format, points_per_cloud=round(points / clouds), workers=used,
                        seconds=seconds, clouds_per_s=clouds / seconds)
            print(f"| {used} | {seconds:.2f} | {clouds / seconds:,.0f} |", flush=True)
        worst = max(difference(pair, dest / pair.folder.name / "lidar" / f"{pair.label}-{pair.stem}.npy")
                    for pair in layout.scan(data, validate=False).pairs)
        print(f"\nimported range images against the generated ones: largest difference {worst:.2g} m")
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

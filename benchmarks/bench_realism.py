"""How much a data folder looks like the original renders, per class, beside the published values.

    .venv/bin/python benchmarks/bench_realism.py [--reference-lidar PATH] [DATA ...]

For each DATA folder (DLI layout; default: the generator's defaults rendered afresh with
seeds 7 and 1234, 300 pairs per class each) it prints NVIDIA's pretrained LiDAR classifier's
accuracy and mean logit (the assessment's ``lidar_cnn.pt``, trained on the original renders:
read from PATH, by default ``../shared/reference/lidar_cnn.pt`` where it exists; the
repository holds no copy), the RGB per-channel mean and std, the alpha values, the share of
all-black images, the LiDAR returns per image, the object's extent in pixels and the range of
the valid returns. ``--look legacy`` renders the default folders as the generator did before
its scenes were fitted to the original.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from results_csv import Results

from cilp_plugin.data import layout, synth
from mm_models.assessment import load_lidar_cnn

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "lidar_cnn.pt"
DEFAULT_SEEDS = (7, 1234)

#: the original's published statistics (../shared/notes/dli-data-format.md) and what the
#: picture of four original pairs shows (cubes 0000/0001, spheres 0000/0001)
PUBLISHED = {
    "rgb_mean": "~0.0052", "rgb_std": "~0.059", "alpha": "255", "black_share": "a few",
    "returns": {"cube": "280, 335", "sphere": "141, 156"},
    "extent_px": {"cube": "19-22", "sphere": "13-14"},
}


@dataclass
class ClassStats:
    """What the benchmark measures of one class of one folder."""

    pairs: int
    accuracy: float  # the reference classifier's, in [0, 1]
    mean_logit: float
    rgb_mean: np.ndarray  # (3,) in [0, 1]
    rgb_std: np.ndarray
    alpha: tuple[int, ...]  # the distinct alpha values
    black_share: float
    returns: np.ndarray  # valid beams per image
    extent_px: np.ndarray  # the object's bounding-box side, the longer of the two
    valid_range: tuple[float, float]  # metres, 1st and 99th percentile of all valid returns


def reference_logits(classifier, depth: np.ndarray, azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """The reference classifier's logits of ``N`` range images (it reads their range, as stored)."""
    xyza = np.stack([layout.depth_to_xyza(d, azimuth, zenith) for d in depth])
    with torch.no_grad():
        return classifier({"lidar": torch.from_numpy(xyza)})["logits"].numpy()


def class_stats(rgba: np.ndarray, depth: np.ndarray, label: str, logits: np.ndarray) -> ClassStats:
    """Measure ``N`` RGBA images (uint8), ``N`` range images (float32, metres) of one class and
    the reference classifier's logits of them."""
    target = layout.LABELS.index(label)  # cube 0, sphere 1: logit > 0 means sphere
    rgb = rgba[..., :3].astype(np.float64) / 255
    hits = depth < layout.NO_RETURN
    extent = np.maximum(hits.any(2).sum(1), hits.any(1).sum(1))
    valid = depth[hits]
    return ClassStats(
        pairs=len(depth), accuracy=float(((logits > 0) == target).mean()), mean_logit=float(logits.mean()),
        rgb_mean=rgb.mean((0, 1, 2)), rgb_std=rgb.std((0, 1, 2)), alpha=tuple(np.unique(rgba[..., 3]).tolist()),
        black_share=float((rgba[..., :3].max((1, 2, 3)) == 0).mean()), returns=hits.sum((1, 2)),
        extent_px=extent, valid_range=tuple(np.percentile(valid, [1, 99])) if valid.size else (np.nan, np.nan),
    )


def folder_stats(root: Path, classifier) -> dict[str, ClassStats]:
    """Per-class stats of a data folder in the DLI layout."""
    report = layout.scan(root).require_usable()
    stats = {}
    for label in layout.LABELS:
        mine = [p for p in report.pairs if p.label == label]
        rgba = np.stack([layout.read_rgb(p.rgb_path) for p in mine])
        depth = np.stack([layout.read_depth(p.lidar_path) for p in mine])
        logits = reference_logits(classifier, depth, *report.angles(label))
        stats[label] = class_stats(rgba, depth, label, logits)
    return stats


def _spread(values: np.ndarray) -> str:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{values.mean():.0f} ({p10:.0f} / {p50:.0f} / {p90:.0f})"


def table(name: str, stats: dict[str, ClassStats]) -> str:
    """A markdown table: one row per measure, one column per class, then the published value."""
    rows = [
        ("pairs", lambda s: f"{s.pairs}", ""),
        ("reference classifier accuracy", lambda s: f"{100 * s.accuracy:.1f} %", "trained on it"),
        ("reference classifier mean logit", lambda s: f"{s.mean_logit:+.1f}", "> 0 = sphere"),
        ("RGB mean (R, G, B)", lambda s: ", ".join(f"{v:.4f}" for v in s.rgb_mean), PUBLISHED["rgb_mean"]),
        ("RGB std (R, G, B)", lambda s: ", ".join(f"{v:.4f}" for v in s.rgb_std), PUBLISHED["rgb_std"]),
        ("alpha values", lambda s: ", ".join(map(str, s.alpha)), PUBLISHED["alpha"]),
        ("all-black RGB images", lambda s: f"{100 * s.black_share:.1f} %", PUBLISHED["black_share"]),
        ("LiDAR returns per image: mean (p10 / p50 / p90)", lambda s: _spread(s.returns), None),
        ("object extent, px: mean (p10 / p50 / p90)", lambda s: _spread(s.extent_px), None),
        ("valid returns, m (p1 - p99)", lambda s: f"{s.valid_range[0]:.1f} - {s.valid_range[1]:.1f}", "-"),
    ]
    published_by_class = {"LiDAR returns": "returns", "object extent": "extent_px"}
    lines = [f"### {name}", "", "| | " + " | ".join(stats) + " | published |",
             "| --- |" + " --- |" * (len(stats) + 1)]
    for title, cell, published in rows:
        if published is None:
            key = next(v for k, v in published_by_class.items() if title.startswith(k))
            published = "; ".join(f"{label}s {PUBLISHED[key][label]}" for label in stats)
        lines.append(f"| {title} | " + " | ".join(cell(s) for s in stats.values()) + f" | {published} |")
    weights = np.array([s.pairs for s in stats.values()]) / sum(s.pairs for s in stats.values())
    overall = sum(w * s.accuracy for w, s in zip(weights, stats.values()))
    rgb_mean = sum(w * s.rgb_mean for w, s in zip(weights, stats.values()))
    second_moment = sum(w * (s.rgb_std ** 2 + s.rgb_mean ** 2) for w, s in zip(weights, stats.values()))
    rgb_std = np.sqrt(second_moment - rgb_mean ** 2)
    lines += ["", f"all pairs: reference classifier {100 * overall:.1f} %, RGB mean "
                  f"{', '.join(f'{v:.4f}' for v in rgb_mean)}, std {', '.join(f'{v:.4f}' for v in rgb_std)}"]
    return "\n".join(lines)


def draw_looks(path: Path, pairs: int = 3, seed: int = 7) -> None:
    """Pairs of each look side by side (RGB, then the LiDAR range in viridis: yellow = no return),
    to set beside the picture of original pairs (../shared/reference/original_sample_pairs.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(look, class_index, shape) for look in synth.LOOKS
            for class_index, shape in enumerate(synth.SHAPES.values())]
    fig, axes = plt.subplots(len(rows), 2 * pairs, figsize=(4 * pairs, 2.1 * len(rows)))
    for row, (look, class_index, shape) in zip(axes, rows):
        rngs = [np.random.default_rng([seed, class_index, i]) for i in range(pairs)]
        rgba, depth = synth.render_batch(rngs, shape, synth.LOOKS[look], synth.BEAM_ANGLES, synth.BEAM_ANGLES)
        for i in range(pairs):
            row[2 * i].imshow(rgba[i, ..., :3])
            row[2 * i + 1].imshow(depth[i], cmap="viridis")
            row[2 * i].set_title(f"{look}: {shape} {i}, RGB", fontsize=8)
            row[2 * i + 1].set_title("LiDAR range", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="*", type=Path, help="data folders (default: fresh default renders)")
    parser.add_argument("--reference-lidar", type=Path, default=DEFAULT_REFERENCE,
                        help="the assessment's lidar_cnn.pt (default: ../shared/reference/lidar_cnn.pt)")
    parser.add_argument("--n-per-class", type=int, default=300, help="pairs per class of the default renders")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="seeds of the default renders")
    parser.add_argument("--look", choices=synth.LOOKS, default="default",
                        help="the renders' SceneConfig: the fitted defaults, or the generator before its fit")
    parser.add_argument("--picture", type=Path, metavar="PNG",
                        help="also draw pairs of each look (e.g. docs/generated_pairs.png)")
    args = parser.parse_args()
    if args.picture:
        draw_looks(args.picture)
    if not args.reference_lidar.is_file():
        parser.error(f"--reference-lidar: {args.reference_lidar} not found (the assessment's lidar_cnn.pt)")
    classifier = load_lidar_cnn(args.reference_lidar)
    results = Results("bench_realism")
    with tempfile.TemporaryDirectory() as tmp:
        folders = args.data or [synth.generate(Path(tmp) / f"seed{seed}", args.n_per_class, seed=seed,
                                               config=synth.LOOKS[args.look]) for seed in args.seeds]
        for folder in folders:
            look = f" ({args.look} look)" if args.look != "default" else ""
            name = folder if args.data else \
                f"cilp generate --n-per-class {args.n_per_class} --seed {folder.name[4:]}{look}"
            stats = folder_stats(folder, classifier)
            for label, c in stats.items():
                results.add(data=name, label=label, pairs=c.pairs, reference_accuracy=c.accuracy,
                            mean_logit=c.mean_logit, **{f"rgb_mean_{ch}": v for ch, v in zip("rgb", c.rgb_mean)},
                            **{f"rgb_std_{ch}": v for ch, v in zip("rgb", c.rgb_std)},
                            alpha=" ".join(map(str, c.alpha)), black_share=c.black_share,
                            returns_mean=c.returns.mean(), **{f"returns_p{q}": np.percentile(c.returns, q)
                                                              for q in (10, 50, 90)},
                            extent_px_median=np.median(c.extent_px), valid_range_p1=c.valid_range[0],
                            valid_range_p99=c.valid_range[1])
            print(table(str(name), stats), end="\n\n", flush=True)
    print(results)


if __name__ == "__main__":
    main()

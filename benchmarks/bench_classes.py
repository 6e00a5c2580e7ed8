"""More classes than cubes and spheres: the fusion models and the CILP chain on generated N-class data.

    .venv/bin/python benchmarks/bench_classes.py [--classes cube,sphere,cylinder,cone,torus]
        [--n-per-class 300] [--models add ...] [--preset cpu] [--precision fp32]
        [--image-size 64 64] [--beams 64 64] [--no-chain]

The classes are generated (seed 42) and split 80 / 20 with seed 42, each class in proportion;
then each fusion model asked for and the CILP chain (LiDAR classifier, CILP with the locked LiDAR
tower, projector, RGB -> LiDAR) train with the preset. One row per model: val accuracy, macro F1,
the lowest per-class F1 and which class, training samples/s and wall time; CILP's row gives RGB ->
LiDAR retrieval top-1 / top-5 among the val pairs. Needs no FiftyOne.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import MODELS as FUSION  # noqa: E402
from results_csv import Results  # noqa: E402
from sizes import add_size_arguments, size_variant  # noqa: E402

from cilp_plugin.data import layout, synth  # noqa: E402
from cilp_plugin.dataset import arrays  # noqa: E402
from cilp_plugin.dataset.splits import make_split  # noqa: E402
from mm_models import ModelConfig, train  # noqa: E402
from mm_models.choices import PRECISIONS, PRESETS_NAMES  # noqa: E402
from mm_models.presets import train_config  # noqa: E402
from mm_models.stages import pipeline_spec  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="cube,sphere,cylinder,cone,torus",
                        help="the generator's shapes, comma-separated (default: five)")
    parser.add_argument("--n-per-class", type=int, default=300)
    parser.add_argument("--models", nargs="*", choices=list(FUSION), default=["add"],
                        help="fusion models to train (default: add)")
    parser.add_argument("--no-chain", action="store_true", help="leave out the LiDAR classifier and the CILP chain")
    parser.add_argument("--preset", default="cpu", choices=PRESETS_NAMES)
    parser.add_argument("--precision", default="fp32", choices=[p for p in PRECISIONS if p != "auto"])
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    args.image_size, args.beams = tuple(args.image_size), tuple(args.beams)
    args.classes = synth.check_classes(args.classes.split(","))
    return args


def split_data(root: Path, classes: tuple[str, ...]):
    """The generated pairs split 80 / 20 (seed 42) as (train, val) tensors, and the class names."""
    report = layout.scan(root).require_usable()
    split = make_split([pair.pair_id for pair in report.pairs], val=0.2, seed=42, classes=classes)
    train_arrays, val_arrays = arrays.from_folder(root, split.train), arrays.from_folder(root, split.val)
    return train_arrays.tensors(), val_arrays.tensors(), list(train_arrays.classes)


def describe(result, class_names: list[str]) -> tuple[str, float, float, str]:
    """Accuracy, macro F1, and the lowest per-class F1 with its class, of a classifier's best epoch."""
    best = result.best
    if len(class_names) == 2:
        return f"{100 * best['val/accuracy']:.2f} %", best["val/f1"], best["val/f1"], "-"
    f1 = [best[f"val/f1_{k}"] for k in range(len(class_names))]
    worst = min(range(len(f1)), key=f1.__getitem__)
    return f"{100 * best['val/accuracy']:.2f} %", best["val/macro_f1"], f1[worst], class_names[worst]


def chain_rows(fit, row, class_names: list[str], sizes: dict) -> None:
    """Train the LiDAR classifier and the CILP chain on it (``fit``), a row (``row``) each."""
    n = len(class_names)
    lidar, seconds = fit(ModelConfig(family="lidar", num_classes=n, **sizes), "lidar", "lidar")
    row("lidar", lidar, seconds, *describe(lidar, class_names))
    cilp, seconds = fit(pipeline_spec("cilp", {"lidar": lidar.run_dir}, num_classes=n, **sizes), "cilp", "cilp")
    top1, top5 = (100 * cilp.best[f"val/rgb2lidar_top{k}"] for k in (1, 5))
    top = f"top-1 {top1:.2f} % / top-5 {top5:.2f} %"
    row("cilp (retrieval among the val pairs)", cilp, seconds, top, float("nan"), float("nan"), "-")
    projector, seconds = fit(pipeline_spec("projector", {"cilp": cilp.run_dir, "lidar": lidar.run_dir}),
                             "projector", "projector")
    chain, seconds = fit(pipeline_spec("rgb2lidar", {"projector": projector.run_dir}), "rgb2lidar", "rgb2lidar")
    before = chain.manifest["initial"]["val/accuracy"]
    score, macro, worst, which = describe(chain, class_names)
    row(f"rgb2lidar ({100 * before:.2f} % before fine-tuning)", chain, seconds, score, macro, worst, which)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = dict(image_size=args.image_size, beams=args.beams)
    size = size_variant(args.image_size, args.beams)
    variant = "-".join(filter(None, (size, None if args.preset == "cpu" else args.preset))) or None
    results = Results("bench_classes", precision=args.precision, variant=variant)
    with tempfile.TemporaryDirectory(prefix="bench_classes.") as tmp:
        root = synth.generate(Path(tmp) / "data", args.n_per_class, seed=42, classes=args.classes, **sizes)
        train_data, val_data, class_names = split_data(root, args.classes)
        print(f"{len(class_names)} classes ({', '.join(class_names)}): {len(train_data)} train / "
              f"{len(val_data)} val pairs; images {args.image_size}, beams {args.beams}; preset {args.preset}, "
              f"{args.precision}\n", flush=True)
        print("| model | val accuracy | macro F1 | lowest F1 (class) | samples/s | time |\n"
              "| --- | --- | --- | --- | --- | --- |")

        def fit(model, preset_model: str, run: str):
            config = train_config(preset_model, args.preset, device="cpu", precision=args.precision)
            began = time.perf_counter()
            result = train(model, config, train_data, val_data, Path(tmp) / "runs" / run, class_names=class_names)
            return result, time.perf_counter() - began

        def row(name: str, result, seconds: float, score: str, macro: float, worst: float, which: str) -> None:
            rate = result.history[-1]["samples_per_s"]
            results.add(classes=len(class_names), image_size="x".join(map(str, args.image_size)),
                        beams="x".join(map(str, args.beams)), model=name, val=score, macro_f1=macro, lowest_f1=worst,
                        lowest_class=which, samples_per_s=rate, seconds=seconds)
            f1 = "- | -" if macro != macro else f"{macro:.3f} | {worst:.3f} ({which})"  # NaN: no classes scored
            print(f"| {name} | {score} | {f1} | {rate:.0f} | {seconds:.0f} s |", flush=True)

        for name in args.models:
            result, seconds = fit(dataclasses.replace(FUSION[name], num_classes=len(class_names), **sizes), "fusion",
                                  name)
            row(name, result, seconds, *describe(result, class_names))
        if not args.no_chain:
            chain_rows(fit, row, class_names, sizes)
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

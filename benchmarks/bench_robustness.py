"""Do the defaults hold on data unlike the generator's defaults? One table row per data set.

    .venv/bin/python benchmarks/bench_robustness.py [--sets default near ...] [--n-per-class 1000]
        [--precision fp32|bf16] [--preset cpu] [--lidar-from PATH] [--lidar-towers locked trained]

Each set is generated (seed 42, split 80 / 20 with seed 42, as the demo cuts it), then trained
with today's defaults and the preset's epochs: intermediate fusion (add), and the CILP chain
(lidar classifier, CILP with the locked or trained LiDAR tower, projector, RGB -> LiDAR). Per set:
intermediate add's val accuracy, the chain before and after fine-tuning, CILP's val retrieval
top-1 / top-5 among the val pairs, and the wall time. ``--lidar-from`` adds a row per set with
the assessment's lidar_cnn.pt as the lidar stage (what it makes of data unlike the original).
Needs no FiftyOne.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_csv import Results  # noqa: E402

from cilp_plugin.data import layout, synth  # noqa: E402
from cilp_plugin.dataset import arrays  # noqa: E402
from cilp_plugin.dataset.splits import make_split  # noqa: E402
from mm_models import ModelConfig, train  # noqa: E402
from mm_models.assessment import import_run  # noqa: E402
from mm_models.choices import LIDAR_TOWERS, PRECISIONS  # noqa: E402
from mm_models.presets import train_config  # noqa: E402
from mm_models.stages import pipeline_spec  # noqa: E402

DEFAULT = synth.SceneConfig()
#: data sets far from the defaults, each one physical change
SETS = {
    "default": DEFAULT,
    "near": dataclasses.replace(DEFAULT, distance=(2.0, 5.0), size=(0.12, 0.3)),  # objects at 2-5 m
    "no-return-100": dataclasses.replace(DEFAULT, no_return=100.0),
    "bright-x4": dataclasses.replace(DEFAULT, brightness=4 * DEFAULT.brightness),
    "dark-x0.25": dataclasses.replace(DEFAULT, brightness=DEFAULT.brightness / 4),
    "camera-fov-30": dataclasses.replace(DEFAULT, camera_fov=30.0),
    "legacy": synth.LEGACY,
}


def generate_split(name: str, n_per_class: int, work: Path):
    """Set ``name`` generated into ``work / name / "data"`` (seed 42), split 80 / 20 with seed 42, as
    (train, val) ``PairTensors``."""
    root = synth.generate(work / name / "data", n_per_class, seed=42, config=SETS[name])
    pair_ids = [pair.pair_id for pair in layout.scan(root).require_usable().pairs]
    split = make_split(pair_ids, val=0.2, seed=42)
    return arrays.from_folder(root, split.train).tensors(), arrays.from_folder(root, split.val).tensors()


def run_set(name: str, args, work: Path, results: Results) -> list[str]:
    train_data, val_data = generate_split(name, args.n_per_class, work)
    runs = work / name / "runs"

    def fit(model, preset_entry: str, run: str):
        config_ = train_config(preset_entry, args.preset, device="cpu", precision=args.precision)
        return train(model, config_, train_data, val_data, runs / run)

    rows = []
    began = time.perf_counter()
    fusion = fit(ModelConfig(family="intermediate", fusion="add"), "fusion", "intermediate_add")
    fusion_seconds = time.perf_counter() - began
    lidar_sources = {"trained": None} | ({"lidar_cnn.pt": args.lidar_from} if args.lidar_from else {})
    lidars = {}  # each lidar stage once, shared by the towers
    for (source, lidar_from), tower in itertools.product(lidar_sources.items(), args.lidar_towers):
        began = time.perf_counter()
        prefix = f"{'nv_' if lidar_from else ''}{tower}_"
        if source not in lidars:
            lidars[source] = fit(ModelConfig(family="lidar"), "lidar", "lidar") if lidar_from is None else \
                import_run(lidar_from, val_data, runs / "nv_lidar")
        lidar = lidars[source]
        cilp_parents = {"lidar": lidar.run_dir} if tower == "locked" else {}
        cilp = fit(pipeline_spec("cilp", cilp_parents, tower), "cilp", f"{prefix}cilp")
        projector = fit(pipeline_spec("projector", {"cilp": cilp.run_dir, "lidar": lidar.run_dir}),
                        "projector", f"{prefix}projector")
        chain = fit(pipeline_spec("rgb2lidar", {"projector": projector.run_dir}), "rgb2lidar", f"{prefix}rgb2lidar")
        seconds = time.perf_counter() - began
        results.add(data=name, lidar_stage=source, cilp_lidar_tower=tower,
                    intermediate_add=fusion.best["val/accuracy"], lidar=lidar.best["val/accuracy"],
                    cilp_top1=cilp.best["val/rgb2lidar_top1"], cilp_top5=cilp.best["val/rgb2lidar_top5"],
                    rgb2lidar_before=chain.manifest["initial"]["val/accuracy"],
                    rgb2lidar_after=chain.best["val/accuracy"], intermediate_add_s=fusion_seconds, chain_s=seconds)
        rows.append(
            f"| {name} | {source}, {tower} tower | {100 * fusion.best['val/accuracy']:.2f} % | "
            f"{100 * lidar.best['val/accuracy']:.2f} % | "
            f"{100 * cilp.best['val/rgb2lidar_top1']:.2f} % / {100 * cilp.best['val/rgb2lidar_top5']:.2f} % | "
            f"{100 * chain.manifest['initial']['val/accuracy']:.2f} % | {100 * chain.best['val/accuracy']:.2f} % | "
            f"{fusion_seconds:.0f} + {seconds:.0f} s |")
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=[p for p in PRECISIONS if p != "auto"])
    parser.add_argument("--lidar-from", type=Path, help="also build the chain on the assessment's lidar_cnn.pt")
    parser.add_argument("--lidar-towers", nargs="+", choices=LIDAR_TOWERS, default=["locked"],
                        help="CILP's LiDAR tower(s): locked (today's default) and / or trained (the reference's)")
    args = parser.parse_args()
    print(f"2 x {args.n_per_class} pairs per set, 80 / 20, preset {args.preset}, {args.precision}\n")
    print("| data | lidar stage, CILP | intermediate add | lidar | cilp top-1 / top-5 | rgb2lidar before | "
          "rgb2lidar after | time (add + chain) |\n| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results = Results("bench_robustness", args.precision)
    with tempfile.TemporaryDirectory(prefix="bench_robustness.") as tmp:
        for name in args.sets:
            run_set(name, args, Path(tmp), results)
    print(f"\n{results}")


if __name__ == "__main__":
    main()

"""How each LiDAR input (``ModelConfig.lidar_input``) lets the LiDAR-only classifier learn, on one data set.

    .venv/bin/python benchmarks/bench_lidar_input.py [--set near] [--n-per-class 1000]
        [--inputs isotropic standardize metres] [--epochs 4 8] [--precision fp32|bf16]

The set is generated and split as ``bench_robustness.py`` does (seed 42, 80 / 20); each input is
trained with the ``cpu`` preset's learning rate and batch for each number of epochs (a schedule of
its own each: warm-up and cosine decay over those epochs). One row per input and length: val
accuracy after each epoch, the best checkpoint's, and the best epoch's train accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_robustness import SETS, generate_split  # noqa: E402
from results_csv import Results  # noqa: E402

from mm_models import ModelConfig, train  # noqa: E402
from mm_models.choices import LIDAR_INPUTS, PRECISIONS  # noqa: E402
from mm_models.presets import train_config  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=SETS, default="near")
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--inputs", nargs="+", choices=[i for i in LIDAR_INPUTS if i != "range"],
                        default=["isotropic", "standardize", "metres"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--precision", default="fp32", choices=[p for p in PRECISIONS if p != "auto"])
    args = parser.parse_args()
    print(f"{args.set}: 2 x {args.n_per_class} pairs, 80 / 20, LiDAR-only classifier, {args.precision}\n")
    print("| lidar_input | epochs | val accuracy per epoch | best | train accuracy at best |\n"
          "| --- | --- | --- | --- | --- |", flush=True)
    results = Results(f"bench_lidar_input-{args.set}", args.precision)
    with tempfile.TemporaryDirectory(prefix="bench_lidar_input.") as tmp:
        train_data, val_data = generate_split(args.set, args.n_per_class, Path(tmp))
        for lidar_input in args.inputs:
            for epochs in args.epochs:
                config = train_config("lidar", "cpu", epochs=epochs, device="cpu", precision=args.precision)
                result = train(ModelConfig(family="lidar", lidar_input=lidar_input), config, train_data, val_data,
                               Path(tmp) / "runs" / f"{lidar_input}_{epochs}")
                curve = ", ".join(f"{100 * row['val/accuracy']:.2f}" for row in result.history)
                at_best = result.history[result.best["epoch"] - 1]["train/accuracy"]
                results.add(set=args.set, lidar_input=lidar_input, epochs=epochs, val_accuracy_per_epoch=curve,
                            best_val_accuracy=result.best["val/accuracy"], train_accuracy_at_best=at_best)
                print(f"| {lidar_input} | {epochs} | {curve} | {100 * result.best['val/accuracy']:.2f} % | "
                      f"{100 * at_best:.2f} % |", flush=True)
    print(f"\n{results}")


if __name__ == "__main__":
    main()

"""CILP designs on the default data: one table row per design of the cross-modal chain.

    .venv/bin/python benchmarks/bench_cilp_designs.py [--n-per-class 1000] [--lidar-from PATH]
        [--designs locked trained nv-locked nv-trained] [--preset cpu]

``cilp generate``'s default data (seed 42), split 80 / 20 with seed 42 (bench_robustness's
``generate_split``), trained with the preset's epochs in fp32. Designs: CILP's LiDAR tower
``locked`` to the trained LiDAR classifier (today's default) or ``trained`` with the RGB one (the
reference's); ``nv-locked`` / ``nv-trained`` take the assessment's ``lidar_cnn.pt`` as the lidar
stage (``--lidar-from``, default ``../shared/reference/lidar_cnn.pt`` where it exists; the official
final notebook's pipeline is ``nv-trained``). A trained tower does not read the lidar stage, so
``trained`` and ``nv-trained`` share one CILP run. Per design: val retrieval RGB -> LiDAR top-1 /
top-5 among the val pairs, a logistic-regression probe's class accuracy on each modality's CILP
embeddings (fitted on the train pairs, scored on the val pairs), RGB -> LiDAR val accuracy before
and after fine-tuning, the swapped-pair check (two val pairs of one class exchange their LiDAR:
where their RGB-LiDAR cosine ranks among all val pairs' as a percentile from the lowest, the
median over 5 seeded swaps and how many of the swapped pairs fall in the lowest 5 %), and the
training time of the design's stages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_robustness import generate_split  # noqa: E402
from results_csv import Results  # noqa: E402

from mm_models import ModelConfig, outputs_of, train  # noqa: E402
from mm_models.assessment import import_run  # noqa: E402
from mm_models.data import PairTensors  # noqa: E402
from mm_models.losses import true_pair_ranks  # noqa: E402
from mm_models.presets import train_config  # noqa: E402
from mm_models.stages import load_run, pipeline_spec  # noqa: E402

DEFAULT_LIDAR_CNN = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "lidar_cnn.pt"
DESIGNS = {"locked": ("ours", "locked"), "trained": ("ours", "trained"),
           "nv-locked": ("lidar_cnn.pt", "locked"), "nv-trained": ("lidar_cnn.pt", "trained")}


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """A logistic-regression probe (L-BFGS, weight decay 1e-4) fitted on train, its val accuracy."""
    x, y = torch.from_numpy(train_x).double(), torch.from_numpy(train_y).double()
    w, b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True), torch.zeros(1, dtype=torch.float64,
                                                                                          requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + 1e-4 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    predicted = (torch.from_numpy(val_x).double() @ w + b > 0).double().numpy()
    return float((predicted == val_y).mean())


def swapped_pairs(cilp_run, val: PairTensors, swaps: int = 5, seed: int = 0) -> tuple[float, int, int]:
    """``swaps`` times (seeded) two val pairs of one class exchange their LiDAR; each swapped pair's
    RGB-LiDAR cosine as a percentile (from the lowest) among all val pairs'. Returns the median
    percentile, the number of swapped pairs in the lowest 5 % and their count."""
    rng, labels = np.random.default_rng(seed), val.labels.numpy()
    percentiles = []
    for _ in range(swaps):
        i, j = rng.choice(np.flatnonzero(labels == labels[rng.integers(len(labels))]), 2, replace=False)
        lidar = val.lidar.clone()
        lidar[[i, j]] = lidar[[j, i]]
        out = outputs_of(cilp_run, PairTensors(val.rgb, lidar, val.labels), device="cpu")
        cosine = (out["rgb_features"] * out["lidar_features"]).sum(1)
        percentiles += [100 * (cosine <= cosine[k]).mean() for k in (i, j)]
    return float(np.median(percentiles)), sum(p <= 5 for p in percentiles), len(percentiles)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--lidar-from", type=Path, default=DEFAULT_LIDAR_CNN if DEFAULT_LIDAR_CNN.is_file() else None,
                        help="the assessment's lidar_cnn.pt (default: ../shared/reference/lidar_cnn.pt if it exists)")
    parser.add_argument("--designs", nargs="+", choices=DESIGNS, help="default: all (the nv- ones with --lidar-from)")
    args = parser.parse_args()
    designs = args.designs or [d for d in DESIGNS if args.lidar_from or not d.startswith("nv-")]
    if any(d.startswith("nv-") for d in designs) and not (args.lidar_from and args.lidar_from.is_file()):
        parser.error(f"--designs {' '.join(designs)}: the nv- designs need --lidar-from (lidar_cnn.pt)")

    print(f"2 x {args.n_per_class} pairs, seed 42, 80 / 20, preset {args.preset}, fp32\n")
    print("| design | lidar stage (val acc) | top-1 / top-5 | probe RGB / LiDAR | rgb2lidar before / after | "
          "swapped pairs: median percentile (in lowest 5 %) | time: lidar + cilp + projector + rgb2lidar |\n"
          "| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results = Results("bench_cilp_designs", "fp32")
    with tempfile.TemporaryDirectory(prefix="bench_cilp_designs.") as tmp:
        train_data, val_data = generate_split("default", args.n_per_class, Path(tmp))
        runs, done = Path(tmp) / "runs", {}  # stage key -> (TrainResult, seconds), each stage trained once

        def stage(key, make, *args):
            if key not in done:
                began = time.perf_counter()
                done[key] = (make(*args), time.perf_counter() - began)
            return done[key]

        def fit(spec, entry, run):
            return train(spec, train_config(entry, args.preset, device="cpu", precision="fp32"),
                         train_data, val_data, runs / run)

        for design in designs:
            source, tower = DESIGNS[design]
            if source == "ours":
                lidar, lidar_s = stage(source, fit, ModelConfig(family="lidar"), "lidar", "lidar")
            else:
                lidar, lidar_s = stage(source, import_run, args.lidar_from, val_data, runs / "nv_lidar")
            cilp_key = f"{source}-locked" if tower == "locked" else "trained"
            cilp, cilp_s = stage(cilp_key, fit, pipeline_spec(
                "cilp", {"lidar": lidar.run_dir} if tower == "locked" else {}, tower), "cilp", f"{cilp_key}_cilp")
            projector, projector_s = stage(design + "-projector", fit, pipeline_spec(
                "projector", {"cilp": cilp.run_dir, "lidar": lidar.run_dir}), "projector", f"{design}_projector")
            chain, chain_s = stage(design + "-rgb2lidar", fit, pipeline_spec(
                "rgb2lidar", {"projector": projector.run_dir}), "rgb2lidar", f"{design}_rgb2lidar")

            loaded = load_run(cilp.run_dir)
            train_out, val_out = (outputs_of(loaded, data, device="cpu") for data in (train_data, val_data))
            ranks = true_pair_ranks(torch.from_numpy(val_out["rgb_features"]),
                                    torch.from_numpy(val_out["lidar_features"]))
            top1, top5 = (100 * (ranks <= k).double().mean().item() for k in (1, 5))
            probes = [100 * probe_accuracy(train_out[f"{m}_features"], train_data.labels.numpy(),
                                           val_out[f"{m}_features"], val_data.labels.numpy()) for m in ("rgb", "lidar")]
            median, lowest, swapped = swapped_pairs(loaded, val_data)
            results.add(design=design, lidar_stage=source, lidar=lidar.best["val/accuracy"], top1_pct=top1,
                        top5_pct=top5, probe_rgb_pct=probes[0], probe_lidar_pct=probes[1],
                        rgb2lidar_before=chain.manifest["initial"]["val/accuracy"],
                        rgb2lidar_after=chain.best["val/accuracy"], swapped_median_percentile=median,
                        swapped_in_lowest_5pct=lowest, swapped_pairs=swapped, lidar_s=lidar_s, cilp_s=cilp_s,
                        projector_s=projector_s, rgb2lidar_s=chain_s)
            print(f"| {design} | {source} ({100 * lidar.best['val/accuracy']:.2f} %) | {top1:.2f} % / {top5:.2f} % | "
                  f"{probes[0]:.2f} % / {probes[1]:.2f} % | {100 * chain.manifest['initial']['val/accuracy']:.2f} % / "
                  f"{100 * chain.best['val/accuracy']:.2f} % | {median:.1f} % ({lowest} of {swapped}) | "
                  f"{lidar_s:.0f} + {cilp_s:.0f} + {projector_s:.0f} + {chain_s:.0f} s |", flush=True)
    print(f"\n{len(val_data)} val pairs; a design sharing a stage with an earlier row reuses its run "
          f"(same time shown)\n{results}")


if __name__ == "__main__":
    main()

"""The GPU benchmark: training throughput and peak memory of intermediate fusion (add) at batch 256.

Target: at least 50,000 training samples/s under bf16. The data is generated
(the default scenes), decoded once and resident on the GPU, as the engine trains;
samples/s are the steady epochs' (after the first, which pays cuDNN's autotuning
and compilation: its extra seconds are the "one-time" column). TFLOP/s counts each
convolution and linear layer's multiply-adds, times 3 for the forward and backward
passes. With ``--junit`` the outcomes of the CUDA tests join the table.

    python benchmarks/bench_gpu.py                                # ~1 min on one GPU
    python benchmarks/bench_gpu.py --junit cuda-tests.xml         # as benchmarks/gpu_check.sh runs it
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_csv import Results  # noqa: E402

from cilp_plugin.data import synth  # noqa: E402
from cilp_plugin.dataset import arrays  # noqa: E402
from mm_models import ModelConfig, TrainConfig, build_model, train  # noqa: E402

TARGET = 50_000
ADD = ModelConfig(family="intermediate", fusion="add")
#: (precision, compile) of each row: eager, compiled, compiled with autotuned kernels, fp32
VARIANTS = (("bf16", False), ("bf16", True), ("bf16", "max-autotune-no-cudagraphs"), ("fp32", False))


def training_flops_per_sample(config: ModelConfig) -> float:
    """2 x the multiply-adds of every convolution and linear layer in one sample's forward pass,
    times 3 (the backward pass costs about twice the forward)."""
    model, macs = build_model(config), []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(output.numel() * module.in_channels // module.groups * module.weight[0, 0].numel())
        elif isinstance(module, torch.nn.Linear):
            macs.append(output.numel() * module.in_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model({"rgb": torch.zeros(1, 4, 64, 64), "lidar": torch.zeros(1, 4, 64, 64)})
    for hook in hooks:
        hook.remove()
    return 3 * 2 * sum(macs)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs-per-class", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--junit", type=Path, help="a pytest --junitxml file whose outcomes join the table")
    return parser.parse_args(argv)


def test_rows(junit: Path) -> list[tuple[str, str, str]]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        rows.append((f"test {case.get('name')}", f"{outcome} ({float(case.get('time', 0)):.1f} s)", "passed"))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device")
    rows = test_rows(args.junit) if args.junit else []
    with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
        started = time.perf_counter()
        data = arrays.from_folder(synth.generate(Path(tmp) / "data", args.pairs_per_class, seed=42)).tensors()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        n_val = len(data) // 5
        train_data, val_data = data.subset(order[n_val:]), data.subset(order[:n_val])
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: {len(train_data)} train / "
              f"{len(val_data)} val pairs made in {time.perf_counter() - started:.0f} s", flush=True)
        flops = training_flops_per_sample(ADD)
        for precision, compile in VARIANTS:
            compiled = {False: "", True: ", compiled"}.get(compile, f", compiled {compile}")
            label = f"intermediate add, batch {args.batch_size}, {precision}{compiled}"
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device="cuda",
                                 precision=precision, compile=compile)
            began = time.perf_counter()
            result = train(ADD, config, train_data, val_data, Path(tmp) / f"{precision}-{compile}")
            history = result.history
            rate = statistics.mean(row["samples_per_s"] for row in history[1:])
            steady_epoch = statistics.mean(row["epoch_seconds"] for row in history[1:])
            peak = max(row["peak_memory_mb"] for row in history)
            rows.append((f"{label}: samples/s (TFLOP/s)", f"{rate:,.0f} ({rate * flops / 1e12:.1f})",
                         f">= {TARGET:,}" if precision == "bf16" else "-"))
            rows.append((f"{label}: peak GPU MB", f"{peak:,.0f}", "-"))
            rows.append((f"{label}: one-time s (first epoch beyond a steady one)",
                         f"{history[0]['epoch_seconds'] - steady_epoch:.1f}", "-"))
            rows.append((f"{label}: val accuracy, wall s", f"{100 * result.best['val/accuracy']:.2f} %, "
                         f"{time.perf_counter() - began:.0f} s", "-"))
            print(f"  {label}: {rate:,.0f} samples/s, {rate * flops / 1e12:.1f} TFLOP/s, peak {peak:,.0f} MB",
                  flush=True)
    results = Results("bench_gpu")
    print("\n| check | result | target |\n| --- | --- | --- |")
    for check, result, target in rows:
        results.add(check=check, result=result, target=target)
        print(f"| {check} | {result} | {target} |")
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

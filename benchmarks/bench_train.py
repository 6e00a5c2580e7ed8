"""Training throughput: the mm_models engine against the reference-style loop.

Both train on the same generated cubes/spheres data. The engine decodes the files
once into device-resident tensors and runs every model in the table; the
reference-style loop (the course's) decodes PNG + depth -> XYZA per item in a
torch DataLoader with 2 workers, batch 32, float32 NCHW, Adam, on intermediate
fusion (add). Throughput is training samples per second, from the epochs after the
first (which pays one-time start-up costs) when there are several.

Then the four CILP stages (LiDAR classifier, contrastive pre-training, projector,
RGB -> LiDAR classifier) train on the same data, each from the previous stages'
runs, as ``cilp train-cilp`` trains them; their last column is the stage's own
validation figure (accuracy, RGB -> LiDAR top-1 retrieval, or the projector's MSE).

The last line is a ceiling: the model's convolutions alone, each timed forward +
backward at its own shapes, as samples per second. No loop over the same network
and precision can beat it; it tells how much of a step is left to optimise.

    python benchmarks/bench_train.py                        # ~1-3 min on a 2-core CPU
    python benchmarks/bench_train.py --pairs-per-class 1000 --epochs 3 --models add late
    python benchmarks/bench_train.py --image-size 128 128 --beams 128 128 --skip-reference  # other sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_csv import Results  # noqa: E402
from sizes import add_size_arguments, size_variant  # noqa: E402

from cilp_plugin.data import layout, synth  # noqa: E402
from mm_models import ModelConfig, PairTensors, TrainConfig, build_model, train  # noqa: E402
from mm_models.choices import DEVICES, PRECISIONS  # noqa: E402
from mm_models.inference import autocast, resolve_device, resolve_precision  # noqa: E402
from mm_models.metrics import peak_memory_mb, reset_peak_memory  # noqa: E402
from mm_models.stages import PIPELINE, pipeline_parents, pipeline_spec  # noqa: E402

MODELS = {
    "late": ModelConfig(family="late"),
    "concat": ModelConfig(family="intermediate", fusion="concat"),
    "add": ModelConfig(family="intermediate", fusion="add"),
    "mul": ModelConfig(family="intermediate", fusion="mul"),
    "add-strided": ModelConfig(family="intermediate", fusion="add", downsample="strided"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs-per-class", type=int, default=300, help="generated pairs per class (default 300)")
    parser.add_argument("--epochs", type=int, default=2, help="engine epochs per model (default 2)")
    parser.add_argument("--reference-epochs", type=int, default=2, help="reference-loop epochs (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--stages", nargs="*", choices=PIPELINE, default=list(PIPELINE),
                        help="CILP stages to time (default: all four; a stage needs the ones before it)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's models")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--data", type=Path, help="an existing data folder (default: generate one)")
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    args.image_size, args.beams = tuple(args.image_size), tuple(args.beams)
    for name in ("pairs_per_class", "epochs", "reference_epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1")
    return args


def engine_row(name: str, history: list[dict], table: Results) -> float:
    """Print and record the engine's row for one run; return its samples/s."""
    samples_per_s = steady([row["samples_per_s"] for row in history])
    last = history[-1]
    if "val/accuracy" in last:
        score = f"accuracy {100 * last['val/accuracy']:.1f} %"
    elif "val/rgb2lidar_top1" in last:
        score = f"top-1 {100 * last['val/rgb2lidar_top1']:.1f} %"
    else:
        score = f"MSE {last['val/loss']:.4f}"
    epoch_seconds, peak = steady([row["epoch_seconds"] for row in history]), max(r["peak_memory_mb"] for r in history)
    table.add(loop="engine", model=name, params=history[0]["params"], samples_per_s=samples_per_s,
              s_per_epoch=epoch_seconds, peak_memory_mb=peak, val_last_epoch=score)
    print(f"| engine | {name} | {history[0]['params']:,} | {samples_per_s:.1f} | {epoch_seconds:.2f} | "
          f"{peak:.0f} | {score} |", flush=True)
    return samples_per_s


def steady(values: list[float]) -> float:
    """Mean over the epochs after the first, when there are several."""
    return statistics.mean(values[1:] if len(values) > 1 else values)


# --------------------------------------------------------------------------- data


def split_pairs(root: Path, seed: int = 42):
    """The scanned pairs in a seeded 80/20 train/val split."""
    report = layout.scan(root, validate=False).require_usable()
    pairs = report.pairs
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = len(pairs) // 5
    return report, [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]


def to_tensors(report, pairs) -> PairTensors:
    rgb = np.stack([layout.read_rgb(p.rgb_path) for p in pairs])
    xyza = np.stack([layout.depth_to_xyza(layout.read_depth(p.lidar_path), *report.angles(p.label)) for p in pairs])
    labels = np.array([layout.LABELS.index(p.label) for p in pairs])
    return PairTensors.from_numpy(rgb, xyza, labels)


# --------------------------------------------------------------------------- the reference-style loop


class ReferenceDataset(torch.utils.data.Dataset):
    """The course's dataset: every item decoded from disk when it is asked for."""

    def __init__(self, report, pairs):
        self.pairs = pairs
        self.angles = {label: report.angles(label) for label in layout.LABELS}

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        pair = self.pairs[i]
        with Image.open(pair.rgb_path) as image:
            rgb = torch.from_numpy(np.asarray(image.convert("RGBA"), np.float32) / 255).permute(2, 0, 1)
        depth = np.load(pair.lidar_path).astype(np.float32)
        xyza = torch.from_numpy(layout.depth_to_xyza(depth, *self.angles[pair.label]))
        return rgb, xyza, torch.tensor(float(layout.LABELS.index(pair.label)))


def reference_loop(report, pairs, epochs: int, batch_size: int = 32, **sizes) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="intermediate", fusion="add", mask_no_return=False, rgb_input="raw",
                                    **sizes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(ReferenceDataset(report, pairs), batch_size=batch_size,
                                         shuffle=True, num_workers=2)
    seconds = []
    reset_peak_memory(torch.device("cpu"))
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        for rgb, xyza, labels in loader:
            loss = F.binary_cross_entropy_with_logits(model({"rgb": rgb, "lidar": xyza})["logits"], labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return {"samples_per_s": len(pairs) / steady(seconds), "epoch_seconds": steady(seconds),
            "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}


# --------------------------------------------------------------------------- the ceiling


def conv_inputs(model: torch.nn.Module, inputs: dict) -> list[tuple[torch.nn.Conv2d, torch.Size, bool]]:
    """Every Conv2d of ``model`` with its input's shape and whether that input needs a gradient."""
    seen = []
    hooks = [module.register_forward_pre_hook(
        lambda module, args: seen.append((module, args[0].shape, args[0].requires_grad)))
        for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    model(inputs)
    for hook in hooks:
        hook.remove()
    return seen


def conv_ceiling(config: ModelConfig, batch_size: int, device: torch.device, precision: str,
                 repeats: int = 7) -> float:
    """Samples/s if the convolutions (forward + backward, channels_last) were the whole step.

    Convolutions reading the data need no input gradient, as in training.
    """
    model = build_model(config).to(device, memory_format=torch.channels_last)
    batch = {name: torch.rand(batch_size, *shape, device=device).contiguous(memory_format=torch.channels_last)
             for name, shape in config.input_shapes().items()}
    seconds = 0.0
    for conv, shape, needs_grad in conv_inputs(model, batch):
        x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(needs_grad)
        with autocast(device, precision):
            grad = torch.randn_like(conv(x))
        timings = []
        for _ in range(repeats):
            synchronize(device)
            started = time.perf_counter()
            with autocast(device, precision):
                y = conv(x)
            y.backward(grad)
            synchronize(device)
            timings.append(time.perf_counter() - started)
        seconds += statistics.median(timings[1:])
    return batch_size / seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        tmp = Path(tmp)
        root = args.data
        if root is None:
            started = time.perf_counter()
            root = synth.generate(tmp / "data", args.pairs_per_class, seed=42, image_size=args.image_size,
                                  beams=args.beams)
            print(f"generated {2 * args.pairs_per_class} pairs in {time.perf_counter() - started:.1f} s")
        report, train_pairs, val_pairs = split_pairs(root)
        sizes = dict(image_size=report.image_size, beams=report.beams)
        models = {name: dataclasses.replace(config, **sizes) for name, config in MODELS.items()}
        started = time.perf_counter()
        train_data, val_data = to_tensors(report, train_pairs), to_tensors(report, val_pairs)
        print(f"decoded {len(train_data)} train + {len(val_data)} val pairs once in "
              f"{time.perf_counter() - started:.1f} s; device {device}, precision {precision}, "
              f"batch {args.batch_size}, {torch.get_num_threads()} threads; images {sizes['image_size']}, "
              f"beams {sizes['beams']}")

        memory = "GPU MB" if device.type == "cuda" else "RSS MB"
        print(f"\n| loop | model | params | samples/s | s/epoch | peak {memory} | val (last epoch) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                             precision=args.precision, compile=args.compile)
        table, results = Results("bench_train", precision, size_variant(**sizes)), {}
        for name in args.models:
            run = train(models[name], config, train_data, val_data, tmp / "runs" / name)
            results[name] = engine_row(name, run.history, table)
        for stage in args.stages:
            missing = [p for p in pipeline_parents(stage) if p not in args.stages]
            if missing:
                raise SystemExit(f"--stages: {stage} is built from {', '.join(missing)}; time those too")
            spec = pipeline_spec(stage, {role: tmp / "runs" / role for role in pipeline_parents(stage)}, **sizes)
            run = train(spec, config, train_data, val_data, tmp / "runs" / stage)
            results[stage] = engine_row(stage, run.history, table)
        if not args.skip_reference:
            reference = reference_loop(report, train_pairs, args.reference_epochs, **sizes)
            params = sum(p.numel() for p in build_model(models["add"]).parameters())
            table.add(loop="reference (DataLoader x2, fp32)", model="add", params=params,
                      samples_per_s=reference["samples_per_s"], s_per_epoch=reference["epoch_seconds"],
                      peak_memory_mb=reference["peak_memory_mb"], val_last_epoch="")
            print(f"| reference (DataLoader x2, fp32) | add | {params:,} | "
                  f"{reference['samples_per_s']:.1f} | {reference['epoch_seconds']:.2f} | "
                  f"{reference['peak_memory_mb']:.0f} | - |")
            if "add" in results:
                print(f"\nengine / reference on intermediate add: {results['add'] / reference['samples_per_s']:.2f}x "
                      f"(target >= 2.5x)")
        ceiling = conv_ceiling(models["add"], args.batch_size, device, precision)
        table.add(loop="ceiling (convolutions alone)", model="add", params="", samples_per_s=ceiling, s_per_epoch="",
                  peak_memory_mb="", val_last_epoch="")
        print(f"ceiling for intermediate add (its convolutions alone, {precision}, batch {args.batch_size}): "
              f"{ceiling:.1f} samples/s" + (f" = {ceiling / reference['samples_per_s']:.2f}x the reference"
                                             if not args.skip_reference else ""))
        print(table)


if __name__ == "__main__":
    main()

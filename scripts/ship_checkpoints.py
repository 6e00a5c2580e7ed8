"""Train every demo model with the strongest preset at hand and write the shipped checkpoints.

    python scripts/ship_checkpoints.py                          # data/synthetic (made if missing) -> checkpoints/
    python scripts/ship_checkpoints.py --preset cpu --epochs 1 --out /tmp/checkpoints   # a quick try

The data is the demo's: the generator's default scenes, 1,000 pairs per class,
seed 42, split by the reference protocol (seed 42, 20 % val), as ``make demo``
cuts it. The models are the demo's: the fusion suite (late, intermediate
concat / add / mul, add with strided downsampling) and the four CILP stages,
each built from the previous ones. Every best run is exported with
:func:`mm_models.shipping.export_run` (8-bit / half-precision weights, the
shipped weights' val metrics re-measured on the CPU). Needs no FiftyOne.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cilp_plugin.cli import SUITES  # noqa: E402
from cilp_plugin.data import layout, synth  # noqa: E402
from cilp_plugin.dataset import arrays  # noqa: E402
from cilp_plugin.dataset.splits import make_split  # noqa: E402
from mm_models import ModelConfig, train  # noqa: E402
from mm_models.choices import DEVICES, PRECISIONS, PRESET_CHOICES  # noqa: E402
from mm_models.engine import describe_metrics  # noqa: E402
from mm_models.inference import resolve_device, resolve_precision  # noqa: E402
from mm_models.presets import resolve_preset, train_config  # noqa: E402
from mm_models.shipping import export_run  # noqa: E402
from mm_models.stages import KINDS, PIPELINE, default_run_name, pipeline_parents, pipeline_spec  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--n-per-class", type=int, default=1000, help="pairs per class when generating (1000)")
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--val", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--runs-dir", type=Path, help="where the full runs go (default: a temporary folder)")
    parser.add_argument("--preset", default="auto", choices=PRESET_CHOICES)
    parser.add_argument("--epochs", type=int, help="override every model's epochs (for a quick try)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    return parser.parse_args(argv)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.data.exists():
        synth.generate(args.data, args.n_per_class, seed=args.data_seed)
    pair_ids = [pair.pair_id for pair in layout.scan(args.data).require_usable().pairs]
    split = make_split(pair_ids, val=args.val, seed=args.split_seed)
    train_data = arrays.from_folder(args.data, split.train).tensors()
    val_data = arrays.from_folder(args.data, split.val).tensors()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    preset_name = resolve_preset(args.preset, device.type)
    print(f"{len(train_data)} train / {len(val_data)} val pairs from {args.data}; {device_name(device)}, "
          f"{precision}, preset {preset_name}", flush=True)

    def config(model: str):
        return train_config(model, preset_name, epochs=args.epochs, device=args.device, precision=args.precision)

    models = [ModelConfig(family=f, fusion=m, downsample=d) for f, m, d in SUITES["fusion"]]
    about = {"data": {"generator": "cilp_plugin.data.synth (default scenes)", "look": "default", "seed": args.data_seed,
                      "pairs": len(pair_ids), "split_seed": args.split_seed, "val_fraction": args.val,
                      "train_size": len(train_data), "val_size": len(val_data)},
             "preset": preset_name, "device": device_name(device), "precision": precision}
    with tempfile.TemporaryDirectory(prefix="ship_checkpoints.") as tmp:
        runs = (args.runs_dir or Path(tmp)).resolve()
        shipped: dict[str, tuple[str, str]] = {}
        print("\n| model | trained val | shipped val | MB | train s |\n| --- | --- | --- | --- | --- |")
        jobs = [(default_run_name(model), model, "fusion") for model in models]
        jobs += [(stage, None, stage) for stage in PIPELINE]
        for name, model, preset_entry in jobs:
            if model is None:
                model = pipeline_spec(name, {role: runs / role for role in pipeline_parents(name)})
            began = time.perf_counter()
            result = train(model, config(preset_entry), train_data, val_data, runs / name)
            seconds = time.perf_counter() - began
            manifest = export_run(runs / name, args.out / name, val_data, about=about, shipped_parents=shipped)
            shipped[str(runs / name)] = (name, manifest["checkpoint_sha256"])
            size = sum(p.stat().st_size for p in (args.out / name).iterdir()) / 1e6
            objective = KINDS[result.spec.kind].objective
            print(f"| {name} | {describe_metrics(result.best, objective)} | "
                  f"{describe_metrics(manifest['shipped']['val'], objective)} | {size:.1f} | {seconds:.0f} |",
                  flush=True)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 1e6
    print(f"\n{len(jobs)} checkpoints, {total:.1f} MB in {args.out}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

"""Shipped checkpoints: finished runs made small enough for git, their val metrics re-measured.

    from mm_models.shipping import export_run
    export_run("runs/lidar", "checkpoints/lidar", val_data, about={"preset": "gpu", ...})

The weights are :func:`~mm_models.checkpoint.compact` (large matrices in 8 bits,
the rest in half precision); :func:`~mm_models.load_run` reads them back as
float32. The shipped manifest is the run's with the new checksum, each parent
named by its shipped name with its shipped checksum (parents are exported
first), and ``shipped``: what the caller says of the data and the training, plus
the shipped weights' own val metrics, measured on the CPU in fp32.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import PairTensors
from .engine import evaluate
from .stages import load_run, objective_for


def export_run(run_dir: Path | str, out_dir: Path | str, val_data: PairTensors, *, about: dict,
               shipped_parents: dict[str, tuple[str, str]] | None = None) -> dict:
    """Write the finished run ``run_dir`` to ``out_dir``; returns the shipped manifest.

    ``shipped_parents`` maps each parent's run folder to its (shipped name, shipped sha256).
    """
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir)
    run = load_run(run_dir)
    if run.manifest.get("status") != "finished":
        raise ValueError(f"{run_dir}: only a finished run can be shipped (status {run.manifest.get('status')!r})")
    spec = relink(run.spec.to_dict(), shipped_parents or {}, run_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ckpt.save_weights(run.model, out_dir / ckpt.WEIGHTS, spec, small=True)
    manifest = {**run.manifest, "spec": spec, "checkpoint": ckpt.WEIGHTS,
                "checkpoint_sha256": ckpt.file_sha256(out_dir / ckpt.WEIGHTS)}
    ckpt.write_json(out_dir / ckpt.MANIFEST, manifest)

    shipped = load_run(out_dir)  # as a user will load it
    objective = objective_for(shipped.spec, run.manifest["train"]["batch_size"])
    metrics = evaluate(shipped.model, objective, val_data.to("cpu"), batch_size=None, device=torch.device("cpu"),
                       precision="fp32")
    manifest["shipped"] = {**about, "from_run": run_dir.name, "val": {f"val/{k}": v for k, v in metrics.items()}}
    ckpt.write_json(out_dir / ckpt.MANIFEST, manifest)
    for name in (ckpt.METRICS, ckpt.CURVES, *run.manifest.get("pictures", [])):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    return manifest


def relink(spec: dict, shipped_parents: dict[str, tuple[str, str]], run_dir: Path) -> dict:
    """``spec`` with every parent, nested ones too, named by its shipped name and checksum."""
    parents = {}
    for role, parent in spec.get("parents", {}).items():
        folder = str(Path(parent["run"]).resolve())
        if folder not in shipped_parents:
            raise ValueError(f"{run_dir}: its parent '{role}' ({folder}) is not shipped; export it first")
        name, sha256 = shipped_parents[folder]
        parents[role] = {"run": name, "sha256": sha256, "spec": relink(parent["spec"], shipped_parents, run_dir)}
    return {**spec, "parents": parents}

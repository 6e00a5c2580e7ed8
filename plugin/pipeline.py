"""``train-cilp``: the four stages of the cross-modal pipeline as linked runs of one dataset.

    from plugin.pipeline import train_cilp
    results = train_cilp(dataset)                            # lidar, cilp, projector, rgb2lidar
    train_cilp(dataset, stages=["projector", "rgb2lidar"])   # reuses the dataset's lidar and cilp runs

Stage ``s`` is recorded on the dataset as the run ``<run_prefix><s>``. A stage
built from earlier ones (projector: cilp + lidar; rgb2lidar: projector) takes
them from this call or, when not trained now, from the runs recorded on the
dataset; every parent is checked before the first stage starts.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

from .training import check_run_name, find_run, train_on_dataset

#: what each stage is built from: stage -> {parent role: stage}
PARENTS = {"lidar": {}, "cilp": {}, "projector": {"cilp": "cilp", "lidar": "lidar"},
           "rgb2lidar": {"projector": "projector"}}


def parse_stages(stages) -> list[str]:
    """Stages from a list or a comma-separated string, in pipeline order."""
    from mm_models.presets import STAGES

    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stages = list(stages or [])
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"stages: expected some of {', '.join(STAGES)}, got {', '.join(map(str, stages)) or 'none'}")
    return [s for s in STAGES if s in stages]


def stage_spec(stage: str, parents: dict[str, Path]):
    """The model spec of ``stage`` built from the parent run folders ``parents`` (role -> folder)."""
    from mm_models import CILPConfig, ModelConfig, ModelSpec, ProjectorConfig, RGBToLiDARConfig, parent

    kind, config = {"lidar": ("classifier", ModelConfig(family="lidar")), "cilp": ("cilp", CILPConfig()),
                    "projector": ("projector", ProjectorConfig()),
                    "rgb2lidar": ("rgb2lidar", RGBToLiDARConfig())}[stage]
    return ModelSpec(kind, config, {role: parent(folder, role) for role, folder in parents.items()})


def train_cilp(
    dataset: fo.Dataset, *, stages=("lidar", "cilp", "projector", "rgb2lidar"), epochs: int | dict | None = None,
    batch_size: int | None = None, preset: str = "auto", device: str = "auto", precision: str = "auto", seed: int = 42, wandb: bool = False,
    run_prefix: str = "", train_tag: str = "train", val_tag: str = "val", runs_dir: Path | str | None = None,
    overwrite: bool = False, resume: bool = False, progress=None,
) -> dict:
    """Train ``stages`` (in pipeline order); returns stage -> the engine's ``TrainResult``.

    ``epochs`` overrides the preset's (one number for every stage, or stage ->
    epochs), ``batch_size`` its batch size (every stage). Progress is labelled ``stage 2/4 cilp: epoch 3/10: ...``.
    """
    from mm_models import TrainConfig
    from mm_models.engine import resolve_device
    from mm_models.presets import preset_for

    stages = parse_stages(stages)
    names = {stage: check_run_name(f"{run_prefix}{stage}") for stage in PARENTS}
    settings = preset_for(preset, resolve_device(device).type)
    epochs = epochs if isinstance(epochs, dict) else {stage: epochs for stage in stages if epochs is not None}
    configs = {stage: TrainConfig(epochs=epochs.get(stage) or settings[stage].epochs, lr=settings[stage].lr,
                                  batch_size=batch_size or settings[stage].batch_size, device=device, precision=precision,
                                  seed=seed, wandb=wandb)
               for stage in stages}  # validates every number before anything trains
    for stage in stages:  # every parent exists before the first stage starts
        for role, parent_stage in PARENTS[stage].items():
            if parent_stage not in stages:
                _recorded(dataset, names[parent_stage], stage, role)

    say = progress or (lambda fraction, label: None)
    runs: dict[str, Path] = {}
    results = {}
    for i, stage in enumerate(stages):
        parents = {role: runs.get(parent_stage) or _recorded(dataset, names[parent_stage], stage, role)
                   for role, parent_stage in PARENTS[stage].items()}
        label = f"stage {i + 1}/{len(stages)} {stage}"
        result = train_on_dataset(
            dataset, stage_spec(stage, parents), configs[stage], train_tag=train_tag, val_tag=val_tag,
            runs_dir=runs_dir, name=names[stage], overwrite=overwrite, resume=resume,
            progress=lambda fraction, text, i=i, label=label: say((i + fraction) / len(stages), f"{label}: {text}"))
        runs[stage] = result.run_dir
        results[stage] = result
    return results


def _recorded(dataset: fo.Dataset, name: str, stage: str, role: str) -> Path:
    try:
        return find_run(dataset, name)
    except ValueError:
        raise ValueError(f"stage '{stage}' is built from the '{role}' run '{name}', which dataset "
                         f"'{dataset.name}' does not have: train it first (--stages {role},{stage})") from None

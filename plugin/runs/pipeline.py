"""``train-cilp``: the four stages of the cross-modal pipeline as linked runs of one dataset.

    from cilp_plugin.runs.pipeline import train_cilp
    results = train_cilp(dataset)                            # lidar, cilp, projector, rgb2lidar
    train_cilp(dataset, stages=["projector", "rgb2lidar"])   # reuses the dataset's lidar and cilp runs

With ``lidar_from`` the ``lidar`` stage is the assessment's pretrained LiDAR classifier
(``lidar_cnn.pt``), imported instead of trained. Stage ``s`` is recorded on the dataset
as the run ``<run_prefix><s>``. A stage
built from earlier ones (projector: cilp + lidar; rgb2lidar: projector) takes
them from this call or, when not trained now, from the runs recorded on the
dataset; every parent is checked before the first stage starts.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

from .registry import check_run_name, recorded_runs
from .training import import_on_dataset, train_on_dataset


def parse_stages(stages) -> list[str]:
    """Stages from a list or a comma-separated string, in pipeline order."""
    from mm_models.stages import PIPELINE

    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stages = list(stages or [])
    unknown = [s for s in stages if s not in PIPELINE]
    if unknown or not stages:
        raise ValueError(f"stages: expected some of {', '.join(PIPELINE)}, got {', '.join(map(str, stages)) or 'none'}")
    return [s for s in PIPELINE if s in stages]


def train_cilp(
    dataset: fo.Dataset, *, stages=("lidar", "cilp", "projector", "rgb2lidar"), epochs: int | dict | None = None,
    batch_size: int | None = None, preset: str = "auto", device: str = "auto", precision: str = "auto",
    seed: int = 42, wandb: bool = False, data: str = "auto", lidar_tower: str = "locked", run_prefix: str = "",
    train_tag: str = "train", val_tag: str = "val", runs_dir: Path | str | None = None, overwrite: bool = False,
    resume: bool = False, lidar_from: Path | str | None = None, progress=None,
) -> dict:
    """Train ``stages`` (in pipeline order); returns stage -> the engine's ``TrainResult``.

    ``epochs`` overrides the preset's (one number for every stage, or stage ->
    epochs), ``batch_size`` its batch size (every stage); ``data`` where the pairs live
    (``TrainConfig.data``: auto, resident, streamed). ``lidar_tower`` is CILP's
    LiDAR encoder: ``locked`` (the lidar stage's classifier, frozen; CILP is then built
    from it) or ``trained`` (the reference's). Progress is labelled
    ``stage 2/4: cilp: epoch 3/10: ...``. ``lidar_from`` (a ``lidar_cnn.pt``) makes the ``lidar``
    stage an import of the assessment's pretrained classifier.
    """
    from mm_models.presets import train_config
    from mm_models.stages import PIPELINE, pipeline_parents, pipeline_spec

    parents_of = {stage: pipeline_parents(stage, lidar_tower) for stage in PIPELINE}  # checks lidar_tower
    stages = parse_stages(stages)
    if lidar_from is not None:
        if "lidar" not in stages:
            raise ValueError("lidar_from: it replaces the lidar stage; include lidar in the stages")
        from mm_models.assessment import load_lidar_cnn

        load_lidar_cnn(lidar_from)  # a wrong file is refused before any stage trains
    names = {stage: check_run_name(f"{run_prefix}{stage}") for stage in PIPELINE}
    if isinstance(epochs, dict):
        unknown = sorted(map(str, set(epochs) - set(PIPELINE)))
        if unknown:
            raise ValueError(f"epochs: unknown stages {', '.join(unknown)}; expected some of {', '.join(PIPELINE)}")
    else:
        epochs = {stage: epochs for stage in stages} if epochs is not None else {}
    trained = [s for s in stages if not (s == "lidar" and lidar_from is not None)]
    configs = {stage: train_config(stage, preset, epochs=epochs.get(stage), batch_size=batch_size, device=device,
                                   precision=precision, seed=seed, wandb=wandb, data=data)
               for stage in trained}  # validates every number before anything trains
    recorded: dict[str, Path] = {}  # parents not trained now: finished runs of the right kind, checked up front
    for stage in stages:
        for role in parents_of[stage]:
            if role not in stages:
                recorded[role] = _recorded(dataset, names[role], stage, role, lidar_tower)
        if parents_of[stage] and all(role in recorded for role in parents_of[stage]):
            try:  # fine alone, they must also fit together (e.g. the projector's input sizes)
                pipeline_spec(stage, {role: recorded[role] for role in parents_of[stage]}, lidar_tower)
            except ValueError as exc:
                runs = ", ".join(f"'{names[role]}'" for role in parents_of[stage])
                raise ValueError(f"stage '{stage}': the runs {runs} cannot be combined: {exc}") from None

    say = progress or (lambda fraction, label: None)
    runs: dict[str, Path] = {}
    results = {}
    for i, stage in enumerate(stages):
        parents = {role: runs.get(role) or recorded[role] for role in parents_of[stage]}
        label = f"stage {i + 1}/{len(stages)}"  # the run's own labels start with its name

        def report(fraction: float, text: str, i=i, label=label) -> None:
            say((i + fraction) / len(stages), f"{label}: {text}")

        if stage not in configs:
            result = import_on_dataset(dataset, lidar_from, val_tag=val_tag, runs_dir=runs_dir, name=names[stage],
                                       overwrite=overwrite, progress=report)
        else:
            result = train_on_dataset(
                dataset, pipeline_spec(stage, parents, lidar_tower), configs[stage], train_tag=train_tag,
                val_tag=val_tag, runs_dir=runs_dir, name=names[stage], overwrite=overwrite, resume=resume,
                progress=report)
        runs[stage] = result.run_dir
        results[stage] = result
    return results


def _recorded(dataset: fo.Dataset, name: str, stage: str, role: str, lidar_tower: str) -> Path:
    """The folder of the run ``name`` recorded on the dataset (never a folder of the working directory
    that shares its name), checked to be a finished run that the ``role`` of ``stage`` accepts."""
    from mm_models import parent
    from mm_models.stages import KINDS, pipeline_model

    folder = recorded_runs(dataset).get(name)
    if folder is None:
        raise ValueError(f"stage '{stage}' is built from the '{role}' run '{name}', which dataset "
                         f"'{dataset.name}' does not have: train it first (--stages {role},{stage})")
    try:
        found = parent(folder, role)  # finished, its checkpoint as its manifest says
        kind, config = pipeline_model(stage, lidar_tower)
        KINDS[kind].parents(config)[role](role, found.spec)
    except ValueError as exc:
        raise ValueError(f"stage '{stage}': the '{role}' run '{name}' of dataset '{dataset.name}' "
                         f"cannot be used: {exc}") from None
    return Path(folder)

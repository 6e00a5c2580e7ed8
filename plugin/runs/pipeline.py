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

from mm_models.choices import PIPELINE

from ..dataset.views import dataset_classes, dataset_sizes
from .registry import check_run_name, recorded_runs
from .request import CILPRequest
from .training import import_on_dataset, train_on_dataset


def train_cilp(dataset: fo.Dataset, request: CILPRequest | None = None, *, progress=None, **options) -> dict:
    """Train the request's stages (in pipeline order); returns stage -> the engine's ``TrainResult``.

    ``request`` (a :class:`~cilp_plugin.runs.request.CILPRequest`) or its options as keywords
    (``stages=["projector", "rgb2lidar"], epochs=4``): ``epochs`` overrides the preset's (one
    number for every stage, or stage -> epochs), ``batch_size`` its batch size; ``lidar_tower`` is
    CILP's LiDAR encoder, ``locked`` (the lidar stage's classifier, frozen; CILP is then built from
    it) or ``trained`` (the reference's); ``lidar_from`` (a ``lidar_cnn.pt``) makes the ``lidar``
    stage an import of the assessment's pretrained classifier. Progress is labelled
    ``stage 2/4: cilp: epoch 3/10: ...``.
    """
    from mm_models.presets import train_config
    from mm_models.stages import pipeline_parents, pipeline_spec

    if request is None:
        request = CILPRequest(**options)
    elif options:
        raise ValueError(f"train_cilp: give a request or options, not both ({', '.join(sorted(options))})")
    lidar_tower, stages = request.lidar_tower, request.stages
    num_classes, sizes = len(dataset_classes(dataset)), dataset_sizes(dataset)
    parents_of = {stage: pipeline_parents(stage, lidar_tower) for stage in PIPELINE}  # checks lidar_tower
    if request.lidar_from is not None:
        from mm_models.assessment import load_lidar_cnn

        load_lidar_cnn(request.lidar_from)  # a wrong file is refused before any stage trains
        if num_classes != 2:
            raise ValueError(f"lidar_from: the assessment's LiDAR classifier tells cube from sphere, "
                             f"dataset '{dataset.name}' has {num_classes} classes; train the lidar stage instead")
    names = {stage: check_run_name(f"{request.run_prefix}{stage}") for stage in PIPELINE}
    epochs = request.stage_epochs()
    trained = [s for s in stages if not (s == "lidar" and request.lidar_from is not None)]
    configs = {stage: train_config(stage, request.preset, epochs=epochs.get(stage), batch_size=request.batch_size,
                                   device=request.device, precision=request.precision, seed=request.seed,
                                   wandb=request.wandb, data=request.data)
               for stage in trained}  # validates every number before anything trains
    recorded: dict[str, Path] = {}  # parents not trained now: finished runs of the right kind, checked up front
    for stage in stages:
        for role in parents_of[stage]:
            if role not in stages:
                recorded[role] = _recorded(dataset, names[role], stage, role, lidar_tower)
        if parents_of[stage] and all(role in recorded for role in parents_of[stage]):
            try:  # fine alone, they must also fit together (e.g. the projector's input sizes)
                pipeline_spec(stage, {role: recorded[role] for role in parents_of[stage]}, lidar_tower,
                              num_classes, **sizes)
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
            result = import_on_dataset(dataset, request.lidar_from, val_tag=request.val_tag,
                                       runs_dir=request.runs_dir, name=names[stage], overwrite=request.overwrite,
                                       progress=report)
        else:
            result = train_on_dataset(
                dataset, pipeline_spec(stage, parents, lidar_tower, num_classes, **sizes), configs[stage],
                train_tag=request.train_tag, val_tag=request.val_tag, runs_dir=request.runs_dir, name=names[stage],
                overwrite=request.overwrite, resume=request.resume, progress=report)
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

"""Train ``mm_models`` on a dataset's split tags; runs are recorded on the dataset.

One run = one folder ``<runs dir>/<dataset slug>/<run name>`` (runs dir:
``CILP_RUNS_DIR``, default ``<FiftyOne dataset dir>/cilp/runs``, never the working
directory; run name: the model's unless one is given), so datasets never share a run.
A run trains in ``.partial/<run name>`` beside it and replaces the run folder only
when it finished: a failed, interrupted or killed run leaves the previous one as it
was, and ``resume`` continues the interrupted one. Finished runs are recorded in
FiftyOne's run registry of the dataset (:mod:`cilp_plugin.runs.registry`), where operators
and ``apply`` find them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import fiftyone as fo

from ..dataset import arrays
from .registry import check_own_run_name, check_run_name, dataset_runs_dir, record_run

#: the folder, beside the finished runs, where runs train until they finish
PARTIAL = ".partial"


def train_on_dataset(
    dataset: fo.Dataset, model, train_config, *, train_tag: str = "train", val_tag: str = "val",
    runs_dir: Path | str | None = None, name: str | None = None, overwrite: bool = False,
    resume: bool = False, progress=None,
):
    """Train ``model`` (a ``ModelConfig`` or a ``ModelSpec``) on the pairs tagged
    ``train_tag``, select the checkpoint on ``val_tag``. A ``ModelConfig`` is fitted to the dataset
    (:func:`for_data`: its classes and sizes); a spec must fit it already.

    An existing run of that name is replaced only with ``overwrite`` and only once the
    new run finished; ``resume`` continues an interrupted run (or trains a finished one
    further, up to ``train_config.epochs``). Returns the engine's ``TrainResult``.
    Under ``torchrun`` every process calls this and trains; rank 0 alone writes the run
    and records it, and no process returns before it did.
    """
    from mm_models import distributed, train
    from mm_models.stages import default_run_name

    name = check_run_name(name or default_run_name(model))
    if overwrite and resume:
        raise ValueError("overwrite and resume: choose one (resume continues a run, overwrite starts it over)")
    final, partial = _run_folders(dataset, runs_dir, name)
    say = progress or (lambda fraction, label: None)
    say(0.0, f"{name}: loading the '{train_tag}' and '{val_tag}' pairs")
    train_arrays = arrays.from_dataset(dataset, train_tag)
    val_arrays = arrays.from_dataset(dataset, val_tag)
    model = for_data(model, train_arrays, dataset.name)
    overlap = set(train_arrays.pair_ids) & set(val_arrays.pair_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} pairs are tagged both '{train_tag}' and '{val_tag}', "
                         f"e.g. {sorted(overlap)[0]}")
    with ExitStack() as held:
        def claim() -> None:
            held.enter_context(_training_lock(partial))
            _prepare(partial, final, overwrite=overwrite, resume=resume)

        # under torchrun rank 0 alone owns the folders and the record; the others wait for each step
        distributed.setup()
        distributed.on_main(claim)
        result = train(
            model, train_config, train_arrays.tensors(), val_arrays.tensors(), partial,
            data_fingerprint=f"{train_arrays.fingerprint}/{val_arrays.fingerprint}", resume=resume,
            progress=lambda fraction, label: say(fraction, f"{name}: {label}"),
            class_names=train_arrays.classes if model_classes(model) else None,
        )
        distributed.on_main(lambda: _swap_in(partial, final))
    distributed.on_main(lambda: record_run(dataset, name, final, result.manifest))
    return dataclasses.replace(result, run_dir=final)


def model_classes(model) -> int | None:
    """The classes ``model`` (a ``ModelConfig`` or a ``ModelSpec``) tells apart; None for a model that
    does not classify."""
    from mm_models.stages import ModelSpec

    return (model if isinstance(model, ModelSpec) else ModelSpec.of(model)).num_classes


def for_data(model, data: arrays.PairArrays, dataset_name: str):
    """``model`` for the pairs ``data``: a ``ModelConfig`` gets the count of their classes as its
    ``num_classes``, and their image size and beams; a spec of a classifier of another count is refused
    (one of other sizes, by the engine)."""
    from mm_models import ModelConfig

    classes = data.classes
    if isinstance(model, ModelConfig):
        return dataclasses.replace(model, num_classes=len(classes), image_size=data.rgb.shape[1:3],
                                   beams=data.lidar.shape[2:4])
    found = model_classes(model)
    if found is not None and found != len(classes):
        raise ValueError(f"model: it tells {found} classes apart, dataset '{dataset_name}' has {len(classes)} "
                         f"({', '.join(classes)}); num_classes must be {len(classes)}")
    return model


def import_on_dataset(
    dataset: fo.Dataset, path: Path | str, *, val_tag: str = "val", runs_dir: Path | str | None = None,
    name: str = "lidar", overwrite: bool = False, progress=None,
):
    """Import the assessment's pretrained LiDAR classifier (``lidar_cnn.pt`` at ``path``) as the
    finished run ``name``, measured on the pairs tagged ``val_tag`` and recorded like a trained run."""
    from mm_models import distributed
    from mm_models.assessment import import_run, load_lidar_cnn

    load_lidar_cnn(path)  # a wrong file is refused before anything is written
    final, partial = _run_folders(dataset, runs_dir, check_run_name(name))
    (progress or (lambda fraction, label: None))(0.0, f"{name}: importing {path}")
    val_arrays = arrays.from_dataset(dataset, val_tag)

    def make_run():  # under torchrun rank 0 alone writes and records it
        with _training_lock(partial):
            _prepare(partial, final, overwrite=overwrite, resume=False)
            result = import_run(path, val_arrays.tensors(), partial, data_fingerprint=val_arrays.fingerprint)
            _swap_in(partial, final)
        record_run(dataset, name, final, result.manifest)
        return dataclasses.replace(result, run_dir=final)

    return distributed.on_main(make_run)


def _run_folders(dataset: fo.Dataset, runs_dir: Path | str | None, name: str) -> tuple[Path, Path]:
    """The folder of the run ``name`` and the one it is made in until it finished."""
    check_own_run_name(dataset, name)
    final = dataset_runs_dir(dataset, runs_dir) / name
    return final, final.parent / PARTIAL / name


def _prepare(partial: Path, final: Path, *, overwrite: bool, resume: bool) -> None:
    """Make ``partial`` the folder the run trains in; nothing else is touched."""
    from mm_models.checkpoint import STATE

    if resume:
        if partial.is_dir() and not (partial / STATE).is_file():  # stopped in its first epoch: start over
            shutil.rmtree(partial)
        if not partial.is_dir() and final.is_dir():  # a finished run, trained further
            shutil.copytree(final, partial)
        return
    if not overwrite and partial.is_dir():
        raise ValueError(f"run '{final.name}' was interrupted ({partial}): pass resume (--resume) to "
                         f"continue it, or overwrite (--overwrite) to start over")
    if not overwrite and final.is_dir():
        raise ValueError(f"run '{final.name}' exists ({final}): pass overwrite (--overwrite) to replace it "
                         f"once the new run finishes, or resume (--resume) to train it further")
    if partial.is_dir():
        shutil.rmtree(partial)


def _swap_in(partial: Path, final: Path) -> None:
    """Move the finished run in ``partial`` onto ``final``, the run it replaces aside first."""
    replaced = final.parent / PARTIAL / f"{final.name}.replaced-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(replaced)
    partial.rename(final)
    shutil.rmtree(replaced, ignore_errors=True)


@contextmanager
def _training_lock(partial: Path):
    """Hold ``partial``'s lock while a run trains there (the system drops it if the process dies)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial.with_name(f"{partial.name}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"run '{partial.name}' is being trained by another process ({partial})") from None
        yield

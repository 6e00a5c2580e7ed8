"""The training loop: one run of one model on device-resident tensors, for every objective.

    from mm_models import ModelConfig, TrainConfig, PairTensors, train, load_run, predict

    train_data = PairTensors.from_numpy(rgb, xyza, labels)        # (N,64,64,4) u8, (N,4,64,64) f32
    result = train(ModelConfig(family="intermediate", fusion="add"), TrainConfig(epochs=10),
                   train_data, val_data, "runs/add")
    run = load_run("runs/add")                                    # best-val-loss weights
    out = predict(run, val_data)                                  # logits, probabilities, embeddings

What is trained is a :class:`~mm_models.stages.ModelSpec` (a ``ModelConfig`` is the
spec of a classifier); the spec's kind supplies the objective (loss, metrics, the
metric that selects the checkpoint), so the loop below never asks what it trains.
A stage built from parent runs starts from their weights, trains only its
unfrozen parameters, and records its validation metrics before training
(``manifest["initial"]``).

The device and precision are chosen as for inference (:mod:`mm_models.inference`),
with fp32 weights and an fp32 loss under bf16 autocast. The data moves to the device
once or, where it does not fit (``TrainConfig.data``, see
:func:`mm_models.placement.placement`), stays on the host
(memory-mapped from its cache) and streams to the device a batch at a time, the same
batches; the model runs channels_last; the learning rate follows a linear warm-up
then a cosine decay, set every step. After every epoch the run folder gets the
best-val-loss weights (when they improved), the resume state, ``metrics.csv`` and the
manifest, each written atomically.

Under ``torchrun`` (:mod:`mm_models.distributed`) every process runs this loop, the
model under DistributedDataParallel: ``batch_size`` is the global batch, each process
trains on its contiguous share of every batch of the same seeded order, and each
share's loss is weighted so that the averaged gradient is the one-process gradient
(the contrastive loss gathers every process's embeddings: its negatives are the
global batch). Validation is shared out and gathered; rank 0 alone writes the run
folder, and every process returns its run. The result matches one process with the
same batch to float rounding, except for batch norms on CPUs (not synchronised) and
augmentation (each process draws its own).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from . import distributed
from .augment import make_augmentation
from .choices import (
    AUGMENTATIONS,
    CLASS_NAMES,
    COMPILE_MODES,
    DATA_MODES,
    DEVICES,
    PRECISIONS,
    check_choice,
    config_from_dict,
)
from .data import PairTensors
from .factory import count_parameters
from .inference import Progress, autocast, concat_outputs, infer, resolve_device, resolve_precision
from .inputs import fit_standardizers
from .losses import Objective, Outputs
from .metrics import peak_memory_mb, reset_peak_memory
from .placement import placement
from .stages import KINDS, ModelSpec, build, check_parents_unchanged, objective_for, spec_of
from .tracking import NullTracker, make_tracker, plot_curves, require_wandb, write_metrics_csv

#: seconds between progress reports within an epoch (their labels hold ": batch ", see is_batch_update)
REPORT_SECONDS = 1.0


def is_batch_update(label: str) -> bool:
    """Whether a progress label reports a batch within an epoch (the others end an epoch)."""
    return ": batch " in label


@dataclass(frozen=True)
class TrainConfig:
    """How to train; round-trips through a plain dict (stored in the manifest)."""

    epochs: int = 10  # passes over the training split
    lr: float = 1e-3  # peak learning rate
    batch_size: int = 32
    weight_decay: float = 0.0  # AdamW's decoupled weight decay; 0 gives Adam (the reference)
    warmup_epochs: float = 0.5  # linear warm-up from 0, then cosine decay
    min_lr_ratio: float = 0.01  # the learning rate at the last step, as a fraction of lr
    seed: int = 42  # model initialisation and batch order
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16 autocast
    compile: bool | str = False  # torch.compile the model (worth it on CUDA): True or a mode (COMPILE_MODES)
    patience: int = 0  # stop after this many epochs without a better selection metric; 0 = never
    augment: str = "none"  # none | rgb-affine: training-time augmentation (mm_models.augment)
    eval_batch_size: int | None = None  # None: the device's (mm_models.inference.inference_batch_size)
    wandb: bool = False  # track the run with wandb (offline unless WANDB_API_KEY is set)
    wandb_project: str = "cilp-multimodal"
    logged_predictions: int = 32  # val samples in the wandb predictions table
    preset: str = ""  # the preset (mm_models.presets) these settings came from, for the record; "" = by hand
    data: str = "auto"  # auto | resident | streamed: where the pairs live while training (mm_models.data.placement)

    def __post_init__(self):
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("augment", self.augment, AUGMENTATIONS)
        check_choice("data", self.data, DATA_MODES)
        if not isinstance(self.compile, bool):
            check_choice("compile", self.compile, COMPILE_MODES)
        for name, low in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("patience", 0),
                          ("logged_predictions", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is None and name == "eval_batch_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("warmup_epochs", 0.0, math.inf), ("min_lr_ratio", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high or math.isnan(value):
                raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
        if self.lr == 0:
            raise ValueError("lr: expected a positive learning rate, got 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return config_from_dict(cls, data, "train config")


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module  # with the best weights, in eval mode
    manifest: dict
    history: list[dict]  # one metrics row per epoch

    @property
    def best(self) -> dict:
        return self.manifest["best"]

    @property
    def spec(self) -> ModelSpec:
        return spec_of(self.manifest, self.run_dir)

    def summary(self) -> str:
        """``cilp: best epoch 10, val loss 0.2130, rgb2lidar_top1 80.00%, ...`` and, for a stage built
        from parents, the same before training."""
        objective = KINDS[self.spec.kind].objective
        imported = self.manifest.get("imported")
        made = f"imported from {imported['from']}" if imported else f"best epoch {self.best['epoch']}"
        text = f"{self.run_dir.name}: {made}, {describe_metrics(self.best, objective)}"
        if self.manifest.get("initial"):
            text += f" (before training: {describe_metrics(self.manifest['initial'], objective)})"
        return text


# --------------------------------------------------------------------------- the run


def train(
    model: ModelSpec | object,
    train_config: TrainConfig,
    train_data: PairTensors,
    val_data: PairTensors,
    run_dir: Path | str,
    *,
    data_fingerprint: str = "",
    resume: bool = False,
    progress: Progress | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> TrainResult:
    """Train the model ``model`` describes (a :class:`ModelSpec`, or a ``ModelConfig`` /
    ``CILPConfig``) into ``run_dir`` (one folder per run); see the module docstring.

    With ``resume`` an interrupted run in ``run_dir`` continues after its last
    finished epoch (weights, optimizer, LR step and metric history restored);
    ``train_config.epochs`` may be raised to train further. ``progress(fraction,
    label)`` is called after every epoch (by rank 0 alone under ``torchrun``). A classifier's
    ``class_names`` (label index -> name, default cube, sphere for two classes) go into the
    manifest. Bad arguments raise ``ValueError`` before anything is written.
    """
    config = train_config
    distributed.setup()
    main = distributed.is_main()
    progress = progress if main else None
    spec = model if isinstance(model, ModelSpec) else ModelSpec.of(model)
    objective = check_arguments(spec, config, train_data, val_data)
    class_names = check_class_names(spec, class_names)
    device = resolve_device(config.device)
    precision = distributed.broadcast_object(resolve_precision(config.precision, device))
    data_mode, data_note = placement(config.data, device, train_data, val_data)
    run_dir = Path(run_dir).resolve()
    distributed.on_main(lambda: _check_run_dir(run_dir, resume))  # only rank 0 looks at the run folder
    if config.wandb:
        distributed.on_main(require_wandb)

    # the model, from the parents' weights (or the interrupted run's), its optimizer and schedule
    model, saved, fitted, drop_last = prepare_model(spec, objective, config, train_data, val_data, device,
                                                    run_dir=run_dir, resume=resume, data_fingerprint=data_fingerprint)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = len(train_data) // config.batch_size if drop_last else \
        math.ceil(len(train_data) / config.batch_size)
    samples_per_epoch = steps_per_epoch * config.batch_size if drop_last else len(train_data)
    schedule = lr_schedule(config, steps_per_epoch)
    loop = LoopState.fresh(objective) if saved is None else LoopState.restore(saved, model, optimizer)

    # the run folder and its manifest (rank 0 alone writes files)
    manifest = new_manifest(spec, objective, config, train_data, val_data, model, data_fingerprint, fitted,
                            device, precision, {"mode": data_mode, "note": data_note}, loop, saved)
    if class_names is not None:
        manifest["class_names"] = list(class_names)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
    tracker = NullTracker()
    title = f"{run_dir.name}: {spec.describe()}"
    try:
        if main:
            tracker = make_tracker(config.wandb, run_dir, run_dir.name,
                                   {"spec": spec.to_dict(), "train": config.to_dict(),
                                    "params": manifest["params"], "data_fingerprint": data_fingerprint},
                                   config.wandb_project)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if progress and data_mode == "streamed":  # resident, the usual, is said in the manifest alone
            progress(0.0, data_note)
        train_data, val_data = ((d.streamed(device) if data_mode == "streamed" else d.resident(device))
                                for d in (train_data, val_data))
        compiled = compiler(config.compile)
        forward = compiled(distributed.wrap(model, device))
        evaluator = forward if distributed.world_size() == 1 else compiled(model)  # no DDP collectives while evaluating
        augment = make_augmentation(config.augment)

        def validate() -> dict:
            return evaluate_across_processes(evaluator, objective, val_data, batch_size=config.eval_batch_size,
                                             device=device, precision=precision)

        if spec.parents and saved is None:
            # what the parents' weights give before any training (e.g. rgb2lidar before fine-tuning)
            manifest["initial"] = {f"val/{k}": v for k, v in validate().items()}
            if main:
                ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)

        for epoch in range(loop.start_epoch, config.epochs + 1):
            reset_peak_memory(device)
            started = time.perf_counter()
            train_metrics, loop.step = train_one_epoch(
                forward, objective, train_data, optimizer, schedule, loop.step, batch_size=config.batch_size,
                seed=config.seed * 100_003 + epoch, drop_last=drop_last, device=device, precision=precision,
                augment=augment, report=progress and batch_reporter(progress, epoch, config.epochs, steps_per_epoch))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - started
            row = epoch_row(epoch, train_metrics, validate(), lr=schedule(loop.step - 1), params=manifest["params"],
                            started=started, samples=samples_per_epoch, train_seconds=train_seconds, device=device)
            loop.history.append(row)
            if not math.isfinite(row["val/loss"]):
                raise FloatingPointError(f"epoch {epoch}: val loss is {row['val/loss']}; training diverged")
            improved = loop.update_best(row, objective)
            if improved:
                manifest["best"] = loop.best
            if main:
                save_epoch(run_dir, model, optimizer, manifest, loop, epoch, improved)
            manifest.update(epochs_completed=epoch, best=loop.best)
            if main:
                ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
            tracker.log_epoch(row)
            if progress:
                progress(epoch / config.epochs, f"epoch {epoch}/{config.epochs}: {describe_metrics(row, objective)}")
            if config.patience and loop.bad_epochs >= config.patience:
                manifest["stopped_early"] = True
                break

        manifest, history = finish_run(model, objective, run_dir, manifest, loop.history, val_data, config, device,
                                       precision, tracker, title)
        tracker.finish()
    except BaseException as exc:
        if main:
            record_failure(run_dir, manifest, loop.history, exc, f"{title} (failed)", objective)
        tracker.finish(exit_code=1)
        raise
    return TrainResult(run_dir, model, manifest, history)


# --------------------------------------------------------------------------- the steps of a run


def check_arguments(spec: ModelSpec, train_config: TrainConfig, train_data: PairTensors,
                    val_data: PairTensors) -> Objective:
    """The objective ``spec`` trains with, once the arguments are checked; ``ValueError`` otherwise."""
    if not isinstance(train_config, TrainConfig):
        raise ValueError("train_config: expected a TrainConfig instance")
    objective = objective_for(spec, train_config.batch_size)
    check_split("train_data", train_data, spec, objective)
    check_split("val_data", val_data, spec, objective)
    world = distributed.world_size()
    if train_config.batch_size < world:
        raise ValueError(f"batch_size: {train_config.batch_size} is the batch of all {world} processes together; "
                         f"expected at least one pair per process")
    return objective


def check_class_names(spec: ModelSpec, class_names) -> tuple[str, ...] | None:
    """A classifier's class names (given, or cube, sphere for two classes, else the indices); None for
    other models. ``ValueError`` when their count is not the model's ``num_classes``."""
    classes = spec.num_classes
    if classes is None:
        return None
    if class_names is None:
        return CLASS_NAMES if classes == len(CLASS_NAMES) else tuple(str(i) for i in range(classes))
    class_names = tuple(str(name) for name in class_names)
    if len(class_names) != classes:
        raise ValueError(f"class_names: {len(class_names)} names ({', '.join(class_names)}) for a model "
                         f"of {classes} classes (num_classes)")
    return class_names


def check_split(name: str, data: PairTensors, spec: ModelSpec, objective: Objective) -> None:
    if not isinstance(data, PairTensors):
        raise ValueError(f"{name}: expected PairTensors, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: the split is empty")
    if objective.needs_labels and data.labels is None:
        raise ValueError(f"{name}: labels are required for training")
    classes = spec.num_classes
    if objective.needs_labels and classes is not None and int(data.labels.max()) >= classes:
        raise ValueError(f"{name}.labels: class index {int(data.labels.max())} found, the model has "
                         f"{classes} classes (num_classes {classes}: indices 0 to {classes - 1})")
    found = {"rgb": (data.rgb.shape[3], *data.rgb.shape[1:3]), "lidar": tuple(data.lidar.shape[1:])}
    for modality, expected in spec.input_shapes().items():
        channels, *size = expected
        if tuple(found[modality][1:]) != tuple(size):
            field = {"rgb": "image_size", "lidar": "beams"}[modality]
            raise ValueError(f"{name}.{modality}: grids are {tuple(found[modality][1:])}, "
                             f"the model expects {field} {tuple(size)}")
        if found[modality][0] != channels:
            raise ValueError(f"{name}.{modality}: {found[modality][0]} channels, the model expects {channels}")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir: {run_dir} is a file")
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(f"run_dir: {run_dir} already holds files (pass resume=True to continue that run)")


def _resume_state(run_dir: Path, spec: ModelSpec, model: nn.Module, data_fingerprint: str) -> dict | None:
    """The saved state of an interrupted run in ``run_dir`` (validated), or None to start fresh."""
    if not (run_dir / ckpt.STATE).is_file():
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise ValueError(f"run_dir: {run_dir} is not empty and holds no resume state ({ckpt.STATE})")
        return None
    manifest_path = run_dir / ckpt.MANIFEST
    manifest = ckpt.read_manifest(run_dir)
    saved = spec_of(manifest, run_dir)
    if saved != spec:
        raise ckpt.CheckpointError(
            f"{manifest_path}: the run was trained with another model config or parents "
            f"({saved.kind}: {saved.config.to_dict()}), not ({spec.kind}: {spec.config.to_dict()})"
        )
    check_parents_unchanged(spec, run_dir)
    saved_fingerprint = manifest.get("data_fingerprint", "")
    if data_fingerprint and saved_fingerprint and data_fingerprint != saved_fingerprint:
        raise ValueError(
            f"data_fingerprint: {data_fingerprint!r} differs from {saved_fingerprint!r} in {manifest_path}"
        )
    state = ckpt.load_state(run_dir / ckpt.STATE)
    for key in ("model", "optimizer", "epoch", "step", "history", "best", "bad_epochs"):
        if key not in state:
            raise ckpt.CheckpointError(f"{run_dir / ckpt.STATE}: resume state lacks {key!r}")
    ckpt.check_compatible(model, state["model"], run_dir / ckpt.STATE)
    state["manifest"] = manifest
    return state


def prepare_model(spec: ModelSpec, objective: Objective, train_config: TrainConfig, train_data: PairTensors,
                  val_data: PairTensors, device: torch.device, *, run_dir: Path, resume: bool,
                  data_fingerprint: str) -> tuple[nn.Module, dict | None, list, bool]:
    """The model to train, on ``device`` (channels_last): built from the seed and the parents' weights,
    its input statistics fitted on ``train_data``; with ``resume`` also the saved state of the interrupted
    run (loaded into the model by :meth:`LoopState.restore`). Returns the model, that state (or None),
    the fitted statistics and whether it trains on full batches only."""
    seed_everything(train_config.seed)
    model = build(spec, load_parents=True)
    saved = distributed.on_main(lambda: _resume_state(run_dir, spec, model, data_fingerprint)) if resume else None
    drop_last = needs_full_batches(model, objective)
    check_full_batches(drop_last, objective, train_config.batch_size, train_data, val_data)
    fitted = [] if saved else fit_standardizers(model, lambda m: (x[m] for x, _ in train_data.batches(1024)))
    if distributed.rank():  # augmentation draws of its own; the model was built alike on every process
        seed_everything(train_config.seed + 7919 * distributed.rank())
    return model.to(device, memory_format=torch.channels_last), saved, fitted, drop_last


def compiler(compile: bool | str) -> Callable[[nn.Module], nn.Module]:
    """``torch.compile`` in the mode asked for (True: its default), or nothing for False. Inductor
    caches what it compiled and autotuned on disk, so a later run starts faster."""
    if not compile:
        return lambda module: module
    mode = None if compile in (True, "default") else compile
    return lambda module: torch.compile(module, mode=mode)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def needs_full_batches(model: nn.Module, objective: Objective) -> bool:
    """A contrastive batch is a set of negatives; a trained batch norm cannot take a batch of 1."""
    return objective.drop_last or any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())
        for m in model.modules())


def check_full_batches(drop_last: bool, objective: Objective, batch_size: int, train_data: PairTensors,
                       val_data: PairTensors) -> None:
    """Refuse splits too small for a model that trains on full batches only."""
    if drop_last and len(train_data) < batch_size:
        raise ValueError(f"train_data: {len(train_data)} pairs, fewer than one full batch of "
                         f"{batch_size} (this model trains on full batches only)")
    if objective.drop_last and len(val_data) < 2:
        raise ValueError("val_data: a contrastive model needs at least 2 validation pairs")


def make_optimizer(model: nn.Module, train_config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (:func:`param_groups`), one fused kernel for all of them."""
    return torch.optim.AdamW(param_groups(model, train_config.weight_decay), lr=train_config.lr, fused=True)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters: weight decay on weight matrices and kernels only, none on
    biases, norms and scalars such as CILP's logit scale."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_schedule(train_config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """step -> learning rate over the whole run (:func:`lr_at`)."""
    total_steps = train_config.epochs * steps_per_epoch
    warmup_steps = round(train_config.warmup_epochs * steps_per_epoch)
    min_lr = train_config.lr * train_config.min_lr_ratio

    def schedule(step: int) -> float:
        return lr_at(step, total_steps, warmup_steps, train_config.lr, min_lr)

    return schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """1) linear warm-up to ``lr``; 2) cosine decay to ``min_lr`` at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class LoopState:
    """What the loop carries from one epoch to the next, and what resuming restores."""

    best: dict  # the metrics row of the best epoch so far ({"epoch": 0, ...} before any)
    start_epoch: int = 1
    step: int = 0  # optimizer steps taken
    history: list[dict] = field(default_factory=list)  # one metrics row per finished epoch
    bad_epochs: int = 0  # epochs since the best one

    @classmethod
    def fresh(cls, objective: Objective) -> LoopState:
        return cls({"epoch": 0, objective.select: objective.worst})

    @classmethod
    def restore(cls, saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> LoopState:
        """The state of an interrupted run (:func:`_resume_state`), its weights and optimizer loaded."""
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        return cls(dict(saved["best"]), saved["epoch"] + 1, saved["step"], list(saved["history"]),
                   saved["bad_epochs"])

    def update_best(self, row: dict, objective: Objective) -> bool:
        """Whether ``row`` is the best epoch yet (by the objective's selection metric); counts the others."""
        improved = objective.better(row[objective.select], self.best[objective.select])
        if improved:
            self.best, self.bad_epochs = dict(row), 0
        else:
            self.bad_epochs += 1
        return improved


def new_manifest(spec: ModelSpec, objective: Objective, train_config: TrainConfig, train_data: PairTensors,
                 val_data: PairTensors, model: nn.Module, data_fingerprint: str, fitted: list, device: torch.device,
                 precision: str, data: dict, loop: LoopState, saved: dict | None) -> dict:
    """The run's manifest as it starts (a resumed run keeps its initial metrics and checkpoint)."""
    manifest = {
        "format": "mm_models.run/2",
        "kind": spec.kind,
        "spec": spec.to_dict(),
        "model": spec.config.to_dict(),
        "objective": type(objective).__name__,
        "select": objective.select,
        "train": train_config.to_dict(),
        "data_fingerprint": data_fingerprint,
        "train_size": len(train_data),
        "val_size": len(val_data),
        "params": count_parameters(model),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "input_statistics": fitted,
        "device": str(device),
        "precision": precision,
        "data": {"mode": data["mode"], "bytes": train_data.nbytes + val_data.nbytes, "note": data["note"]},
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "status": "running",
        "epochs_completed": loop.start_epoch - 1,
        "best": loop.best if loop.best["epoch"] else None,
    }
    if distributed.world_size() > 1:
        manifest["processes"] = distributed.world_size()
    if saved is not None:
        for key in ("initial", "checkpoint", "checkpoint_sha256", "input_statistics"):
            if key in saved["manifest"]:
                manifest[key] = saved["manifest"][key]
    return manifest


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cilp-multimodal")
    except Exception:
        return "unknown"


def batch_reporter(progress: Progress, epoch: int, epochs: int, steps_per_epoch: int) -> Callable[[int, float], None]:
    """``report(batches done, mean loss so far)`` for :func:`train_one_epoch`, as a progress call."""
    def report(done: int, loss: float) -> None:
        progress((epoch - 1 + done / steps_per_epoch) / epochs,
                 f"epoch {epoch}/{epochs}: batch {done}/{steps_per_epoch}, loss {loss:.4f}")
    return report


def epoch_row(epoch: int, train_metrics: dict, val_metrics: dict, *, lr: float, params: int, started: float,
              samples: int, train_seconds: float, device: torch.device) -> dict:
    """The metrics row of an epoch: ``train/...``, ``val/...``, the learning rate, time and memory."""
    return {
        "epoch": epoch,
        **{f"train/{k}": v for k, v in train_metrics.items()},
        **{f"val/{k}": v for k, v in val_metrics.items()},
        "lr": lr,
        "params": params,
        "epoch_seconds": time.perf_counter() - started,
        "samples_per_s": samples / train_seconds,
        "peak_memory_mb": peak_memory_mb(device),
    }


def save_epoch(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, manifest: dict, loop: LoopState,
               epoch: int, improved: bool) -> None:
    """After an epoch: the best weights when they improved, the resume state and ``metrics.csv``."""
    if improved:
        ckpt.save_best_weights(model, run_dir, manifest, f"model-epoch{epoch}.safetensors")
    ckpt.save_state(run_dir / ckpt.STATE, {
        "model": {k: v.contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "epoch": epoch, "step": loop.step,
        "history": loop.history, "best": loop.best, "bad_epochs": loop.bad_epochs,
    })
    write_metrics_csv(run_dir / ckpt.METRICS, loop.history)


def finish_run(model: nn.Module, objective: Objective, run_dir: Path, manifest: dict, history: list[dict],
               val_data: PairTensors, train_config: TrainConfig, device: torch.device, precision: str, tracker,
               title: str) -> tuple[dict, list[dict]]:
    """The best weights back into ``model`` (eval mode); on rank 0 the curves, the objective's pictures
    and the weights under their usual name. Returns rank 0's manifest and history, on every rank."""
    main = distributed.is_main()
    if main:
        ckpt.load_weights(model, run_dir / ckpt.weights_name(manifest, run_dir))
    distributed.broadcast_module(model)
    model.eval()
    if main:
        plot_curves(run_dir / ckpt.CURVES, history, title, objective.headline)
        val_outputs = infer(model, val_data, batch_size=train_config.eval_batch_size, device=device,
                            precision=precision)
        manifest["pictures"] = objective.pictures(val_outputs, val_data, run_dir, tracker,
                                                  train_config.logged_predictions if train_config.wandb else 0,
                                                  manifest.get("class_names"))
        manifest["status"] = "finished"
        ckpt.save_best_weights(None, run_dir, manifest, ckpt.WEIGHTS)  # the best, under the usual name
        tracker.log_checkpoint(_artifact_name(run_dir.name), [run_dir / ckpt.WEIGHTS, run_dir / ckpt.MANIFEST])
    return distributed.broadcast_object((manifest, history))


def record_failure(run_dir: Path, manifest: dict, history: list[dict], exc: BaseException, title: str,
                   objective: Objective) -> None:
    """Mark the run failed in its manifest, with the error, and plot the curves of the epochs it finished."""
    manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
    if history:
        plot_curves(run_dir / ckpt.CURVES, history, title, objective.headline)


# --------------------------------------------------------------------------- an epoch


def train_one_epoch(model, objective: Objective, data: PairTensors, optimizer, schedule: Callable[[int], float],
                    step: int, *, batch_size: int, seed: int, drop_last: bool, device: torch.device,
                    precision: str, augment=None,
                    report: Callable[[int, float], None] | None = None) -> tuple[dict, int]:
    """One pass in a seeded random order; returns the epoch's train metrics and the next step.

    The metrics are the objective's over the outputs seen during the epoch, with
    the loss the mean of the batch losses that were optimised. ``report(batches done,
    mean loss so far)`` is called about once a second (it waits for the device).
    Under ``torchrun`` each process trains on its share of every batch, and the metrics
    are those of the whole batches, on every process.
    """
    model.train()
    world = distributed.world_size()
    outputs, labels_seen, losses = [], [], []
    reported = time.perf_counter()
    for rows in data.batch_rows(batch_size, shuffle=True, seed=seed, drop_last=drop_last):
        share = rows if world == 1 else rows[slice(*distributed.shard_bounds(len(rows)))]
        inputs, labels = data.batch(share)
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        if augment and len(share):
            inputs = augment(inputs)
        with autocast(device, precision):
            out = model(inputs)
        loss = objective.loss(out, labels) if world == 1 else share_of_loss(objective, out, labels, len(rows))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        outputs.append(whole_batch_outputs(out, len(rows)))
        labels_seen.append(labels if world == 1 or labels is None else data.labels[rows])
        losses.append(loss.detach())
        if report and time.perf_counter() - reported > REPORT_SECONDS:
            report(len(losses), torch.stack(losses).mean().item())
            reported = time.perf_counter()
    labels = None if data.labels is None else torch.cat(labels_seen)
    metrics = objective.metrics(concat_outputs(outputs), labels)
    batch_losses = distributed.all_reduce_sum(torch.stack(losses)) / world  # see share_of_loss
    metrics["loss"] = batch_losses.mean().item()  # batches are equal but for a last, smaller one
    return metrics, step


def share_of_loss(objective: Objective, outputs: Outputs, labels, batch_rows: int) -> Tensor:
    """This process's part of the loss of a batch of ``batch_rows`` rows split across processes.

    The mean loss over the process's share times ``world size * share rows / batch rows``
    (1 for equal shares): DDP averages the processes' gradients, and that average is then
    the gradient of the whole batch's mean loss; the sum of the parts over the processes,
    divided by the world size, is that loss.
    """
    start, stop = distributed.shard_bounds(batch_rows)
    if start == stop:  # a last batch smaller than the world: nothing to learn here, but DDP awaits gradients
        return sum(v.sum() for v in outputs.values() if v.requires_grad) * 0.0
    return objective.shard_loss(outputs, labels, batch_rows) * (distributed.world_size() * (stop - start) / batch_rows)


def whole_batch_outputs(outputs: Outputs, batch_rows: int) -> Outputs:
    """The outputs, detached, of every process's share of the batch (this process's outside ``torchrun``)."""
    if distributed.world_size() == 1:
        return {k: v.detach() for k, v in outputs.items()}
    return {k: distributed.gather_rows(v.detach().float(), batch_rows) if v.ndim else v.detach()
            for k, v in outputs.items()}


def evaluate(model, objective: Objective, data: PairTensors, *, batch_size: int, device: torch.device,
             precision: str) -> dict:
    return objective.metrics(infer(model, data, batch_size=batch_size, device=device, precision=precision),
                             data.labels)


def evaluate_across_processes(model, objective: Objective, data: PairTensors, **options) -> dict:
    """:func:`evaluate`; under ``torchrun`` each process infers its share of the split, every process
    gets all the outputs, and rank 0's metrics are every process's (so all pick the same epoch)."""
    world = distributed.world_size()
    if world == 1:
        return evaluate(model, objective, data, **options)
    if len(data) < world:
        outputs = infer(model, data, **options)
    else:
        share = infer(model, data.subset(slice(*distributed.shard_bounds(len(data)))), **options)
        outputs = {k: distributed.gather_rows(v, len(data)) if v.ndim else v for k, v in share.items()}
    return distributed.broadcast_object(objective.metrics(outputs, data.labels))


# --------------------------------------------------------------------------- labels


def describe_metrics(row: dict, objective: Objective, prefix: str = "val/") -> str:
    """``val loss 0.0123, accuracy 99.50%``: the loss and the objective's headline metrics."""
    parts = [f"val loss {row[prefix + 'loss']:.4f}"]
    for name in objective.headline:
        value = row.get(prefix + name)
        if value is not None:
            parts.append(f"{name} {100 * value:.2f}%" if name == "accuracy" or "top" in name
                         else f"{name} {value:.4f}")
    return ", ".join(parts)


def _artifact_name(name: str) -> str:
    return "model-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", name) or "run")

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

The device is CUDA when present; bf16 autocast is used where it is faster (CUDA
with bf16, or a CPU where a short probe measures it faster), with fp32 weights
and an fp32 loss. The data moves to the device once or, where it does not fit
(``TrainConfig.data``, see :func:`mm_models.data.placement`), stays on the host
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

import functools
import math
import os
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from . import distributed
from .augment import AUGMENTATIONS, make_augmentation
from .data import CLASS_NAMES, DATA_MODES, PairTensors, place, placement
from .encoders import check_choice, config_from_dict
from .factory import count_parameters
from .inputs import fit_standardizers
from .losses import Objective, Outputs
from .metrics import peak_memory_mb, reset_peak_memory
from .stages import (KINDS, LoadedRun, ModelSpec, as_module, build, check_parents_unchanged, objective_for,
                     spec_of)
from .tracking import NullTracker, make_tracker, plot_curves, require_wandb, write_metrics_csv

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
Progress = Callable[[float, str], None]
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
    compile: bool = False  # torch.compile the model (worth it on CUDA)
    patience: int = 0  # stop after this many epochs without a better selection metric; 0 = never
    augment: str = "none"  # none | rgb-affine: training-time augmentation (mm_models.augment)
    eval_batch_size: int = 256
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
        for name, low in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("patience", 0),
                          ("logged_predictions", 0), ("seed", 0)):
            value = getattr(self, name)
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
    def from_dict(cls, data: dict) -> "TrainConfig":
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


# --------------------------------------------------------------------------- device & precision


def resolve_device(name: str) -> torch.device:
    check_choice("device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
    if name == "cuda" and distributed.launched():  # one GPU per process
        if distributed.local_rank() >= torch.cuda.device_count():
            raise ValueError(f"device: process {distributed.local_rank()} of this node has no GPU of its own "
                             f"({torch.cuda.device_count()} GPUs): start at most that many (--nproc-per-node)")
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def bf16_helps_on_cpu() -> bool:
    """Whether bf16 autocast makes a conv training step faster on this CPU (probed once).

    CPUs differ: with native bf16 an AMD EPYC trains the reference networks ~2.5x
    faster under bf16, while a Xeon measured here ran them ~1.6x slower. The probe
    times one mid-sized conv layer forward + backward in both precisions (~0.5 s).
    """
    if not cpu_has_bf16():
        return False
    conv = torch.nn.Conv2d(50, 100, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(16, 50, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()

    def seconds(enabled: bool) -> float:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                y = conv(x)
            y.float().sum().backward()
            best = min(best, time.perf_counter() - started)
        return best

    seconds(True)  # warm-up: oneDNN builds its kernels on first use
    return seconds(False) > 1.3 * seconds(True)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA with bf16 support, and on a CPU where it measures faster."""
    check_choice("precision", name, PRECISIONS)
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so autocast "
                      "emulates it: training runs ~10x slower than in fp32 here (precision auto picks fp32)",
                      stacklevel=2)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if bf16_helps_on_cpu() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# --------------------------------------------------------------------------- the loop


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """1) linear warm-up to ``lr``; 2) cosine decay to ``min_lr`` at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters: weight decay on weight matrices and kernels only, none on
    biases, norms and scalars such as CILP's logit scale."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def needs_full_batches(model: nn.Module, objective: Objective) -> bool:
    """A contrastive batch is a set of negatives; a trained batch norm cannot take a batch of 1."""
    return objective.drop_last or any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())
        for m in model.modules())


def concat_outputs(batches: list[Outputs]) -> Outputs:
    """Per-batch outputs joined along the batch; a scalar (the logit scale) keeps its last value."""
    return {key: torch.cat([b[key] for b in batches]) if batches[-1][key].ndim else batches[-1][key]
            for key in batches[-1]}


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


@torch.no_grad()
def infer(model, data: PairTensors, *, batch_size: int, device: torch.device, precision: str,
          progress: Progress | None = None) -> Outputs:
    """The model's outputs for every pair, in order, concatenated (eval mode, no gradients)."""
    model.eval()
    outputs = []
    for i, (inputs, _) in enumerate(data.batches(batch_size)):
        with autocast(device, precision):
            outputs.append({k: v.float() for k, v in model(inputs).items()})
        if progress:
            done = min(len(data), (i + 1) * batch_size)
            progress(done / len(data), f"predicted {done} of {len(data)}")
    return concat_outputs(outputs)


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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def check_split(name: str, data: PairTensors, spec: ModelSpec, objective: Objective) -> None:
    if not isinstance(data, PairTensors):
        raise ValueError(f"{name}: expected PairTensors, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: the split is empty")
    if objective.needs_labels and data.labels is None:
        raise ValueError(f"{name}: labels are required for training")
    found = {"rgb": (data.rgb.shape[3], *data.rgb.shape[1:3]), "lidar": tuple(data.lidar.shape[1:])}
    for modality, expected in spec.input_shapes().items():
        channels, *size = expected
        if tuple(found[modality][1:]) != tuple(size):
            raise ValueError(f"{name}.{modality}: grids are {tuple(found[modality][1:])}, "
                             f"the model expects image_size {size[0]}")
        if found[modality][0] != channels:
            raise ValueError(f"{name}.{modality}: {found[modality][0]} channels, the model expects {channels}")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cilp-multimodal")
    except Exception:
        return "unknown"


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
) -> TrainResult:
    """Train the model ``model`` describes (a :class:`ModelSpec`, or a ``ModelConfig`` /
    ``CILPConfig``) into ``run_dir`` (one folder per run); see the module docstring.

    With ``resume`` an interrupted run in ``run_dir`` continues after its last
    finished epoch (weights, optimizer, LR step and metric history restored);
    ``train_config.epochs`` may be raised to train further. ``progress(fraction,
    label)`` is called after every epoch (by rank 0 alone under ``torchrun``). Bad
    arguments raise ``ValueError`` before anything is written.
    """
    # 1) validate everything before writing anything
    distributed.setup()
    world, main = distributed.world_size(), distributed.is_main()
    progress = progress if main else None
    spec = model if isinstance(model, ModelSpec) else ModelSpec.of(model)
    if not isinstance(train_config, TrainConfig):
        raise ValueError("train_config: expected a TrainConfig instance")
    objective = objective_for(spec, train_config.batch_size)
    check_split("train_data", train_data, spec, objective)
    check_split("val_data", val_data, spec, objective)
    if train_config.batch_size < world:
        raise ValueError(f"batch_size: {train_config.batch_size} is the batch of all {world} processes together; "
                         f"expected at least one pair per process")
    device = resolve_device(train_config.device)
    precision = distributed.broadcast_object(resolve_precision(train_config.precision, device))
    data_mode, data_note = placement(train_config.data, device, train_data, val_data)
    run_dir = Path(run_dir).resolve()
    distributed.on_main(lambda: _check_run_dir(run_dir, resume))  # only rank 0 looks at the run folder
    if train_config.wandb:
        distributed.on_main(require_wandb)

    # 2) model (from the parents' weights), optimizer, schedule
    seed_everything(train_config.seed)
    model = build(spec, load_parents=True)
    state = distributed.on_main(lambda: _resume_state(run_dir, spec, model, data_fingerprint)) if resume else None
    drop_last = needs_full_batches(model, objective)
    if drop_last and len(train_data) < train_config.batch_size:
        raise ValueError(f"train_data: {len(train_data)} pairs, fewer than one full batch of "
                         f"{train_config.batch_size} (this model trains on full batches only)")
    if objective.drop_last and len(val_data) < 2:
        raise ValueError("val_data: a contrastive model needs at least 2 validation pairs")
    fitted = [] if state else fit_standardizers(model, lambda m: (x[m] for x, _ in train_data.batches(1024)))
    if distributed.rank():  # augmentation draws of its own; the model was built alike on every process
        seed_everything(train_config.seed + 7919 * distributed.rank())
    model = model.to(device, memory_format=torch.channels_last)
    params = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(param_groups(model, train_config.weight_decay), lr=train_config.lr,
                                  fused=True)  # one kernel for all parameters (CPU and CUDA)
    steps_per_epoch = len(train_data) // train_config.batch_size if drop_last else \
        math.ceil(len(train_data) / train_config.batch_size)
    samples_per_epoch = steps_per_epoch * train_config.batch_size if drop_last else len(train_data)
    total_steps = train_config.epochs * steps_per_epoch
    warmup_steps = round(train_config.warmup_epochs * steps_per_epoch)
    min_lr = train_config.lr * train_config.min_lr_ratio

    def schedule(step: int) -> float:
        return lr_at(step, total_steps, warmup_steps, train_config.lr, min_lr)

    start_epoch, step, history, bad_epochs = 1, 0, [], 0
    best = {"epoch": 0, objective.select: objective.worst}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        history, best, bad_epochs = list(state["history"]), dict(state["best"]), state["bad_epochs"]

    # 3) the run folder and its manifest (rank 0 alone writes files)
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
        "params": params,
        "trainable_params": trainable,
        "input_statistics": fitted,
        "device": str(device),
        "precision": precision,
        "data": {"mode": data_mode, "bytes": train_data.nbytes + val_data.nbytes, "note": data_note},
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "status": "running",
        "epochs_completed": start_epoch - 1,
        "best": best if best["epoch"] else None,
    }
    if world > 1:
        manifest["processes"] = world
    if state is not None:
        for key in ("initial", "checkpoint", "checkpoint_sha256", "input_statistics"):
            if key in state["manifest"]:
                manifest[key] = state["manifest"][key]
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
    tracker = NullTracker()
    title = f"{run_dir.name}: {spec.describe()}"
    try:
        if main:
            tracker = make_tracker(train_config.wandb, run_dir, run_dir.name,
                                   {"spec": spec.to_dict(), "train": train_config.to_dict(),
                                    "params": params, "data_fingerprint": data_fingerprint},
                                   train_config.wandb_project)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if progress and data_mode == "streamed":  # resident, the usual, is said in the manifest alone
            progress(0.0, data_note)
        train_data, val_data = ((d.streamed(device) if data_mode == "streamed" else d.resident(device))
                                for d in (train_data, val_data))
        compiled = torch.compile if train_config.compile else (lambda module: module)
        forward = compiled(distributed.wrap(model, device))
        evaluator = forward if world == 1 else compiled(model)  # no DDP collectives while evaluating
        augment = make_augmentation(train_config.augment)

        def validate() -> dict:
            return evaluate_across_processes(evaluator, objective, val_data, batch_size=train_config.eval_batch_size,
                                             device=device, precision=precision)

        if spec.parents and state is None:
            # what the parents' weights give before any training (e.g. rgb2lidar before fine-tuning)
            manifest["initial"] = {f"val/{k}": v for k, v in validate().items()}
            if main:
                ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)

        # 4) the epochs
        for epoch in range(start_epoch, train_config.epochs + 1):
            reset_peak_memory(device)
            started = time.perf_counter()
            train_metrics, step = train_one_epoch(
                forward, objective, train_data, optimizer, schedule, step, batch_size=train_config.batch_size,
                seed=train_config.seed * 100_003 + epoch, drop_last=drop_last, device=device, precision=precision,
                augment=augment, report=progress and (
                    lambda done, loss, epoch=epoch: progress(
                        (epoch - 1 + done / steps_per_epoch) / train_config.epochs,
                        f"epoch {epoch}/{train_config.epochs}: batch {done}/{steps_per_epoch}, loss {loss:.4f}")))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - started
            val_metrics = validate()
            row = {
                "epoch": epoch,
                **{f"train/{k}": v for k, v in train_metrics.items()},
                **{f"val/{k}": v for k, v in val_metrics.items()},
                "lr": schedule(step - 1),
                "params": params,
                "epoch_seconds": time.perf_counter() - started,
                "samples_per_s": samples_per_epoch / train_seconds,
                "peak_memory_mb": peak_memory_mb(device),
            }
            history.append(row)
            if not math.isfinite(row["val/loss"]):
                raise FloatingPointError(f"epoch {epoch}: val loss is {row['val/loss']}; training diverged")

            improved = objective.better(row[objective.select], best[objective.select])
            if improved:
                best, bad_epochs = dict(row), 0
                manifest["best"] = best
            else:
                bad_epochs += 1
            if main:
                if improved:
                    ckpt.save_best_weights(model, run_dir, manifest, f"model-epoch{epoch}.safetensors")
                ckpt.save_state(run_dir / ckpt.STATE, {
                    "model": {k: v.contiguous() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                    "history": history, "best": best, "bad_epochs": bad_epochs,
                })
                write_metrics_csv(run_dir / ckpt.METRICS, history)
            manifest.update(epochs_completed=epoch, best=best)
            if main:
                ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
            tracker.log_epoch(row)
            if progress:
                progress(epoch / train_config.epochs,
                         f"epoch {epoch}/{train_config.epochs}: {describe_metrics(row, objective)}")
            if train_config.patience and bad_epochs >= train_config.patience:
                manifest["stopped_early"] = True
                break

        # 5) the best weights back into the model; curves and the objective's pictures
        if main:
            ckpt.load_weights(model, run_dir / ckpt.weights_name(manifest, run_dir))
        distributed.broadcast_module(model)
        model.eval()
        if main:
            plot_curves(run_dir / ckpt.CURVES, history, title, objective.headline)
            val_outputs = infer(model, val_data, batch_size=train_config.eval_batch_size, device=device,
                                precision=precision)
            manifest["pictures"] = objective.pictures(val_outputs, val_data, run_dir, tracker,
                                                      train_config.logged_predictions if train_config.wandb else 0)
            manifest["status"] = "finished"
            ckpt.save_best_weights(None, run_dir, manifest, ckpt.WEIGHTS)  # the best, under the usual name
            tracker.log_checkpoint(_artifact_name(run_dir.name), [run_dir / ckpt.WEIGHTS, run_dir / ckpt.MANIFEST])
        manifest, history = distributed.broadcast_object((manifest, history))  # rank 0's run, on every rank
        tracker.finish()
    except BaseException as exc:
        if main:
            manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
            if history:
                plot_curves(run_dir / ckpt.CURVES, history, f"{title} (failed)", objective.headline)
        tracker.finish(exit_code=1)
        raise
    return TrainResult(run_dir, model, manifest, history)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir: {run_dir} is a file")
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(f"run_dir: {run_dir} already holds files (pass resume=True to continue that run)")


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


# --------------------------------------------------------------------------- prediction


@dataclass
class Predictions:
    logits: np.ndarray  # (N,) float32
    probabilities: np.ndarray  # (N,) sigmoid(logits): P(sphere)
    embeddings: np.ndarray  # (N, E) the head's penultimate activations

    @property
    def labels(self) -> np.ndarray:
        """Predicted class index per pair: 0 cube, 1 sphere."""
        return (self.logits > 0).astype(np.int64)

    @property
    def label_names(self) -> list[str]:
        return [CLASS_NAMES[i] for i in self.labels]


def outputs_of(
    model_or_run: nn.Module | LoadedRun | TrainResult | str | os.PathLike,
    data: PairTensors,
    *,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Every output of a model (or run) for every pair of ``data``, as numpy arrays (labels not needed).

    A classifier gives ``logits`` and ``embedding``; a CILP model ``rgb_features``,
    ``lidar_features`` and ``logit_scale``.
    """
    model = as_module(model_or_run)
    if len(data) == 0:
        raise ValueError("data: no pairs to predict")
    device_ = resolve_device(device)
    precision = resolve_precision(precision, device_)
    outputs = infer(model.to(device_), place(data, device_), batch_size=batch_size, device=device_,
                    precision=precision, progress=progress)
    return {k: v.cpu().numpy() for k, v in outputs.items()}


def predict(model_or_run, data: PairTensors, **options) -> Predictions:
    """Logits, P(sphere) and embeddings of a classifier for every pair of ``data``; the options are
    :func:`outputs_of`'s."""
    outputs = outputs_of(model_or_run, data, **options)
    if "logits" not in outputs:
        raise ValueError(f"this model predicts no classes (its outputs: {', '.join(outputs)}); "
                         f"use outputs_of for its embeddings")
    logits = outputs["logits"]
    return Predictions(logits, torch.sigmoid(torch.from_numpy(logits)).numpy(), outputs["embedding"])

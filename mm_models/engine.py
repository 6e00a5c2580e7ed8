"""The training loop: one run of one model on device-resident tensors.

    from mm_models import ModelConfig, TrainConfig, PairTensors, train, load_run, predict

    train_data = PairTensors.from_numpy(rgb, xyza, labels)        # (N,64,64,4) u8, (N,4,64,64) f32
    result = train(ModelConfig(family="intermediate", fusion="add"), TrainConfig(epochs=10),
                   train_data, val_data, "runs/add")
    run = load_run("runs/add")                                    # best-val-loss weights
    out = predict(run, val_data)                                  # logits, probabilities, embeddings

The device is CUDA when present; bf16 autocast is used where it is faster (CUDA
with bf16, or a CPU where a short probe measures it faster), with fp32 weights
and an fp32 loss. The data
moves to the device once; the model runs channels_last; the learning rate follows
a linear warm-up then a cosine decay, set every step. After every epoch the run
folder gets the best-val-loss weights (when they improved), the resume state,
``metrics.csv`` and the manifest, each written atomically.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .data import CLASS_NAMES, PairTensors
from .encoders import check_choice, config_from_dict
from .factory import ModelConfig, build_model, count_parameters
from .fusion import FusionClassifier
from .metrics import binary_metrics, peak_memory_mb, reset_peak_memory
from .tracking import NullTracker, make_tracker, plot_curves, require_wandb, write_metrics_csv

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
Progress = Callable[[float, str], None]


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
    patience: int = 0  # stop after this many epochs without a better val loss; 0 = never
    eval_batch_size: int = 256
    wandb: bool = False  # track the run with wandb (offline unless WANDB_API_KEY is set)
    wandb_project: str = "cilp-multimodal"
    logged_predictions: int = 32  # val samples in the wandb predictions table

    def __post_init__(self):
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
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
    model: FusionClassifier  # with the best-val-loss weights, in eval mode
    manifest: dict
    history: list[dict]  # one metrics row per epoch

    @property
    def best(self) -> dict:
        return self.manifest["best"]


# --------------------------------------------------------------------------- device & precision


def resolve_device(name: str) -> torch.device:
    check_choice("device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
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


def train_one_epoch(model, data: PairTensors, optimizer, schedule: Callable[[int], float], step: int, *,
                    batch_size: int, seed: int, device: torch.device, precision: str) -> tuple[dict, int]:
    """One pass in a seeded random order; returns the epoch's train metrics and the next step."""
    model.train()
    all_logits, all_targets = [], []
    for inputs, targets in data.batches(batch_size, shuffle=True, seed=seed):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        with autocast(device, precision):
            logits = model(inputs)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        all_logits.append(logits.detach())
        all_targets.append(targets)
    return binary_metrics(torch.cat(all_logits), torch.cat(all_targets)), step


@torch.no_grad()
def evaluate(model, data: PairTensors, *, batch_size: int, device: torch.device, precision: str) -> dict:
    model.eval()
    logits = []
    for inputs, _ in data.batches(batch_size):
        with autocast(device, precision):
            logits.append(model(inputs).float())
    return binary_metrics(torch.cat(logits), data.labels)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def check_split(name: str, data: PairTensors, config: ModelConfig) -> None:
    if not isinstance(data, PairTensors):
        raise ValueError(f"{name}: expected PairTensors, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: the split is empty")
    if data.labels is None:
        raise ValueError(f"{name}: labels are required for training")
    size = config.image_size
    if tuple(data.rgb.shape[1:3]) != (size, size):
        raise ValueError(f"{name}: images are {tuple(data.rgb.shape[1:3])}, the model expects image_size {size}")
    for modality, channels in (("rgb", data.rgb.shape[3]), ("lidar", data.lidar.shape[1])):
        expected = getattr(config, f"{modality}_channels")
        if modality in config.modalities and channels != expected:
            raise ValueError(f"{name}.{modality}: {channels} channels, the model expects {expected}")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cilp-multimodal")
    except Exception:
        return "unknown"


def _resume_state(run_dir: Path, model_config: ModelConfig, data_fingerprint: str) -> dict | None:
    """The saved state of an interrupted run in ``run_dir`` (validated), or None to start fresh."""
    if not (run_dir / ckpt.STATE).is_file():
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise ValueError(f"run_dir: {run_dir} is not empty and holds no resume state ({ckpt.STATE})")
        return None
    manifest_path = run_dir / ckpt.MANIFEST
    manifest = ckpt.read_manifest(run_dir)
    saved = ckpt.model_config_of(manifest, manifest_path)
    if saved != model_config:
        raise ckpt.CheckpointError(
            f"{manifest_path}: the run was trained with another model config "
            f"({saved.to_dict()}), not {model_config.to_dict()}"
        )
    saved_fingerprint = manifest.get("data_fingerprint", "")
    if data_fingerprint and saved_fingerprint and data_fingerprint != saved_fingerprint:
        raise ValueError(
            f"data_fingerprint: {data_fingerprint!r} differs from {saved_fingerprint!r} in {manifest_path}"
        )
    state = ckpt.load_state(run_dir / ckpt.STATE)
    for key in ("model", "optimizer", "epoch", "step", "history", "best", "bad_epochs"):
        if key not in state:
            raise ckpt.CheckpointError(f"{run_dir / ckpt.STATE}: resume state lacks {key!r}")
    ckpt.check_compatible(build_model(model_config), state["model"], run_dir / ckpt.STATE)
    return state


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_data: PairTensors,
    val_data: PairTensors,
    run_dir: Path | str,
    *,
    data_fingerprint: str = "",
    resume: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model_config`` into ``run_dir`` (one folder per run); see the module docstring.

    With ``resume`` an interrupted run in ``run_dir`` continues after its last
    finished epoch (weights, optimizer, LR step and metric history restored);
    ``train_config.epochs`` may be raised to train further. ``progress(fraction,
    label)`` is called after every epoch. Bad arguments raise ``ValueError`` before
    anything is written.
    """
    # 1) validate everything before writing anything
    if not isinstance(model_config, ModelConfig) or not isinstance(train_config, TrainConfig):
        raise ValueError("model_config / train_config: expected ModelConfig and TrainConfig instances")
    check_split("train_data", train_data, model_config)
    check_split("val_data", val_data, model_config)
    device = resolve_device(train_config.device)
    precision = resolve_precision(train_config.precision, device)
    run_dir = Path(run_dir).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir: {run_dir} is a file")
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(f"run_dir: {run_dir} already holds files (pass resume=True to continue that run)")
    state = _resume_state(run_dir, model_config, data_fingerprint) if resume else None
    if train_config.wandb:
        require_wandb()

    # 2) model, optimizer, schedule
    seed_everything(train_config.seed)
    model = build_model(model_config).to(device, memory_format=torch.channels_last)
    params = count_parameters(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay,
                                  fused=True)  # one kernel for all parameters (CPU and CUDA)
    steps_per_epoch = math.ceil(len(train_data) / train_config.batch_size)
    total_steps = train_config.epochs * steps_per_epoch
    warmup_steps = round(train_config.warmup_epochs * steps_per_epoch)
    min_lr = train_config.lr * train_config.min_lr_ratio

    def schedule(step: int) -> float:
        return lr_at(step, total_steps, warmup_steps, train_config.lr, min_lr)

    start_epoch, step, history, bad_epochs = 1, 0, [], 0
    best = {"epoch": 0, "val/loss": math.inf}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        history, best, bad_epochs = list(state["history"]), dict(state["best"]), state["bad_epochs"]

    # 3) the run folder and its manifest
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": "mm_models.run/1",
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "data_fingerprint": data_fingerprint,
        "train_size": len(train_data),
        "val_size": len(val_data),
        "params": params,
        "device": str(device),
        "precision": precision,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "checkpoint": ckpt.WEIGHTS,
        "status": "running",
        "epochs_completed": start_epoch - 1,
        "best": best if best["epoch"] else None,
    }
    ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
    tracker = NullTracker()
    try:
        tracker = make_tracker(train_config.wandb, run_dir, run_dir.name,
                               {"model": model_config.to_dict(), "train": train_config.to_dict(),
                                "params": params, "data_fingerprint": data_fingerprint},
                               train_config.wandb_project)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        train_data, val_data = train_data.to(device), val_data.to(device)
        forward = torch.compile(model) if train_config.compile else model

        # 4) the epochs
        for epoch in range(start_epoch, train_config.epochs + 1):
            reset_peak_memory(device)
            started = time.perf_counter()
            train_metrics, step = train_one_epoch(
                forward, train_data, optimizer, schedule, step, batch_size=train_config.batch_size,
                seed=train_config.seed * 100_003 + epoch, device=device, precision=precision)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - started
            val_metrics = evaluate(forward, val_data, batch_size=train_config.eval_batch_size,
                                   device=device, precision=precision)
            row = {
                "epoch": epoch,
                **{f"train/{k}": v for k, v in train_metrics.items()},
                **{f"val/{k}": v for k, v in val_metrics.items()},
                "lr": schedule(step - 1),
                "params": params,
                "epoch_seconds": time.perf_counter() - started,
                "samples_per_s": len(train_data) / train_seconds,
                "peak_memory_mb": peak_memory_mb(device),
            }
            history.append(row)
            if not math.isfinite(row["val/loss"]):
                raise FloatingPointError(f"epoch {epoch}: val loss is {row['val/loss']}; training diverged")

            if row["val/loss"] < best["val/loss"]:
                best, bad_epochs = dict(row), 0
                ckpt.save_weights(model, run_dir / ckpt.WEIGHTS, model_config)
                # the manifest follows at once: it holds the checksum load_run verifies
                manifest.update(best=best, checkpoint_sha256=ckpt.file_sha256(run_dir / ckpt.WEIGHTS))
                ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
            else:
                bad_epochs += 1
            ckpt.save_state(run_dir / ckpt.STATE, {
                "model": {k: v.contiguous() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                "history": history, "best": best, "bad_epochs": bad_epochs,
            })
            write_metrics_csv(run_dir / ckpt.METRICS, history)
            manifest.update(epochs_completed=epoch, best=best)
            ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
            tracker.log_epoch(row)
            if progress:
                progress(epoch / train_config.epochs,
                         f"epoch {epoch}/{train_config.epochs}: val loss {row['val/loss']:.4f}, "
                         f"accuracy {100 * row['val/accuracy']:.2f}%")
            if train_config.patience and bad_epochs >= train_config.patience:
                manifest["stopped_early"] = True
                break

        # 5) the best weights back into the model; curves, predictions table, artifact
        ckpt.load_weights(model, run_dir / ckpt.WEIGHTS)
        model.eval()
        plot_curves(run_dir / ckpt.CURVES, history, f"{run_dir.name}: {_describe(model_config)}")
        if train_config.wandb and train_config.logged_predictions:
            tracker.log_predictions(_prediction_rows(model, val_data, train_config.logged_predictions))
        tracker.log_checkpoint(_artifact_name(run_dir.name), [run_dir / ckpt.WEIGHTS, run_dir / ckpt.MANIFEST])
        manifest["status"] = "finished"
        ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
        tracker.finish()
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
        if history:
            plot_curves(run_dir / ckpt.CURVES, history, f"{run_dir.name}: {_describe(model_config)} (failed)")
        tracker.finish(exit_code=1)
        raise
    return TrainResult(run_dir, model, manifest, history)


def _describe(config: ModelConfig) -> str:
    fusion = f" {config.fusion}" if config.family in ("early", "late", "intermediate") else ""
    return f"{config.family}{fusion}, {config.downsample}"


def _artifact_name(name: str) -> str:
    return "model-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", name) or "run")


def _prediction_rows(model, data: PairTensors, count: int) -> list[dict]:
    sample = data.subset(slice(0, count))
    out = predict(model, sample, device=str(data.device.type))
    rgb = sample.rgb.cpu().numpy()
    labels = sample.labels.cpu().numpy().astype(int)
    return [
        {"index": i, "image": rgb[i], "label": CLASS_NAMES[labels[i]],
         "prediction": CLASS_NAMES[int(out.labels[i])], "p_sphere": float(out.probabilities[i])}
        for i in range(len(sample))
    ]


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


@torch.no_grad()
def predict(
    model_or_run: FusionClassifier | ckpt.LoadedRun | TrainResult | str | os.PathLike,
    data: PairTensors,
    *,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    progress: Progress | None = None,
) -> Predictions:
    """Logits, P(sphere) and embeddings for every pair of ``data`` (labels not needed)."""
    if isinstance(model_or_run, (str, os.PathLike)):
        model_or_run = ckpt.load_run(model_or_run)
    model = model_or_run if isinstance(model_or_run, torch.nn.Module) else model_or_run.model
    model = ckpt.unwrap(model)
    if len(data) == 0:
        raise ValueError("data: no pairs to predict")
    device_ = resolve_device(device)
    precision = resolve_precision(precision, device_)
    model.to(device_).eval()
    data = data.to(device_)
    logits, embeddings = [], []
    for i, (inputs, _) in enumerate(data.batches(batch_size)):
        with autocast(device_, precision):
            embedding = model.embed(inputs)
            logits.append(model.head[-1](embedding).squeeze(-1).float().cpu())
        embeddings.append(embedding.float().cpu())
        if progress:
            done = min(len(data), (i + 1) * batch_size)
            progress(done / len(data), f"predicted {done} of {len(data)}")
    logits = torch.cat(logits)
    return Predictions(logits.numpy(), torch.sigmoid(logits).numpy(), torch.cat(embeddings).numpy())

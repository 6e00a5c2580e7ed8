"""Running a model: the device and precision it runs in, and its outputs for a set of pairs.

    from mm_models import load_run, predict, outputs_of
    run = load_run("runs/add")
    out = predict(run, val_data)                   # a classifier: logits, probabilities, embeddings
    features = outputs_of("runs/cilp", val_data)   # any model: its outputs as numpy arrays

The device is CUDA when present (``auto``); the precision is bf16 autocast where it
is faster (CUDA with bf16, or a CPU where a short probe measures it faster), else
fp32. The training loop (:mod:`mm_models.engine`) runs its models through the same
functions, so a model predicts as it was validated.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import distributed
from .choices import CLASS_NAMES, DEVICES, PRECISIONS, check_choice
from .data import PairTensors
from .losses import Outputs
from .placement import place
from .stages import LoadedRun, as_module

#: ``progress(fraction done, label)``
Progress = Callable[[float, str], None]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (one of :data:`~mm_models.choices.DEVICES`) stands for; under ``torchrun`` this
    process's own GPU. ``ValueError`` when CUDA is asked for and there is none (or too few)."""
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
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def bf16_helps_on_cpu() -> bool:
    """Whether bf16 autocast makes a conv training step faster on this CPU (probed once).

    CPUs with native bf16 differ: on some bf16 trains these networks faster, on others
    slower. The probe times one mid-sized conv layer forward + backward in both
    precisions and asks bf16 to be clearly faster.
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
    """The context a forward pass runs in: bf16 autocast for ``bf16``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def concat_outputs(batches: list[Outputs]) -> Outputs:
    """Per-batch outputs joined along the batch; a scalar (the logit scale) keeps its last value."""
    return {key: torch.cat([b[key] for b in batches]) if batches[-1][key].ndim else batches[-1][key]
            for key in batches[-1]}


def inference_batch_size(device: torch.device) -> int:
    """The batch that predicts fastest on ``device``: 256 on a GPU; 32 on a CPU, where a batch's
    activations then stay in cache (1.3-1.5x the pairs/s of 256 on a 2-core AMD EPYC, fp32)."""
    return 256 if device.type == "cuda" else 32


@torch.no_grad()
def infer(model, data: PairTensors, *, batch_size: int | None, device: torch.device, precision: str,
          progress: Progress | None = None) -> Outputs:
    """The model's outputs for every pair, in order, concatenated (eval mode, no gradients);
    ``batch_size`` None: :func:`inference_batch_size`."""
    model.eval()
    batch_size = batch_size or inference_batch_size(device)
    outputs = []
    for i, (inputs, _) in enumerate(data.batches(batch_size)):
        with autocast(device, precision):
            outputs.append({k: v.float() for k, v in model(inputs).items()})
        if progress:
            done = min(len(data), (i + 1) * batch_size)
            progress(done / len(data), f"predicted {done} of {len(data)}")
    return concat_outputs(outputs)


@dataclass
class Predictions:
    """A classifier's predictions. Two classes: one logit per pair, ``probabilities`` = sigmoid =
    P(class 1, sphere). N > 2 classes: N logits per pair, ``probabilities`` = their softmax."""

    logits: np.ndarray  # (N,) float32, or (N, C) for C > 2 classes
    probabilities: np.ndarray  # (N,) P(class 1), or (N, C) per class
    embeddings: np.ndarray  # (N, E) the head's penultimate activations

    @property
    def num_classes(self) -> int:
        return 2 if self.logits.ndim == 1 else self.logits.shape[1]

    @property
    def class_probabilities(self) -> np.ndarray:
        """``(N, C)``: each class's probability, for two classes too."""
        if self.probabilities.ndim == 2:
            return self.probabilities
        return np.stack([1 - self.probabilities, self.probabilities], axis=1)

    @property
    def labels(self) -> np.ndarray:
        """Predicted class index per pair (two classes: 0 cube, 1 sphere)."""
        if self.logits.ndim == 1:
            return (self.logits > 0).astype(np.int64)
        return self.logits.argmax(1).astype(np.int64)

    @property
    def confidences(self) -> np.ndarray:
        """``(N,)``: the predicted class's probability."""
        return np.take_along_axis(self.class_probabilities, self.labels[:, None], axis=1)[:, 0]

    @property
    def label_names(self) -> list[str]:
        """The predicted classes' names, two classes (cube, sphere); for more see :meth:`names`."""
        return self.names(CLASS_NAMES)

    def names(self, class_names: tuple[str, ...] | list[str]) -> list[str]:
        """The predicted classes' names, ``class_names`` in class-index order."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"class_names: expected {self.num_classes} names, got {len(class_names)}")
        return [class_names[i] for i in self.labels]


def outputs_of(
    model_or_run: nn.Module | LoadedRun | str | os.PathLike,
    data: PairTensors,
    *,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Every output of a model (or a loaded run, a train result, a run folder) for every pair of
    ``data``, as numpy arrays (labels not needed).

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
    """Logits, probabilities and embeddings of a classifier for every pair of ``data``; the options are
    :func:`outputs_of`'s."""
    outputs = outputs_of(model_or_run, data, **options)
    if "logits" not in outputs:
        raise ValueError(f"this model predicts no classes (its outputs: {', '.join(outputs)}); "
                         f"use outputs_of for its embeddings")
    logits = torch.from_numpy(outputs["logits"])
    probabilities = torch.sigmoid(logits) if logits.dim() == 1 else torch.softmax(logits, 1)
    return Predictions(outputs["logits"], probabilities.numpy(), outputs["embedding"])

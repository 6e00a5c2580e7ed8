"""Classification metrics (two classes or N) and resource measurements."""

from __future__ import annotations

import resource

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def binary_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Loss (BCE with logits), accuracy, precision, recall and F1 for label 1 ("sphere")."""
    logits, targets = logits.float(), targets.float()
    predicted = logits > 0
    positive = targets > 0.5
    true_pos = (predicted & positive).sum().item()
    pred_pos, actual_pos = predicted.sum().item(), positive.sum().item()
    precision = true_pos / pred_pos if pred_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "loss": F.binary_cross_entropy_with_logits(logits, targets).item(),
        "accuracy": (predicted == positive).float().mean().item(),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


@torch.no_grad()
def multiclass_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Loss (cross-entropy), accuracy, precision, recall and F1 of each class ``precision_<k>``, ...,
    and their unweighted means ``macro_precision``, ``macro_recall``, ``macro_f1``; ``logits`` ``(B, N)``."""
    logits, targets = logits.float(), targets.long()
    classes = logits.shape[1]
    predicted = logits.argmax(1)
    confusion = torch.zeros(classes, classes, dtype=torch.int64, device=logits.device)
    confusion.index_put_((targets, predicted), torch.ones_like(targets), accumulate=True)
    true_pos = confusion.diagonal().double()
    predicted_count, actual_count = confusion.sum(0).double(), confusion.sum(1).double()
    precision = torch.where(predicted_count > 0, true_pos / predicted_count.clamp(min=1), 0.0)
    recall = torch.where(actual_count > 0, true_pos / actual_count.clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    row = {"loss": F.cross_entropy(logits, targets).item(), "accuracy": (predicted == targets).float().mean().item()}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        row.update({f"{name}_{k}": values[k].item() for k in range(classes)})
        row[f"macro_{name}"] = values.mean().item()
    return row


def classification_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """:func:`binary_metrics` of one logit per pair ``(B,)``, :func:`multiclass_metrics` of ``(B, N)``."""
    return binary_metrics(logits, targets) if logits.dim() == 1 else multiclass_metrics(logits, targets)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        pass  # elsewhere the peak RSS counts from the process's start


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or peak process RSS, since the last :func:`reset_peak_memory`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

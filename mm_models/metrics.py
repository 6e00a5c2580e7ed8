"""Binary-classification metrics and resource measurements."""

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

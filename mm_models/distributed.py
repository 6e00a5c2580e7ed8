"""Training on several processes: ``torchrun`` and DistributedDataParallel.

    torchrun --nproc-per-node 4 -m cilp_plugin.cli train cilp-assessment --family intermediate

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup` joins the
process group once: NCCL for CUDA tensors (one GPU per process, ``cuda:LOCAL_RANK``)
and gloo for CPU tensors. Every process holds the whole data; the batch size stays
the global batch, and each process trains on its contiguous share of every global
batch (:func:`shard_bounds`). Rank 0 alone writes files; :func:`on_main` runs a step
there and hands its result, or its error, to every process.

Outside ``torchrun`` nothing here starts anything: the world is one process, its
rank 0, and every function is the identity or a plain call.
"""

from __future__ import annotations

import atexit
import os
import pickle
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group of a ``torchrun`` launch, once (nothing outside ``torchrun``)."""
    if not launched() or not dist.is_available() or dist.is_initialized():
        return
    if local_rank() < torch.cuda.device_count():  # NCCL works on the current device
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes (true outside ``torchrun``)."""
    return rank() == 0


# --------------------------------------------------------------------------- shares of a batch


def shard_bounds(total: int, of_rank: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of a rank's contiguous share of ``total`` rows (sizes differ by at most 1)."""
    world, r = world_size(), rank() if of_rank is None else of_rank
    return total * r // world, total * (r + 1) // world


def shard_sizes(total: int) -> list[int]:
    """The number of rows of every rank's share of ``total`` rows, in rank order."""
    return [stop - start for start, stop in (shard_bounds(total, r) for r in range(world_size()))]


# --------------------------------------------------------------------------- collectives


def _all_gather_rows(local: Tensor, total: int) -> Tensor:
    sizes = shard_sizes(total)
    padding = max(sizes) - len(local)
    if padding:
        local = torch.cat([local, local.new_zeros((padding, *local.shape[1:]))])
    parts = [torch.empty_like(local) for _ in sizes]
    dist.all_gather(parts, local.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def gather_rows(local: Tensor, total: int) -> Tensor:
    """Every rank's share (:func:`shard_bounds`) of ``total`` rows, joined in rank order; no gradient."""
    if not active():
        return local
    with torch.no_grad():
        return _all_gather_rows(local, total)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' rows; the gradient of this rank's rows is the sum of every rank's gradient for them."""

    @staticmethod
    def forward(ctx, local: Tensor, total: int) -> Tensor:
        ctx.rows = slice(*shard_bounds(total))
        return _all_gather_rows(local, total)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows], None


def gather_with_grad(local: Tensor, total: int) -> Tensor:
    """:func:`gather_rows` through which the loss of every rank reaches this rank's rows (as
    open_clip's ``gather_with_grad``): a loss over the global batch, split in shares across
    ranks, gives each rank's features the gradient of the whole loss."""
    return _GatherWithGrad.apply(local, total) if active() else local


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over the ranks (a copy; ``tensor`` itself outside ``torchrun``)."""
    if not active():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable value)."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers, in place, on every rank."""
    if active():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def on_main(step: Callable[[], T]) -> T:
    """Run ``step`` on rank 0 only; every rank returns its result, or raises its error.

    Each call is a synchronisation point: no rank passes it before rank 0 finished
    ``step``, so a file that rank 0 writes there exists (on a shared filesystem) for all.
    """
    if not active():
        return step()
    outcome = None
    if is_main():
        try:
            outcome = (True, step())
        except Exception as exc:
            broadcast_object((False, _portable(exc)))
            raise
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def _portable(exc: Exception) -> Exception:
    """``exc``, or a ``RuntimeError`` that says it where ``exc`` does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel, with synchronised batch norms on CUDA (``model``
    itself outside ``torchrun``). PyTorch syncs batch norms on GPUs only: on CPUs each process
    normalises with the statistics of its own share of the batch."""
    if not active():
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

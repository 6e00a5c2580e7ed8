"""One process of a ``torchrun`` launch in the distributed tests (not a test module).

    torchrun --standalone --nproc-per-node 2 distributed_worker.py DATA_DIR RUN_DIR OUT_DIR MODEL BATCH EPOCHS

The runs train on ``$CILP_WORKER_DEVICE`` (default ``cpu``; ``cuda``: each process on its own GPU, NCCL).

With ``MODEL`` (a name in ``MODELS``), the pairs ``DATA_DIR/{train,val}.safetensors``
and a global batch of ``BATCH`` pairs, each rank writes to ``OUT_DIR``:
``rank<R>-gradients.safetensors``, the gradients after one step on the first batch;
``rank<R>-weights.safetensors``, the weights of the model a run of ``EPOCHS`` epochs in
``RUN_DIR`` returned; ``rank<R>.json``, that run's history and manifest, its history once
resumed for one more epoch, and the error that an ``on_main`` step failing on rank 0
raised on this rank. The tests call the same
functions in their own process for the one-process reference.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))

from mm_testdata import TINY, load_tensors  # noqa: E402

from mm_models import CILPConfig, ModelSpec, TrainConfig, build, distributed, train  # noqa: E402
from mm_models.engine import share_of_loss  # noqa: E402
from mm_models.stages import objective_for  # noqa: E402

# the CILP's LiDAR standardised per channel: with the isotropic default, float rounding in this tiny
# model grew to weight differences of up to 7e-4 relative after 3 epochs (6 of the 144 weights of a
# first convolution), beyond the 1e-4 that checks 2 processes train as 1; with this input it stays within
MODELS = {"tiny": TINY, "cilp": CILPConfig(widths=(4, 8, 8, 8), embed_dim=16, vector_hidden=16,
                                           lidar_input="standardize")}


def split(data_dir: Path, name: str):
    return load_tensors(data_dir / f"{name}.safetensors")


def one_step_gradients(data_dir: Path, model: str, batch_size: int) -> dict[str, torch.Tensor]:
    """The gradients of the first ``batch_size`` training pairs' loss, this rank's share on this rank."""
    distributed.setup()
    torch.manual_seed(0)
    spec = ModelSpec.of(MODELS[model])
    objective = objective_for(spec, batch_size)
    module = build(spec)
    trained = distributed.wrap(module, torch.device("cpu"))
    rows = torch.arange(batch_size)
    inputs, labels = split(data_dir, "train").batch(rows[slice(*distributed.shard_bounds(batch_size))])
    outputs = trained(inputs)
    if distributed.world_size() == 1:
        objective.loss(outputs, labels).backward()
    else:
        share_of_loss(objective, outputs, labels, batch_size).backward()
    return {name: p.grad.detach().clone().contiguous() for name, p in module.named_parameters() if p.grad is not None}


def train_run(data_dir: Path, run_dir: Path, model: str, batch_size: int, epochs: int, resume: bool = False,
              device: str | None = None):
    config = TrainConfig(epochs=epochs, batch_size=batch_size, precision="fp32",
                         device=device or os.environ.get("CILP_WORKER_DEVICE", "cpu"))
    return train(MODELS[model], config, split(data_dir, "train"), split(data_dir, "val"), run_dir, resume=resume)


def error_from_rank_0() -> str:
    def fail():
        raise ValueError(f"raised on rank {distributed.rank()}")

    try:
        distributed.on_main(fail)
    except ValueError as exc:
        return str(exc)
    return "no error"


def main(data_dir: Path, run_dir: Path, out_dir: Path, model: str, batch_size: int, epochs: int) -> None:
    rank = distributed.rank()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(one_step_gradients(data_dir, model, batch_size), out_dir / f"rank{rank}-gradients.safetensors")
    error = error_from_rank_0()
    result = train_run(data_dir, run_dir, model, batch_size, epochs)
    save_file({k: v.detach().contiguous() for k, v in result.model.state_dict().items()},
              out_dir / f"rank{rank}-weights.safetensors")
    resumed = train_run(data_dir, run_dir, model, batch_size, epochs + 1, resume=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"history": result.history, "manifest": result.manifest,
                                                          "resumed": resumed.history, "error": error}))


if __name__ == "__main__":
    data, runs, out, name, batch, epochs = sys.argv[1:]
    main(Path(data), Path(runs), Path(out), name, int(batch), int(epochs))

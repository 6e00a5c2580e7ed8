"""RGB + LiDAR models (fusion classifiers, CILP and its stages) and their training engine (torch only).

    from mm_models import ModelConfig, TrainConfig, PairTensors, build_model, train, load_run, predict
    from mm_models import CILPConfig, ModelSpec, parent      # the CILP stages: see mm_models.stages
    from mm_models.choices import FAMILIES, DEVICES          # the named choices, without importing torch

The names below are imported on first use (PEP 562), so ``import mm_models.choices``
(or ``from mm_models import choices``) does not import torch.

The package, by concern: ``choices`` (named choices, config helpers), ``encoders``,
``fusion``, ``inputs``, ``factory`` and ``cilp`` (the models), ``stages`` (specs, parent
runs, loading), ``losses`` and ``metrics`` (objectives), ``data``, ``reading``, ``arrays``
and ``placement`` (pairs as tensors), ``engine`` (the training loop), ``inference``
(devices, precisions, predictions), ``checkpoint``, ``tracking``, ``distributed``,
``presets``, ``assessment``, ``report``, ``shipping``, ``figures``, ``augment``.
"""

from __future__ import annotations

import importlib

#: public name -> the submodule that defines it
_NAMES = {
    "CheckpointError": "checkpoint", "load_weights": "checkpoint", "save_weights": "checkpoint",
    "CILP": "cilp", "CILPConfig": "cilp", "ProjectorConfig": "cilp", "RGBToLiDARConfig": "cilp",
    "CLASS_NAMES": "choices", "FAMILIES": "choices", "FUSION_MODES": "choices",
    "PairTensors": "data", "fingerprint": "data",
    "Embedder": "encoders",
    "TrainConfig": "engine", "TrainResult": "engine", "train": "engine",
    "Predictions": "inference", "outputs_of": "inference", "predict": "inference",
    "ModelConfig": "factory", "build_model": "factory", "count_parameters": "factory",
    "Fusion": "fusion", "FusionClassifier": "fusion",
    "Classification": "losses", "Contrastive": "losses", "Regression": "losses",
    "KINDS": "stages", "LoadedRun": "stages", "ModelSpec": "stages", "Parent": "stages", "build": "stages",
    "load_run": "stages", "parent": "stages",
}
_SUBMODULES = (
    "arrays", "assessment", "augment", "checkpoint", "choices", "cilp", "data", "distributed", "encoders", "engine",
    "factory", "figures", "fusion", "inference", "inputs", "losses", "metrics", "placement", "presets", "reading",
    "report", "shipping", "stages", "tracking",
)

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})

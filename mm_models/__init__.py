"""RGB + LiDAR fusion models and their training engine (torch only).

    from mm_models import ModelConfig, TrainConfig, PairTensors, build_model, train, load_run, predict
"""

from .checkpoint import CheckpointError, LoadedRun, load_run, load_weights, save_weights
from .data import CLASS_NAMES, PairTensors, fingerprint, load_tensors, save_tensors
from .encoders import Embedder
from .engine import Predictions, TrainConfig, TrainResult, predict, train
from .factory import FAMILIES, ModelConfig, build_model, count_parameters
from .fusion import FUSION_MODES, Fusion, FusionClassifier

__all__ = [
    "CLASS_NAMES", "CheckpointError", "Embedder", "FAMILIES", "FUSION_MODES", "Fusion",
    "FusionClassifier", "LoadedRun", "ModelConfig", "PairTensors", "Predictions", "TrainConfig",
    "TrainResult", "build_model", "count_parameters", "fingerprint", "load_run", "load_weights",
    "load_tensors", "predict", "save_tensors", "save_weights", "train",
]

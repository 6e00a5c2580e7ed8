"""RGB + LiDAR models (fusion classifiers, CILP and its stages) and their training engine (torch only).

    from mm_models import ModelConfig, TrainConfig, PairTensors, build_model, train, load_run, predict
    from mm_models import CILPConfig, ModelSpec, parent      # the CILP stages: see mm_models.stages
"""

from .checkpoint import CheckpointError, load_weights, save_weights
from .cilp import CILP, CILPConfig, ProjectorConfig, RGBToLiDARConfig
from .data import CLASS_NAMES, PairTensors, fingerprint, load_tensors, save_tensors
from .encoders import Embedder
from .engine import Predictions, TrainConfig, TrainResult, outputs_of, predict, train
from .factory import FAMILIES, ModelConfig, build_model, count_parameters
from .fusion import FUSION_MODES, Fusion, FusionClassifier
from .losses import Classification, Contrastive, Regression
from .stages import KINDS, LoadedRun, ModelSpec, Parent, build, load_run, parent

__all__ = [
    "CILP", "CILPConfig", "CLASS_NAMES", "CheckpointError", "Classification", "Contrastive", "Embedder",
    "FAMILIES", "FUSION_MODES", "Fusion", "FusionClassifier", "KINDS", "LoadedRun", "ModelConfig", "ModelSpec",
    "PairTensors", "Parent", "Predictions", "ProjectorConfig", "RGBToLiDARConfig", "Regression", "TrainConfig",
    "TrainResult", "build", "build_model", "count_parameters", "fingerprint", "load_run", "load_tensors",
    "load_weights", "outputs_of", "parent", "predict", "save_tensors", "save_weights", "train",
]

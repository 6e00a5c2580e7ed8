"""Every named choice of the library, and the two helpers that validate configs; no torch.

    from mm_models.choices import DEVICES, FAMILIES, check_choice
    check_choice("family", "late", FAMILIES)              # ValueError naming the field otherwise

The modules that use a choice import it from here, and so can a command-line
interface's ``choices=`` or a form's enum without importing torch
(``import mm_models.choices`` imports the standard library alone).
"""

from __future__ import annotations

import dataclasses

# --------------------------------------------------------------------------- where and how a model runs

#: where a model trains or predicts: auto picks CUDA when present
DEVICES = ("auto", "cpu", "cuda")
#: the arithmetic: auto picks bf16 autocast where the hardware has it and it helps, else fp32
PRECISIONS = ("auto", "fp32", "bf16")
#: where the pairs live while a model trains (``TrainConfig.data``, ``--data``; mm_models.placement)
DATA_MODES = ("auto", "resident", "streamed")
#: training-time augmentations (mm_models.augment)
AUGMENTATIONS = ("none", "rgb-affine")

# --------------------------------------------------------------------------- what a model is

#: label index -> name; the model's logit is for index 1
CLASS_NAMES = ("cube", "sphere")
#: the original's inputs: 64 x 64 RGB images and 64 x 64 LiDAR range images (azimuth x zenith beams)
REFERENCE_SIZE = (64, 64)
#: the two inputs of a pair
MODALITIES = ("rgb", "lidar")
#: the classifier families: three fusions and the two single-modality baselines
FAMILIES = ("early", "late", "intermediate", "rgb", "lidar")
#: the families that fuse both modalities, with a fusion to choose
FUSED_FAMILIES = ("early", "late", "intermediate")
#: how two modalities combine
FUSION_MODES = ("concat", "add", "mul")
#: the reference's fusion of each family (late and early fusion concatenate, intermediate adds)
DEFAULT_FUSION = {"early": "concat", "late": "concat", "intermediate": "add", "rgb": "concat", "lidar": "concat"}
#: the downsampling layer after each conv block of an embedder
DOWNSAMPLE_MODES = ("maxpool", "strided")
#: how RGB enters a model: standardised with training-split statistics, or the reference's raw [0, 1]
RGB_INPUTS = ("standardize", "raw")
#: how LiDAR XYZA enters a model (after masking): XYZ over one length fitted on the training split
#: (isotropic), per channel standardised (standardize, the default of runs before it), in metres, or as
#: the one-channel range the file stores (the assessment's own LiDAR classifier's input)
LIDAR_INPUTS = ("isotropic", "standardize", "metres", "range")
#: CILP's LiDAR encoder: trained with the RGB encoder, or the LiDAR classifier locked (parent 'lidar')
LIDAR_TOWERS = ("trained", "locked")
#: the parts of the rgb2lidar classifier (mm_models.cilp.RGBToLiDAR) that can be kept frozen while fine-tuning
RGB2LIDAR_PARTS = ("rgb_encoder", "projector", "head")

# --------------------------------------------------------------------------- runs

#: what a run trained (mm_models.stages.KINDS holds how to build and train each)
KIND_NAMES = ("classifier", "cilp", "projector", "rgb2lidar")
#: the stages of the cross-modal pipeline, in training order; a parent role is named after its stage
PIPELINE = ("lidar", "cilp", "projector", "rgb2lidar")
#: ``torch.compile`` modes a training can ask for (``TrainConfig.compile``; True means default)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the presets of epochs, learning rate and batch size (mm_models.presets); ``auto`` picks by device
PRESETS_NAMES = ("cpu", "gpu", "demo")
#: what a ``--preset`` option accepts: a preset's name, or auto (gpu on CUDA, else cpu; never demo)
PRESET_CHOICES = ("auto", *PRESETS_NAMES)
#: what a preset has settings for: every fusion classifier, and each CILP stage
PRESET_MODELS = ("fusion", *PIPELINE)


def check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{field}: unknown value {value!r}; expected one of {', '.join(allowed)}")


def check_size(field: str, value) -> tuple[int, int]:
    """``value`` as ``(rows, columns)``: two positive integers, or one for a square; ``ValueError`` naming
    ``field`` otherwise."""
    sides = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value or ())
    if len(sides) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sides):
        raise ValueError(f"{field}: expected two positive integers (rows, columns) or one, got {value!r}")
    return sides


def legacy_sizes(data: dict) -> dict:
    """A config dict saved before ``beams`` existed, when ``image_size`` was the side of both inputs."""
    return {"beams": data["image_size"], **data} if "image_size" in data else data


def config_from_dict(cls, data: dict, what: str):
    """Build the dataclass ``cls`` from a plain dict, naming any field it does not have."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    return cls(**data)

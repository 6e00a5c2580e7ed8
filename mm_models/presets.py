"""How long and how fast each model trains: a CPU preset and the reference's GPU protocol.

    from mm_models.presets import train_config
    config = train_config("cilp", "auto", precision="bf16")   # a TrainConfig: the preset's numbers
    config = train_config("fusion", "cpu", epochs=3)          # any number given overrides the preset's

A preset has an entry per CILP stage and one, ``fusion``, for every fusion model.
``cpu``, the default without a GPU, is sized for about 2 x 1,000 pairs (80/20) of data
unlike the generator's defaults too: on objects at 2-5 m, where only shape tells cubes from
spheres, intermediate fusion needs its 6 epochs and the LiDAR classifier its 8 to reach 97 %
(docs/realism.md). ``gpu`` follows the reference protocol (batch 32, more epochs; the
reference trained on a 30 % subset of 2 x 9,999 pairs, see ``cilp split --subset``).
``demo`` is what ``make demo`` trains on a CPU: the fewest epochs that keep every model at
97 % or more on ``cilp generate``'s default scenes, whose classes also differ in size and are
learnt in a few epochs (docs/training.md has the measurements). It is never picked by
``auto``: on other data it stops short.
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import PRESET_MODELS, PRESETS_NAMES, check_choice
from .engine import TrainConfig
from .inference import resolve_device


@dataclass(frozen=True)
class StageSettings:
    epochs: int
    lr: float
    batch_size: int = 32


PRESETS: dict[str, dict[str, StageSettings]] = {
    "cpu": {
        "fusion": StageSettings(epochs=6, lr=1e-3),
        "lidar": StageSettings(epochs=8, lr=1e-3),
        "cilp": StageSettings(epochs=6, lr=1e-3),
        "projector": StageSettings(epochs=5, lr=1e-3),
        # fine-tuning a chain that classifies already: at 1e-3 its first epoch falls from 99.25 to
        # 91.5 % and it ends at 98.75 %; at 1e-4 it ends at 99.75 % (docs/realism.md)
        "rgb2lidar": StageSettings(epochs=2, lr=1e-4),
    },
    "gpu": {
        "fusion": StageSettings(epochs=15, lr=1e-3),
        "lidar": StageSettings(epochs=15, lr=1e-3),
        "cilp": StageSettings(epochs=40, lr=1e-3),
        "projector": StageSettings(epochs=40, lr=1e-3),
        "rgb2lidar": StageSettings(epochs=10, lr=1e-3),
    },
    "demo": {
        "fusion": StageSettings(epochs=2, lr=1e-3),
        "lidar": StageSettings(epochs=2, lr=1e-3),
        "cilp": StageSettings(epochs=6, lr=1e-3),
        "projector": StageSettings(epochs=3, lr=1e-3),
        "rgb2lidar": StageSettings(epochs=1, lr=1e-4),
    },
}


def resolve_preset(name: str, device: str = "cpu") -> str:
    """``name``, or for ``auto`` the preset of ``device``'s type: ``gpu`` on CUDA, else ``cpu``."""
    if name == "auto":
        name = "gpu" if device == "cuda" else "cpu"
    check_choice("preset", name, PRESETS_NAMES)
    return name


def train_config(model: str, preset: str = "auto", *, epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None, device: str = "auto", **options) -> TrainConfig:
    """How ``model`` (``fusion`` or a CILP stage) trains under ``preset`` on ``device``: the preset's
    epochs, learning rate and batch size unless given; ``options`` are the rest of ``TrainConfig``."""
    name = resolve_preset(preset, resolve_device(device).type)
    check_choice("model", model, PRESET_MODELS)
    settings = PRESETS[name][model]
    return TrainConfig(epochs=settings.epochs if epochs is None else epochs, lr=settings.lr if lr is None else lr,
                       batch_size=settings.batch_size if batch_size is None else batch_size, device=device,
                       preset=name, **options)

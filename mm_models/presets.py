"""How long and how fast each model trains: a CPU preset and the reference's GPU protocol.

    from mm_models.presets import preset_for
    settings = preset_for("cpu")["cilp"]        # StageSettings(epochs=..., lr=..., batch_size=...)

A preset has an entry per CILP stage and one, ``fusion``, for every fusion model.
``cpu`` is sized so that the demo's models train in a few minutes on 2 cores on the
default data (2 x 1,000 pairs, 80/20) and reach the targets in the README under
fp32 and bf16 alike. ``gpu`` follows the reference protocol (batch 32, more epochs;
the reference trained on a 30 % subset of 2 x 9,999 pairs, see ``cilp split --subset``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .encoders import check_choice

#: the stages of the cross-modal pipeline, in training order
STAGES = ("lidar", "cilp", "projector", "rgb2lidar")
PRESETS_NAMES = ("cpu", "gpu")


@dataclass(frozen=True)
class StageSettings:
    epochs: int
    lr: float
    batch_size: int = 32


PRESETS: dict[str, dict[str, StageSettings]] = {
    "cpu": {
        "fusion": StageSettings(epochs=6, lr=1e-3),
        "lidar": StageSettings(epochs=6, lr=1e-3),
        "cilp": StageSettings(epochs=10, lr=1e-3),
        "projector": StageSettings(epochs=10, lr=1e-3),
        "rgb2lidar": StageSettings(epochs=4, lr=1e-3),
    },
    "gpu": {
        "fusion": StageSettings(epochs=15, lr=1e-3),
        "lidar": StageSettings(epochs=15, lr=1e-3),
        "cilp": StageSettings(epochs=40, lr=1e-3),
        "projector": StageSettings(epochs=40, lr=1e-3),
        "rgb2lidar": StageSettings(epochs=10, lr=1e-3),
    },
}


def preset_for(name: str, device: str = "cpu") -> dict[str, StageSettings]:
    """The preset ``name`` (``auto``: ``gpu`` on CUDA, else ``cpu``)."""
    if name == "auto":
        name = "gpu" if device == "cuda" else "cpu"
    check_choice("preset", name, PRESETS_NAMES)
    return PRESETS[name]

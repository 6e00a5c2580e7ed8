"""What a CILP training asks for, defined once.

:class:`CILPRequest` holds the options of :func:`~cilp_plugin.runs.pipeline.train_cilp`, each with
the values it accepts, its help and its form label. The ``cilp train-cilp`` flags and the
``train_cilp`` operator's form are made from it, and it checks every value before anything trains:

    request = CILPRequest(stages="projector,rgb2lidar", epochs=4, device="cpu")
    train_cilp(dataset, request)

The options every training shares (:data:`TRAINING_OPTIONS`: preset, device, precision, data,
...) also make ``cilp train``'s flags and the ``train_fusion`` form's fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_models.choices import DATA_MODES, DEVICES, LIDAR_TOWERS, PIPELINE, PRECISIONS, PRESET_CHOICES, check_choice


@dataclass(frozen=True)
class Option:
    """One option of a training: its name and Python type, its default, the values it accepts,
    what it does (``help``: the flag's help and the field's description) and the form's label.
    ``many``: a list of ``choices`` (a comma-separated flag); ``form``: shown in the App's form."""

    name: str
    kind: type
    default: Any
    help: str
    label: str
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    many: bool = False
    form: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def option(kind: type, default, help: str, label: str, **more):
    """A request field that carries its :class:`Option` (the name is the field's)."""
    return field(default=default, metadata={"option": dict(kind=kind, help=help, label=label, **more)})


def options(request_type) -> tuple[Option, ...]:
    """The options of a request class, in the order of its fields."""
    return tuple(Option(f.name, default=f.default, **f.metadata["option"])
                 for f in dataclasses.fields(request_type) if "option" in f.metadata)


def parse_stages(stages) -> tuple[str, ...]:
    """Stages from a list or a comma-separated string, in pipeline order."""
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stages = list(stages or [])
    unknown = [s for s in stages if s not in PIPELINE]
    if unknown or not stages:
        raise ValueError(f"stages: expected some of {', '.join(PIPELINE)}, got {', '.join(map(str, stages)) or 'none'}")
    return tuple(s for s in PIPELINE if s in stages)


@dataclass(frozen=True)
class CILPRequest:
    """The options of a CILP training, checked when made (a ``ValueError`` names the option)."""

    stages: tuple[str, ...] = option(str, PIPELINE, "the stages to train; a later stage alone reuses the dataset's "
                                     "runs of the earlier ones", "Stages", choices=PIPELINE, many=True)
    epochs: int | dict | None = option(int, None, "epochs of every stage (default: the preset's)",
                                       "Epochs of every stage", minimum=1)  # from Python also stage -> epochs
    batch_size: int | None = option(int, None, "batch size of every stage (default: the preset's)",
                                    "Batch size of every stage", minimum=1)
    preset: str = option(str, "auto", "epochs, learning rate and batch size (mm_models.presets): auto picks gpu on "
                         "CUDA, cpu otherwise", "Preset", choices=PRESET_CHOICES)
    device: str = option(str, "auto", "auto: CUDA when present", "Device", choices=DEVICES)
    precision: str = option(str, "auto", "auto: bf16 where it is faster (CUDA; a CPU where a short check measures "
                            "it), fp32 otherwise", "Precision", choices=PRECISIONS)
    data: str = option(str, "auto", "where the pairs live while training: resident on the device, or streamed to it "
                       "a batch at a time from their memory-mapped cache; auto: resident while they fit half the "
                       "memory available (RAM, or the GPU's)", "Data", choices=DATA_MODES)
    lidar_tower: str = option(str, "locked", "CILP's LiDAR encoder: locked (the lidar stage's classifier, frozen: the "
                              "RGB side learns the classes) or trained with the RGB encoder (the reference's)",
                              "CILP's LiDAR encoder", choices=LIDAR_TOWERS)
    lidar_from: Path | None = option(Path, None, "the assessment's pretrained lidar_cnn.pt: the lidar stage imports "
                                     "it instead of training one", "Import the assessment's lidar_cnn.pt as the "
                                     "lidar stage")
    seed: int = option(int, 42, "seed of the weights' initialisation and the batches' order", "Seed")
    wandb: bool = option(bool, False, "track with wandb (offline unless WANDB_API_KEY is set)", "Track with wandb")
    run_prefix: str = option(str, "", "run names become PREFIX + stage (e.g. exp1_cilp)", "Run name prefix")
    train_tag: str = option(str, "train", "train on the pairs with this tag", "Train on pairs tagged")
    val_tag: str = option(str, "val", "select the best checkpoint on the pairs with this tag",
                          "Select the checkpoint on pairs tagged")
    runs_dir: Path | None = option(Path, None, "where runs go (default: $CILP_RUNS_DIR or ~/fiftyone/cilp/runs)",
                                   "Runs folder", form=False)
    overwrite: bool = option(bool, False, "replace runs of the same names", "Replace runs of the same names")
    resume: bool = option(bool, False, "continue interrupted runs, or train finished ones up to the epochs given",
                          "Train runs of the same names further")

    def __post_init__(self):
        object.__setattr__(self, "stages", parse_stages(self.stages))
        for opt in options(type(self)):
            value = getattr(self, opt.name)
            if opt.choices and not opt.many:
                check_choice(opt.name, value, opt.choices)
            if opt.minimum is not None and isinstance(value, int) and value < opt.minimum:
                raise ValueError(f"{opt.name}: expected at least {opt.minimum}, got {value}")
        if isinstance(self.epochs, dict):
            unknown = sorted(map(str, set(self.epochs) - set(PIPELINE)))
            if unknown:
                raise ValueError(f"epochs: unknown stages {', '.join(unknown)}; expected some of {', '.join(PIPELINE)}")
        if self.overwrite and self.resume:
            raise ValueError("overwrite and resume: choose one (resume continues a run, overwrite starts it over)")
        if self.lidar_from is not None and "lidar" not in self.stages:
            raise ValueError("lidar_from: it replaces the lidar stage; include lidar in the stages")

    @classmethod
    def from_values(cls, values: dict) -> CILPRequest:
        """A request from a mapping holding these options among others (parsed flags, a form's
        parameters); a value of ``None`` takes the option's default."""
        names = {opt.name for opt in options(cls)}
        return cls(**{name: value for name, value in values.items() if name in names and value is not None})

    def stage_epochs(self) -> dict[str, int]:
        """Stage -> the epochs asked for (stages not named: the preset's)."""
        if isinstance(self.epochs, dict):
            return dict(self.epochs)
        return {stage: self.epochs for stage in self.stages} if self.epochs is not None else {}


#: the options every training takes (``cilp train`` and ``train_fusion`` too)
TRAINING_OPTIONS = tuple(opt for opt in options(CILPRequest)
                         if opt.name in ("preset", "device", "precision", "data", "seed", "wandb", "train_tag",
                                         "val_tag", "runs_dir", "overwrite", "resume"))

"""Model specs: what a run trained, from which parent runs, and how to rebuild it.

A run's manifest holds a :class:`ModelSpec`::

    {"kind": "projector", "config": {"hidden": [1024, 2048]},
     "parents": {"cilp":  {"run": ".../cilp",  "sha256": "...", "spec": {...}},
                 "lidar": {"run": ".../lidar", "sha256": "...", "spec": {...}}}}

Each kind names its config class, the parents it needs, its objective and how to
build the model from the parents' models. :func:`build` gives the architecture
(parents rebuilt from their nested specs); a checkpoint holds every weight of its
model, parents' included, so :func:`load_run` needs no other file. Training a
stage starts from the parents' weights (:func:`build` with ``load_parents``); a
parent whose checkpoint changed since is refused, when training, resuming and
loading alike.

===========  ==================  ==========================  ===============
kind         config              parents                     objective
===========  ==================  ==========================  ===============
classifier   ModelConfig         -                           Classification
cilp         CILPConfig          lidar (classifier, family   Contrastive
                                 lidar) when its LiDAR tower
                                 is locked; else none
projector    ProjectorConfig     cilp (cilp), lidar          Regression
                                 (classifier, family lidar)
rgb2lidar    RGBToLiDARConfig    projector (projector)       Classification
===========  ==================  ==========================  ===============
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .checkpoint import CheckpointError
from .choices import FUSED_FAMILIES, KIND_NAMES, PIPELINE, REFERENCE_SIZE, check_choice
from .cilp import CILP, CILPConfig, EmbeddingProjection, Projector, ProjectorConfig, RGBToLiDAR, RGBToLiDARConfig
from .factory import ModelConfig, build_model
from .losses import Classification, Contrastive, Objective, Regression


@dataclass(frozen=True)
class Parent:
    """A run a model was built from: its folder, its checkpoint's SHA-256, its spec."""

    run: str
    sha256: str
    spec: ModelSpec

    def to_dict(self) -> dict:
        return {"run": self.run, "sha256": self.sha256, "spec": self.spec.to_dict()}


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    config: Any
    parents: dict[str, Parent] = field(default_factory=dict)

    def __post_init__(self):
        check_choice("kind", self.kind, KIND_NAMES)
        kind = KINDS[self.kind]
        if not isinstance(self.config, kind.config):
            raise ValueError(f"config: a {self.kind} model needs a {kind.config.__name__}, "
                             f"got {type(self.config).__name__}")
        roles = kind.parents(self.config)
        missing = [role for role in roles if role not in self.parents]
        unexpected = sorted(set(self.parents) - set(roles))
        if missing or unexpected:
            raise ValueError(f"parents: this {self.kind} model is built from {', '.join(roles) or 'no parent'}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unexpected {', '.join(unexpected)}" if unexpected else ""))
        for role, parent in self.parents.items():
            roles[role](role, parent.spec)
        kind.check(self)

    def input_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``(channels, height, width)`` of each input the model reads."""
        return KINDS[self.kind].inputs(self)

    @property
    def num_classes(self) -> int | None:
        """The classes a classifier tells apart (rgb2lidar: its LiDAR classifier's); None for others."""
        return KINDS[self.kind].classes(self)

    def describe(self) -> str:
        """A short label, e.g. ``intermediate add, maxpool`` or ``cilp (200-d)``."""
        return KINDS[self.kind].describe(self)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "config": self.config.to_dict(),
                "parents": {role: parent.to_dict() for role, parent in self.parents.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        if not isinstance(data, dict) or "kind" not in data or "config" not in data:
            raise ValueError("spec: expected an object with 'kind' and 'config'")
        check_choice("kind", data["kind"], KIND_NAMES)
        parents = {role: Parent(str(p["run"]), str(p["sha256"]), cls.from_dict(p["spec"]))
                   for role, p in (data.get("parents") or {}).items()}
        return cls(data["kind"], KINDS[data["kind"]].config.from_dict(data["config"]), parents)

    @classmethod
    def of(cls, config) -> ModelSpec:
        """The spec of a parent-less model from its config (``ModelConfig`` -> classifier, ...)."""
        for name, kind in KINDS.items():
            if isinstance(config, kind.config) and not kind.parents(config):
                return cls(name, config)
        raise ValueError(f"config: {type(config).__name__} does not describe a model without parents")


# --------------------------------------------------------------------------- the kinds


def _kind_is(kind: str) -> Callable[[str, ModelSpec], None]:
    def check(role: str, spec: ModelSpec) -> None:
        if spec.kind != kind:
            raise ValueError(f"parent '{role}': expected a {kind} run, got a {spec.kind} run")
    return check


def _lidar_classifier(role: str, spec: ModelSpec) -> None:
    if spec.kind != "classifier" or spec.config.family != "lidar":
        got = f"{spec.config.family} classifier" if spec.kind == "classifier" else f"{spec.kind} run"
        raise ValueError(f"parent '{role}': expected a LiDAR-only classifier (family lidar), got a {got}")


def _same_lidar(what: str, shapes: dict, lidar: ModelSpec) -> None:
    if shapes["lidar"] != lidar.input_shapes()["lidar"]:
        raise ValueError(f"parents: {what} reads LiDAR grids of shape {shapes['lidar']}, "
                         f"the lidar classifier {lidar.input_shapes()['lidar']}: they must agree")


def _check_projector(spec: ModelSpec) -> None:
    _same_lidar("cilp", spec.parents["cilp"].spec.input_shapes(), spec.parents["lidar"].spec)


def _check_locked_tower(spec: ModelSpec) -> None:
    if "lidar" in spec.parents:
        _same_lidar("cilp", spec.config.input_shapes(), spec.parents["lidar"].spec)


@dataclass(frozen=True)
class Kind:
    config: type
    objective: type[Objective]
    build: Callable[[Any, dict[str, nn.Module]], nn.Module]
    inputs: Callable[[ModelSpec], dict]
    describe: Callable[[ModelSpec], str]
    #: config -> the parent roles it needs, each with the check of a parent's spec
    parents: Callable[[Any], dict[str, Callable[[str, ModelSpec], None]]] = lambda config: {}
    check: Callable[[ModelSpec], None] = lambda spec: None
    #: the classes its outputs tell apart (None: not a classifier)
    classes: Callable[[ModelSpec], int | None] = lambda spec: None


def _build_projection(config: ProjectorConfig, parents: dict[str, nn.Module]) -> EmbeddingProjection:
    cilp, lidar = parents["cilp"], parents["lidar"]
    target_features = lidar.head[0].in_features  # the flattened map the LiDAR head reads
    return EmbeddingProjection(cilp.rgb, Projector(cilp.rgb.out_features, config.hidden, target_features), lidar)


def _build_rgb2lidar(config: RGBToLiDARConfig, parents: dict[str, nn.Module]) -> RGBToLiDAR:
    projection = parents["projector"]
    return RGBToLiDAR(projection.rgb_encoder, projection.projector, projection.target.head, config.freeze)


def _classifier_label(spec: ModelSpec) -> str:
    config = spec.config
    fusion = f" {config.fusion}" if config.family in FUSED_FAMILIES else ""
    return f"{config.family}{fusion}, {config.downsample}"


KINDS: dict[str, Kind] = {
    "classifier": Kind(ModelConfig, Classification, lambda config, parents: build_model(config),
                       lambda spec: spec.config.input_shapes(), _classifier_label,
                       classes=lambda spec: spec.config.num_classes),
    "cilp": Kind(CILPConfig, Contrastive, lambda config, parents: CILP(config, parents.get("lidar")),
                 lambda spec: spec.config.input_shapes(),
                 lambda spec: f"cilp ({spec.config.embed_dim}-d, {spec.config.lidar_tower} lidar tower)",
                 parents=lambda config: {"lidar": _lidar_classifier} if config.lidar_tower == "locked" else {},
                 check=_check_locked_tower),
    "projector": Kind(ProjectorConfig, Regression, _build_projection,
                      lambda spec: {**spec.parents["cilp"].spec.input_shapes(),
                                    **spec.parents["lidar"].spec.input_shapes()},
                      lambda spec: "projector (cilp rgb -> lidar embedding)",
                      parents=lambda config: {"cilp": _kind_is("cilp"), "lidar": _lidar_classifier},
                      check=_check_projector),
    "rgb2lidar": Kind(RGBToLiDARConfig, Classification, _build_rgb2lidar,
                      lambda spec: {"rgb": spec.parents["projector"].spec.input_shapes()["rgb"]},
                      lambda spec: "rgb -> lidar classifier" + (
                          f" (frozen: {', '.join(spec.config.freeze)})" if spec.config.freeze else ""),
                      parents=lambda config: {"projector": _kind_is("projector")},
                      classes=lambda spec: spec.parents["projector"].spec.parents["lidar"].spec.num_classes),
}


def pipeline_model(stage: str, lidar_tower: str = "locked", num_classes: int = 2,
                   image_size: tuple[int, int] = REFERENCE_SIZE, beams: tuple[int, int] = REFERENCE_SIZE,
                   ) -> tuple[str, Any]:
    """The kind and config of the pipeline stage ``stage`` for RGB images of ``image_size`` and LiDAR
    range images of ``beams``; the later stages classify into the LiDAR classifier's ``num_classes``."""
    check_choice("stage", stage, PIPELINE)
    sizes = {"image_size": image_size, "beams": beams}
    return {"lidar": ("classifier", ModelConfig(family="lidar", num_classes=num_classes, **sizes)),
            "cilp": ("cilp", CILPConfig(lidar_tower=lidar_tower, **sizes)),
            "projector": ("projector", ProjectorConfig()),
            "rgb2lidar": ("rgb2lidar", RGBToLiDARConfig())}[stage]


def pipeline_parents(stage: str, lidar_tower: str = "locked") -> tuple[str, ...]:
    """The stages ``stage`` is built from."""
    kind, config = pipeline_model(stage, lidar_tower)
    return tuple(KINDS[kind].parents(config))


def pipeline_spec(stage: str, parents: dict[str, Path | str], lidar_tower: str = "locked",
                  num_classes: int = 2, **sizes) -> ModelSpec:
    """The spec of the pipeline stage ``stage`` built from the run folders ``parents`` (stage -> folder);
    ``sizes``: :func:`pipeline_model`'s ``image_size`` and ``beams``."""
    kind, config = pipeline_model(stage, lidar_tower, num_classes, **sizes)
    return ModelSpec(kind, config, {role: parent(folder, role) for role, folder in parents.items()})


def default_run_name(model) -> str:
    """``late``, ``late_add``, ``intermediate_add``, ``intermediate_add_strided``, ``lidar``, ``cilp``, ...

    ``model`` is a ``ModelConfig`` or a ``ModelSpec``; a spec other than a
    classifier's is named after its kind.
    """
    if isinstance(model, ModelSpec):
        if model.kind != "classifier":
            return model.kind
        model = model.config
    parts = [model.family]
    if model.family == "intermediate" or (model.family in ("early", "late") and model.fusion != "concat"):
        parts.append(model.fusion)
    if model.downsample != "maxpool":
        parts.append(model.downsample)
    return "_".join(parts)


def objective_for(spec: ModelSpec, batch_size: int) -> Objective:
    objective = KINDS[spec.kind].objective
    return objective(set_size=batch_size) if objective is Contrastive else objective()


# --------------------------------------------------------------------------- building and loading


def build(spec: ModelSpec, *, load_parents: bool = False) -> nn.Module:
    """The model of ``spec``: weights from the current torch seed, or, with
    ``load_parents``, every part a parent provides from that parent's checkpoint."""
    if load_parents:
        parents = {role: load_run(parent.run, expected_sha256=parent.sha256, what=f"parent '{role}'").model
                   for role, parent in spec.parents.items()}
    else:
        parents = {role: build(parent.spec) for role, parent in spec.parents.items()}
    return KINDS[spec.kind].build(spec.config, parents)


def parent(run_dir: Path | str, role: str) -> Parent:
    """A finished run as the parent ``role`` of a new model (its checkpoint verified)."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise CheckpointError(f"parent '{role}': run folder {run_dir} not found (train that stage first)")
    manifest = ckpt.read_manifest(run_dir)
    if manifest.get("status") != "finished":
        raise CheckpointError(f"parent '{role}': run {run_dir} has status {manifest.get('status')!r}, "
                              f"not 'finished' (resume or retrain it first)")
    weights = run_dir / ckpt.weights_name(manifest, run_dir)
    sha256 = ckpt.file_sha256(weights) if weights.is_file() else ""
    if not sha256 or sha256 != manifest.get("checkpoint_sha256"):
        raise CheckpointError(f"parent '{role}': {weights} is missing or differs from its manifest's checksum")
    return Parent(str(run_dir), sha256, spec_of(manifest, run_dir))


def spec_of(manifest: dict, run_dir: Path) -> ModelSpec:
    """The spec a manifest records; manifests of format run/1 (fusion runs before CILP) hold a
    classifier's ``model`` config, whose RGB was fed raw."""
    try:
        if "spec" in manifest:
            return ModelSpec.from_dict(manifest["spec"])
        return ModelSpec("classifier", ModelConfig.from_dict({"rgb_input": "raw", **manifest["model"]}))
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{Path(run_dir) / ckpt.MANIFEST}: invalid model spec ({exc})") from None


def check_parents_unchanged(spec: ModelSpec, run_dir: Path | str) -> None:
    """Refuse a model whose parent run still exists but holds another checkpoint now."""
    for role, parent_ in spec.parents.items():
        folder = Path(parent_.run)
        if not folder.is_absolute() or not (folder / ckpt.MANIFEST).is_file():
            continue  # shipped (parents named, not placed) or moved: the checkpoint is self-contained
        weights = folder / ckpt.weights_name(ckpt.read_manifest(folder), folder)
        current = ckpt.file_sha256(weights) if weights.is_file() else "missing"
        if current != parent_.sha256:
            raise CheckpointError(
                f"{run_dir}: its parent '{role}' ({folder}) changed since this run was trained "
                f"(checkpoint sha256 {current[:12]}, recorded {parent_.sha256[:12]}); retrain this stage")


@dataclass
class LoadedRun:
    """A finished (or interrupted) run: its best model, spec and manifest."""

    path: Path
    model: nn.Module
    spec: ModelSpec
    manifest: dict


def check_loadable(manifest: dict, run_dir: Path, what: str = "run") -> None:
    """Refuse a run that failed; warn about one that is still training (or was killed)."""
    status = manifest.get("status", "finished")  # manifests before the field were written when done
    best = manifest.get("best") or {}
    if status == "failed":
        raise ckpt.CheckpointError(f"{what} {run_dir}: the run failed ({manifest.get('error', 'no error recorded')}); "
                                   f"train it again, or continue it with --resume")
    if status != "finished" and not best.get("epoch"):
        raise ckpt.CheckpointError(f"{what} {run_dir}: the run has no checkpoint yet (status {status!r})")
    if status != "finished":
        warnings.warn(f"{what} {run_dir}: status {status!r}, not finished (still training, or killed): "
                      f"using its best checkpoint so far (epoch {best['epoch']} of "
                      f"{manifest.get('train', {}).get('epochs', '?')})", stacklevel=3)


def load_run(run_dir: Path | str, device: torch.device | str = "cpu", *, expected_sha256: str | None = None,
             what: str = "run") -> LoadedRun:
    """Rebuild a run's model from its manifest and load its best weights (eval mode).

    The checkpoint must match the manifest's SHA-256 (and ``expected_sha256`` when
    given), and no parent may have changed since the run was trained.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{what} {run_dir}: run folder not found")
    manifest = ckpt.read_manifest(run_dir)
    check_loadable(manifest, run_dir, what)
    spec = spec_of(manifest, run_dir)
    weights = run_dir / ckpt.weights_name(manifest, run_dir)
    recorded = manifest.get("checkpoint_sha256")
    if weights.is_file() and (recorded or expected_sha256):
        actual = ckpt.file_sha256(weights)
        if recorded and actual != recorded:
            raise CheckpointError(f"{weights}: corrupt checkpoint (its SHA-256 differs from the manifest's)")
        if expected_sha256 and actual != expected_sha256:
            raise CheckpointError(f"{what} {run_dir}: its checkpoint changed since it was recorded "
                                  f"(sha256 {actual[:12]}, expected {expected_sha256[:12]}); retrain the later stages")
    check_parents_unchanged(spec, run_dir)
    model = ckpt.load_weights(build(spec), weights)
    return LoadedRun(run_dir, model.to(device).eval(), spec, manifest)


def as_module(model_or_run) -> nn.Module:
    """The module of a model, a loaded run, a train result or a run folder."""
    if isinstance(model_or_run, (str, os.PathLike)):
        model_or_run = load_run(model_or_run)
    model = model_or_run if isinstance(model_or_run, nn.Module) else model_or_run.model
    return ckpt.unwrap(model)

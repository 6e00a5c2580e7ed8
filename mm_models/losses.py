"""Objectives: what a run optimises, what it measures, and which metric picks its checkpoint.

The training loop knows none of them by name. A model returns a dict of named
outputs; the run's objective turns those (and the labels) into a loss per batch
and into metrics over a whole split:

    outputs = model(inputs)                          # {"logits": ...} or {"rgb_features": ...}
    loss = objective.loss(outputs, labels)           # a scalar tensor, for backward
    row = objective.metrics(all_outputs, all_labels) # {"loss": ..., "accuracy": ...}

=================  ===========================================  ==========================
objective          the model returns                            metrics
=================  ===========================================  ==========================
Classification     logits (B,) or (B, N) and embedding (B, E)    loss (BCE / CE), accuracy,
                                                                 P/R/F1 (per class, macro)
Contrastive        rgb_features, lidar_features (B, D) unit      loss (symmetric CE), top-1 /
                   vectors, logit_scale (a scalar)               top-5 retrieval both ways,
                                                                 true / other pair cosine
Regression         prediction, target (B, F)                     loss (MSE), cosine
=================  ===========================================  ==========================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import distributed
from .metrics import classification_metrics

Outputs = dict[str, Tensor]
#: a contrastive run's pictures, in its run folder
SIMILARITY_PNG, MATCHES_PNG = "similarity.png", "matches.png"


@dataclass(frozen=True)
class Objective:
    """The interface the loop uses (subclasses fill it in)."""

    #: the validation metric that selects the best checkpoint, and its direction
    select: ClassVar[str] = "val/loss"
    minimize: ClassVar[bool] = True
    #: whether every training batch must be full (a contrastive batch is a set of negatives)
    drop_last: ClassVar[bool] = False
    #: whether the loss needs the class labels
    needs_labels: ClassVar[bool] = False
    #: metrics drawn beside the loss in curves.png and named in progress lines
    headline: ClassVar[tuple[str, ...]] = ()

    def loss(self, outputs: Outputs, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def shard_loss(self, outputs: Outputs, labels: Tensor | None, batch_rows: int) -> Tensor:
        """The loss of this process's share (``mm_models.distributed.shard_bounds``) of a global
        batch of ``batch_rows`` rows split across processes, as the mean over that share's rows;
        ``outputs`` and ``labels`` are the share's."""
        return self.loss(outputs, labels)

    def metrics(self, outputs: Outputs, labels: Tensor | None) -> dict[str, float]:
        """Metrics over a whole split (``outputs`` concatenated over its batches)."""
        raise NotImplementedError

    def pictures(self, outputs: Outputs, data, run_dir, tracker, logged: int,
                 class_names: tuple[str, ...] | None = None) -> list[str]:
        """Draw (and log to ``tracker``) the run's pictures from the best model's val outputs;
        ``logged`` val pairs go to the tracker's predictions table, a classifier's classes named by
        ``class_names`` (label index -> name). Returns the files written."""
        return []

    def better(self, value: float, best: float) -> bool:
        return value < best if self.minimize else value > best

    @property
    def worst(self) -> float:
        return math.inf if self.minimize else -math.inf


@dataclass(frozen=True)
class Classification(Objective):
    """Two classes: binary cross-entropy on one logit per pair (label 1 when > 0). N > 2 classes:
    cross-entropy on N logits per pair. The model's logits' shape says which."""

    needs_labels: ClassVar[bool] = True
    headline: ClassVar[tuple[str, ...]] = ("accuracy",)

    def loss(self, outputs: Outputs, labels: Tensor | None) -> Tensor:
        logits = outputs["logits"].float()
        if logits.dim() == 1:
            return F.binary_cross_entropy_with_logits(logits, labels)
        return F.cross_entropy(logits, labels.long())

    def metrics(self, outputs: Outputs, labels: Tensor | None) -> dict[str, float]:
        return classification_metrics(outputs["logits"], labels)

    def pictures(self, outputs: Outputs, data, run_dir, tracker, logged: int,
                 class_names: tuple[str, ...] | None = None) -> list[str]:
        if logged:
            tracker.log_predictions(prediction_rows(outputs["logits"][:logged], data.subset(slice(0, logged)),
                                                    class_names))
        return []


def prediction_rows(logits: Tensor, data, class_names: tuple[str, ...] | list[str]) -> list[dict]:
    """A table of sample predictions: the image, its label and the prediction by class name
    (``class_names``: label index -> name) and, for two classes (one logit), the second class's
    probability ``p_<name>`` (``p_sphere``); for N > 2 classes the predicted class's, ``confidence``."""
    rgb, labels = data.rgb.cpu().numpy(), data.labels.cpu().numpy().astype(int)
    if logits.dim() == 1:
        probabilities = torch.sigmoid(logits.float()).cpu().numpy()
        predicted, scores = (probabilities > 0.5).astype(int), {f"p_{class_names[1]}": probabilities}
    else:
        confidence, predicted = torch.softmax(logits.float(), 1).max(1)
        predicted, scores = predicted.cpu().numpy(), {"confidence": confidence.cpu().numpy()}
    return [{"index": i, "image": rgb[i], "label": class_names[labels[i]], "prediction": class_names[predicted[i]],
             **{key: float(values[i]) for key, values in scores.items()}} for i in range(len(rgb))]


def clip_loss(rgb_features: Tensor, lidar_features: Tensor, logit_scale: Tensor, rows: slice | None = None) -> Tensor:
    """CLIP's symmetric cross-entropy: each RGB picks its own LiDAR among the batch's, and back.

    With ``rows`` (a range of the batch) only those RGB and LiDAR queries, against the
    whole batch: the mean of their terms (a share of the loss, for one of several processes).
    """
    if rows is None:
        logits = logit_scale * rgb_features.float() @ lidar_features.float().T
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    rgb, lidar = rgb_features.float(), lidar_features.float()
    rgb_logits = logit_scale * rgb[rows] @ lidar.T
    lidar_logits = logit_scale * lidar[rows] @ rgb.T
    targets = torch.arange(rows.start, rows.stop, device=rgb.device)
    return (F.cross_entropy(rgb_logits, targets) + F.cross_entropy(lidar_logits, targets)) / 2


def true_pair_ranks(queries: Tensor, keys: Tensor, chunk: int = 1024) -> Tensor:
    """For each row i, the rank (1 = best) of ``keys[i]`` among all keys by dot product.

    Computed in chunks of rows, so the figure does not depend on a batch size and
    memory stays ``chunk x N``. Ties count against the true pair.
    """
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk].float() @ keys.float().T
        rows = torch.arange(start, start + len(scores), device=scores.device)
        true = scores[torch.arange(len(scores)), rows]
        others = scores >= true[:, None]
        others[torch.arange(len(scores)), rows] = False
        ranks.append(others.sum(1) + 1)
    return torch.cat(ranks)


@dataclass(frozen=True)
class Contrastive(Objective):
    """Symmetric InfoNCE over each training batch; retrieval over the whole split.

    ``set_size`` is the training batch size: the validation loss is computed over
    consecutive sets of that size, so it is on the training loss's scale.
    """

    set_size: int = 32
    drop_last: ClassVar[bool] = True
    headline: ClassVar[tuple[str, ...]] = ("rgb2lidar_top1", "lidar2rgb_top1")

    def loss(self, outputs: Outputs, labels: Tensor | None) -> Tensor:
        return clip_loss(outputs["rgb_features"], outputs["lidar_features"], outputs["logit_scale"])

    def shard_loss(self, outputs: Outputs, labels: Tensor | None, batch_rows: int) -> Tensor:
        """This process's queries against the global batch: every process's features are the
        negatives, and each process's features get the gradient of every process's share."""
        rgb = distributed.gather_with_grad(outputs["rgb_features"].float(), batch_rows)
        lidar = distributed.gather_with_grad(outputs["lidar_features"].float(), batch_rows)
        return clip_loss(rgb, lidar, outputs["logit_scale"], rows=slice(*distributed.shard_bounds(batch_rows)))

    @torch.no_grad()
    def metrics(self, outputs: Outputs, labels: Tensor | None) -> dict[str, float]:
        rgb, lidar = outputs["rgb_features"].float(), outputs["lidar_features"].float()
        scale = outputs["logit_scale"].float()
        n = len(rgb)
        losses, weights = [], []
        for start in range(0, n, self.set_size):
            stop = min(n, start + self.set_size)
            if stop - start >= 2:
                losses.append(clip_loss(rgb[start:stop], lidar[start:stop], scale).item())
                weights.append(stop - start)
        rgb_ranks, lidar_ranks = true_pair_ranks(rgb, lidar), true_pair_ranks(lidar, rgb)
        cosine = rgb @ lidar.T
        true_cosine = cosine.diagonal()
        other_cosine = (cosine.sum() - true_cosine.sum()) / max(1, n * n - n)
        return {
            "loss": sum(loss * w for loss, w in zip(losses, weights)) / sum(weights) if weights else math.nan,
            "rgb2lidar_top1": (rgb_ranks <= 1).float().mean().item(),
            "rgb2lidar_top5": (rgb_ranks <= 5).float().mean().item(),
            "lidar2rgb_top1": (lidar_ranks <= 1).float().mean().item(),
            "lidar2rgb_top5": (lidar_ranks <= 5).float().mean().item(),
            "rgb2lidar_mean_rank": rgb_ranks.float().mean().item(),
            "true_pair_cosine": true_cosine.mean().item(),
            "other_pair_cosine": other_cosine.item(),
            "logit_scale": scale.item(),
            "temperature": 1 / scale.item(),
        }

    def pictures(self, outputs: Outputs, data, run_dir, tracker, logged: int,
                 class_names: tuple[str, ...] | None = None) -> list[str]:
        from .figures import matches_png, similarity_png

        rgb, lidar = outputs["rgb_features"].float(), outputs["lidar_features"].float()
        shown = min(32, len(rgb))
        similarity_png(Path(run_dir) / SIMILARITY_PNG, (rgb[:shown] @ lidar[:shown].T).cpu().numpy())
        matches_png(Path(run_dir) / MATCHES_PNG, data.rgb, data.lidar, rgb, lidar)
        tracker.log_images({"val/similarity": Path(run_dir) / SIMILARITY_PNG,
                            "val/matches": Path(run_dir) / MATCHES_PNG})
        return [SIMILARITY_PNG, MATCHES_PNG]


@dataclass(frozen=True)
class Regression(Objective):
    """Mean squared error between a prediction and a target embedding (``nn.MSELoss``)."""

    headline: ClassVar[tuple[str, ...]] = ("cosine",)

    def loss(self, outputs: Outputs, labels: Tensor | None) -> Tensor:
        return F.mse_loss(outputs["prediction"].float(), outputs["target"].float())

    @torch.no_grad()
    def metrics(self, outputs: Outputs, labels: Tensor | None) -> dict[str, float]:
        prediction, target = outputs["prediction"].float(), outputs["target"].float()
        return {
            "loss": F.mse_loss(prediction, target).item(),
            "cosine": F.cosine_similarity(prediction, target, dim=1).mean().item(),
        }

"""A classifier run's outputs back into the dataset: predictions and embeddings, an evaluation, a map.

Predictions go to a field named after the run on every slice of each pair, as
``fo.Classification(label, confidence, logits)`` (two classes: logits ``[0, z]``, so their
softmax is the model's probabilities; N classes: the model's N logits), and the pair's
embedding (the classifier head's penultimate activations) to ``<field>_embedding``.
FiftyOne's ``evaluate_classifications`` then scores the predictions on the rgb slice of
the evaluation split over the dataset's classes, so the App shows the confusion matrix
and per-class metrics under the eval key ``eval_<field>``, and ``compute_visualization``
lays the rgb slice's embeddings out in 2-D for the App's Embeddings panel (brain key
``<field>_map``). The App colours the predictions' classes as it colours the ground truth's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fiftyone as fo
import numpy as np

from ..dataset import arrays
from ..dataset.colours import colour_by_class
from ..dataset.views import all_slices, dataset_classes, with_tags
from ..runs.registry import check_run_name, loaded_run
from .maps import check_embedding_map, map_options, quiet_maps
from .staging import StagedWrite, check_replaceable


@dataclass
class ApplyResult:
    field: str
    eval_key: str | None
    predicted: int
    report: dict | None  # FiftyOne's classification report on the evaluation split
    embedding_field: str
    brain_key: str | None  # the embedding map's, when one was computed
    evaluated_on: str = ""  # which pairs the evaluation scored, or why there is none

    def summary(self) -> str:
        text = f"wrote '{self.field}' and '{self.embedding_field}' for {self.predicted} pairs (every slice)"
        if self.report:
            text += (f"; evaluation '{self.eval_key}': accuracy {100 * self.report['accuracy']:.2f}% "
                     f"on {int(self.report['macro avg']['support'])} pairs {self.evaluated_on}")
        elif self.evaluated_on:
            text += f"; no evaluation: {self.evaluated_on}"
        if self.brain_key:
            text += f"; embedding map '{self.brain_key}'"
        return text


def apply_model(
    dataset: fo.Dataset, run: str | Path, *, field: str | None = None, tags: str | list[str] | None = None,
    eval_tag: str | None = "val", embedding_map: str | None = "pca", batch_size: int | None = None,
    device: str = "auto", progress=None,
) -> ApplyResult:
    """Predict every pair (or those with ``tags``) with a run's best checkpoint and write back.

    ``run``: a run name recorded on the dataset, a run folder, or a run loaded already
    (:func:`cilp_plugin.runs.registry.loaded_run`). Nothing is written unless the
    checkpoint loads and predicts; everything is written under temporary names and
    swapped in at the end, so a failure (or an interrupt) keeps the previous results
    of this run untouched.
    """
    from mm_models import predict  # torch: only where a model runs

    say = progress or (lambda fraction, label: None)
    embedding_map = check_embedding_map(embedding_map)
    loaded = loaded_run(dataset, run)  # validates the checkpoint before anything is written
    run_dir = loaded.path
    field = check_run_name(field or run_dir.name)
    embedding_field, eval_key, brain_key = f"{field}_embedding", f"eval_{field}", f"{field}_map"
    for name in (field, embedding_field):  # only what an earlier apply wrote may be replaced
        check_replaceable(dataset, name)

    classes = dataset_classes(dataset)
    if loaded.spec.num_classes != len(classes):
        raise ValueError(f"run {run_dir.name!r}: its model tells {loaded.spec.num_classes} classes apart, "
                         f"dataset '{dataset.name}' has {len(classes)} ({', '.join(classes)})")
    say(0.05, f"loading pairs for {field}")
    data = arrays.from_dataset(dataset, tags)
    say(0.2, f"predicting {len(data)} pairs with {run_dir.name}")
    out = predict(loaded, data.tensors(), batch_size=batch_size, device=device,
                  progress=lambda f, label: say(0.2 + 0.6 * f, label))
    predictions = dict(zip(data.pair_ids, classifications(out, classes)))
    embeddings = dict(zip(data.pair_ids, out.embeddings))
    if embedding_map and len(embeddings) < 3:
        raise ValueError(f"embedding_map: a map needs at least 3 pairs, got {len(embeddings)}; pass 'none'")

    with StagedWrite(dataset) as staged:
        say(0.85, f"writing '{field}' and '{embedding_field}'")
        samples = all_slices(dataset)
        pair_ids = samples.values("pair_id")
        samples.set_values(staged.field(field), [predictions.get(pid) for pid in pair_ids])
        samples.set_values(staged.field(embedding_field), [embeddings.get(pid) for pid in pair_ids])
        say(0.95, f"evaluating '{field}'")
        predicted = with_tags(dataset.select_group_slices("rgb"), tags)
        report, evaluated_on = _evaluate(predicted, staged, field, eval_key, eval_tag, classes)
        if not report:
            staged.discard(eval_key)
        if embedding_map:
            say(0.97, f"embedding map '{brain_key}' ({embedding_map})")
            _map_embeddings(predicted, staged.brain_key(brain_key), embedding_map, embeddings)
        else:
            staged.discard(brain_key)
    colour_by_class(dataset, [field], classes)
    say(1.0, f"'{field}' written")
    return ApplyResult(field, eval_key if report else None, len(predictions), report, embedding_field,
                       brain_key if embedding_map else None, evaluated_on)


def classifications(out, classes: list[str]) -> list[fo.Classification]:
    """One ``fo.Classification`` a pair: the predicted class, its probability, and logits whose
    softmax is the model's probabilities (two classes: ``[0, z]`` of the one logit z)."""
    logits = np.stack([np.zeros_like(out.logits), out.logits], axis=1) if out.logits.ndim == 1 else out.logits
    return [fo.Classification(label=classes[index], confidence=float(confidence), logits=[float(z) for z in row])
            for index, confidence, row in zip(out.labels, out.confidences, logits)]


def _evaluate(predicted, staged: StagedWrite, field: str, eval_key: str,
              eval_tag: str | None, classes: list[str]) -> tuple[dict | None, str]:
    """FiftyOne's classification report of the staged predictions ``field`` on the ``predicted`` rgb
    samples tagged ``eval_tag`` (on all of them when no tag is given), and which pairs it scored.

    No pair tagged ``eval_tag`` means no evaluation (never a silent fall-back to every
    pair, training pairs included). The evaluated view selects pairs by tag, never by
    the staged field's name, so it stays valid once the field is renamed.
    """
    evaluated, evaluated_on = predicted, "(all of them: no evaluation tag, training pairs included)"
    if eval_tag:
        evaluated, evaluated_on = predicted.match_tags(eval_tag), f"tagged '{eval_tag}'"
        if not len(evaluated):
            return None, f"no predicted pair is tagged '{eval_tag}' (create splits, or pass an empty eval tag " \
                         f"to evaluate on every pair)"
    if not len(evaluated):
        return None, ""
    results = evaluated.evaluate_classifications(staged.field(field), gt_field="ground_truth",
                                                 eval_key=staged.evaluation(eval_key, field),
                                                 classes=classes)
    return results.report(), evaluated_on


def _map_embeddings(view, brain_key: str, method: str, embeddings: dict[str, np.ndarray]) -> None:
    """A 2-D layout of the embeddings of the rgb samples ``view``, stored as the brain run ``brain_key``.

    The embeddings go in as an array, not a field name, and the view selects pairs by
    tag: the run names no staged field that the swap would leave stale.
    """
    import fiftyone.brain as fob

    vectors = np.stack([embeddings[pid] for pid in view.values("pair_id")])
    with quiet_maps():
        fob.compute_visualization(view, embeddings=vectors, method=method, brain_key=brain_key,
                                  seed=0, progress=False, **map_options(method, *vectors.shape))

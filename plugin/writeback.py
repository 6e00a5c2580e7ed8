"""Model outputs back into the dataset: predictions on every slice, then an evaluation.

Predictions go to a field named after the run on every slice of each pair, as
``fo.Classification(label, confidence, logits)`` (logits ``[0, z]``, so their softmax
is the model's probabilities). FiftyOne's ``evaluate_classifications`` then scores
them on the rgb slice of the evaluation split, so the App shows the confusion
matrix and per-class metrics under the eval key ``eval_<field>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fiftyone as fo

from . import arrays
from . import format as fmt
from .splits import all_slices
from .training import check_run_name, find_run


@dataclass
class ApplyResult:
    field: str
    eval_key: str | None
    predicted: int
    report: dict | None  # FiftyOne's classification report on the evaluation split

    def summary(self) -> str:
        text = f"wrote '{self.field}' for {self.predicted} pairs (every slice)"
        if self.report:
            text += (f"; evaluation '{self.eval_key}': accuracy {100 * self.report['accuracy']:.2f}% "
                     f"on {int(self.report['macro avg']['support'])} pairs")
        return text


def apply_model(
    dataset: fo.Dataset, run: str | Path, *, field: str | None = None, tags: str | list[str] | None = None,
    eval_tag: str | None = "val", batch_size: int = 256, device: str = "auto", progress=None,
) -> ApplyResult:
    """Predict every pair (or those with ``tags``) with a run's best checkpoint and write back.

    Nothing is written unless the checkpoint loads and predicts; a failure while
    writing removes the field and the evaluation again.
    """
    from mm_models import load_run, predict

    say = progress or (lambda fraction, label: None)
    run_dir = find_run(dataset, run)
    loaded = load_run(run_dir)  # validates the checkpoint before anything is written
    field = check_run_name(field or run_dir.name)
    if field in ("ground_truth", "pair_id", "range_path") or field.startswith("lidar_"):
        raise ValueError(f"field: '{field}' is one of the dataset's own fields; choose another")

    say(0.05, f"loading pairs for {field}")
    data = arrays.from_dataset(dataset, tags)
    say(0.2, f"predicting {len(data)} pairs with {run_dir.name}")
    out = predict(loaded, data.tensors(), batch_size=batch_size, device=device,
                  progress=lambda f, label: say(0.2 + 0.6 * f, label))
    by_pair = {
        pid: fo.Classification(label=fmt.LABELS[index], confidence=float(p if index else 1 - p),
                               logits=[0.0, float(z)])
        for pid, index, p, z in zip(data.pair_ids, out.labels, out.probabilities, out.logits)
    }

    eval_key = f"eval_{field}"
    _remove(dataset, field, eval_key)
    try:
        say(0.85, f"writing '{field}'")
        samples = all_slices(dataset)
        samples.set_values(field, [by_pair.get(pid) for pid in samples.values("pair_id")])
        report = None
        evaluated = dataset.select_group_slices("rgb").exists(field)
        if eval_tag and len(evaluated.match_tags(eval_tag)):
            evaluated = evaluated.match_tags(eval_tag)
        if len(evaluated):
            say(0.95, f"evaluating '{field}'")
            results = evaluated.evaluate_classifications(
                field, gt_field="ground_truth", eval_key=eval_key, classes=list(fmt.LABELS))
            report = results.report()
        else:
            eval_key = None
    except BaseException:
        _remove(dataset, field, eval_key)
        raise
    say(1.0, f"'{field}' written")
    return ApplyResult(field, eval_key, len(by_pair), report)


def _remove(dataset: fo.Dataset, field: str, eval_key: str | None) -> None:
    if eval_key and eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    if dataset.has_sample_field(field):
        dataset.delete_sample_field(field)

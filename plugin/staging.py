"""Write results under temporary names and swap them in only when all of them are complete.

    with StagedWrite(dataset) as staged:
        view.set_values(staged.field("cilp_embedding"), values)
        fob.compute_similarity(view, embeddings=array, brain_key=staged.brain_key("cilp_rgb_sim"))
    # here every staged field and brain run replaced its namesake; on an error (or an
    # interrupt) inside the block, they were dropped and the previous results are untouched

A re-apply therefore never loses the previous results to a failure halfway. The
swap itself deletes each old result just before renaming the new one in its place.
An evaluation staged on a staged field is renamed with its per-sample field and
pointed at the field's final name (FiftyOne's renames do not update run configs);
brain runs are computed from arrays, so they name no field that could go stale.
"""

from __future__ import annotations

import uuid

import fiftyone as fo


class StagedWrite:
    def __init__(self, dataset: fo.Dataset):
        self.dataset = dataset
        self.token = uuid.uuid4().hex[:8]
        self.fields: dict[str, str] = {}  # final name -> staged name
        self.brain_keys: dict[str, str] = {}
        self.evaluations: dict[str, tuple[str, str]] = {}  # final key -> (staged key, final prediction field)
        self.stale_runs: list[str] = []  # evaluations / brain runs the new results no longer include

    def _staged(self, name: str) -> str:
        return f"staged_{self.token}_{name}"

    def field(self, name: str) -> str:
        """The temporary name under which to write the field ``name``."""
        return self.fields.setdefault(name, self._staged(name))

    def brain_key(self, key: str) -> str:
        """The temporary key under which to compute the brain run ``key``."""
        return self.brain_keys.setdefault(key, self._staged(key))

    def evaluation(self, key: str, pred_field: str) -> str:
        """The temporary key under which to evaluate the staged field of ``pred_field``."""
        staged = self._staged(key)
        self.evaluations[key] = (staged, pred_field)
        return staged

    def discard(self, key: str) -> None:
        """Delete the evaluation or brain run ``key`` at commit (the new results have none)."""
        self.stale_runs.append(key)

    def commit(self) -> None:
        import fiftyone.core.evaluation as foe

        dataset = self.dataset
        for final in [*self.evaluations, *self.stale_runs]:
            if final in dataset.list_evaluations():
                dataset.delete_evaluation(final)
        for final in self.stale_runs:
            if final in dataset.list_brain_runs():
                dataset.delete_brain_run(final)
        for final, staged in self.fields.items():
            if dataset.has_sample_field(final):
                dataset.delete_sample_field(final)
            dataset.rename_sample_field(staged, final)
        for final, (staged, pred_field) in self.evaluations.items():
            dataset.rename_evaluation(staged, final)
            config = dataset.get_evaluation_info(final).config
            config.pred_field = pred_field
            foe.EvaluationMethod.update_run_config(dataset, final, config)
        for final, staged in self.brain_keys.items():
            if final in dataset.list_brain_runs():
                dataset.delete_brain_run(final)
            dataset.rename_brain_run(staged, final)

    def rollback(self) -> None:
        dataset = self.dataset
        for staged, _ in self.evaluations.values():
            if staged in dataset.list_evaluations():
                dataset.delete_evaluation(staged)
        for staged in self.brain_keys.values():
            if staged in dataset.list_brain_runs():
                dataset.delete_brain_run(staged)
        for staged in self.fields.values():
            if dataset.has_sample_field(staged):
                dataset.delete_sample_field(staged)

    def __enter__(self) -> "StagedWrite":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.rollback()

"""Write results under temporary names and swap them in only when all of them are complete.

    with StagedWrite(dataset) as staged:
        view.set_values(staged.field("cilp_embedding"), values)
        fob.compute_similarity(view, embeddings=array, brain_key=staged.brain_key("cilp_rgb_sim"))
    # here every staged field and brain run replaced its namesake; on an error (or an
    # interrupt) inside the block, they were dropped and the previous results are untouched

A re-apply therefore never loses the previous results to a failure halfway. The
swap itself deletes each old result just before renaming the new one in its place.
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

    def _staged(self, name: str) -> str:
        return f"staged_{self.token}_{name}"

    def field(self, name: str) -> str:
        """The temporary name under which to write the field ``name``."""
        return self.fields.setdefault(name, self._staged(name))

    def brain_key(self, key: str) -> str:
        """The temporary key under which to compute the brain run ``key``."""
        return self.brain_keys.setdefault(key, self._staged(key))

    def commit(self) -> None:
        dataset = self.dataset
        for final, staged in self.fields.items():
            if dataset.has_sample_field(final):
                dataset.delete_sample_field(final)
            dataset.rename_sample_field(staged, final)
        for final, staged in self.brain_keys.items():
            if final in dataset.list_brain_runs():
                dataset.delete_brain_run(final)
            dataset.rename_brain_run(staged, final)

    def rollback(self) -> None:
        dataset = self.dataset
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

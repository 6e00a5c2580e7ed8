"""Write results under temporary names and swap them in only when all of them are complete.

    with StagedWrite(dataset) as staged:
        view.set_values(staged.field("cilp_embedding"), values)
        fob.compute_similarity(view, embeddings=array, brain_key=staged.brain_key("cilp_search"))
    # here every staged field and brain run replaced its namesake; on an error (or an
    # interrupt) inside the block, they were dropped and the previous results are untouched

A re-apply therefore never loses the previous results to a failure halfway. The
swap itself deletes each old result just before renaming the new one in its place.
An evaluation staged on a staged field is renamed with its per-sample field and
pointed at the field's final name (FiftyOne's renames do not update run configs);
brain runs are computed from arrays, so they name no field that could go stale.

A process killed outright (``kill -9``, a lost machine) runs neither the rollback
nor the rest of the swap. So every staged write keeps a journal entry in a
FiftyOne execution store of the dataset (``cilp_staged_writes``), keyed by its token
(the ``staged_<token>_`` of its names), with its owner (host, pid, process start
time) and its state: ``writing`` while the staged results are made, ``committing``
plus the whole swap plan once they are complete. The next staged write on the
dataset (any ``apply``), or :func:`recover`, finishes what dead owners left:

- ``writing`` (or no entry: names left by an older version): the staged fields,
  evaluations and brain runs of that token are deleted; the previous results were
  never touched.
- ``committing``: the swap is finished from its plan (every step is idempotent), so
  the results are the new ones.

Only owners known to be gone are recovered: a process on this host that no longer
runs (or whose pid now belongs to a younger process). Entries of a live process
(two applies at once) and of processes on other hosts are left alone (reported;
``recover(dataset, other_hosts=True)`` takes those too once you know they are dead).
A recoverer first takes the entry over (compare-and-set), so two of them never
work on the same leftovers.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from contextlib import ExitStack

import fiftyone as fo

from ..dataset.leases import dataset_lease
from ..dataset.owners import describe_owner, owner, owner_state

logger = logging.getLogger(__name__)

JOURNAL = "cilp_staged_writes"
#: ``field.info["written_by"]`` of every field a staged write swapped in: only those it may replace
WRITER = "cilp-multimodal"
#: test hook: seconds to sleep after each step of a commit (lets a test kill a process mid-swap)
STEP_DELAY_ENV = "CILP_STAGING_STEP_DELAY"
_STAGED = re.compile(r"staged_([0-9a-f]{8})_(.+)")


# --------------------------------------------------------------------------- the journal


def _journal(dataset: fo.Dataset):
    from fiftyone.operators.store import ExecutionStore

    return ExecutionStore.create(JOURNAL, dataset_id=dataset._doc.id)


def _pause() -> None:
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)


# --------------------------------------------------------------------------- the swap and its undo


def _commit(dataset: fo.Dataset, plan: dict) -> None:
    """Swap the staged results of ``plan`` in. Idempotent: a swap cut short finishes when run again."""
    import fiftyone.core.evaluation as foe

    evaluations = dataset.list_evaluations()
    for final in plan["stale_runs"]:
        if final in evaluations:
            dataset.delete_evaluation(final)
        if final in dataset.list_brain_runs():
            dataset.delete_brain_run(final)
    for final, (staged, _) in plan["evaluations"].items():
        if staged in evaluations and final in evaluations:  # the old one, while the new one waits
            dataset.delete_evaluation(final)
            _pause()
    for final, staged in plan["fields"].items():
        if dataset.has_sample_field(staged):
            _mark_ours(dataset, staged)  # the mark moves with the rename
            if dataset.has_sample_field(final):
                dataset.delete_sample_field(final)
            dataset.rename_sample_field(staged, final)
            _pause()
    for final, (staged, pred_field) in plan["evaluations"].items():
        if staged in dataset.list_evaluations():
            dataset.rename_evaluation(staged, final)
        if final in dataset.list_evaluations():
            config = dataset.get_evaluation_info(final).config
            if config.pred_field != pred_field:
                config.pred_field = pred_field
                foe.EvaluationMethod.update_run_config(dataset, final, config)
            _pause()
    for final, staged in plan["brain_keys"].items():
        brain_runs = dataset.list_brain_runs()
        if staged in brain_runs:
            if final in brain_runs:
                dataset.delete_brain_run(final)
            dataset.rename_brain_run(staged, final)
            _pause()


def _mark_ours(dataset: fo.Dataset, name: str) -> None:
    field = dataset.get_field(name)
    if (field.info or {}).get("written_by") != WRITER:
        field.info = {**(field.info or {}), "written_by": WRITER}
        field.save()


def check_replaceable(dataset: fo.Dataset, name: str) -> None:
    """Refuse to replace a field that no staged write (an earlier ``apply``) wrote."""
    if dataset.has_sample_field(name) and (dataset.get_field(name).info or {}).get("written_by") != WRITER:
        raise ValueError(f"field '{name}' of dataset '{dataset.name}' was not written by an apply of this plugin: "
                         f"choose another field name (--field), or delete it first "
                         f"(dataset.delete_sample_field('{name}'))")


def _staged_names(dataset: fo.Dataset) -> dict[str, dict[str, list[str]]]:
    """token -> {"evaluations": [...], "brain_runs": [...], "fields": [...]} of every staged name."""
    found: dict[str, dict[str, list[str]]] = {}
    for kind, names in (("evaluations", dataset.list_evaluations()), ("brain_runs", dataset.list_brain_runs()),
                        ("fields", list(dataset.get_field_schema()))):
        for name in names:
            match = _STAGED.fullmatch(name)
            if match:
                found.setdefault(match[1], {"evaluations": [], "brain_runs": [], "fields": []})[kind].append(name)
    return found


def _drop(dataset: fo.Dataset, token: str) -> list[str]:
    """Delete every staged evaluation, brain run and field of ``token``; returns their names."""
    names = _staged_names(dataset).get(token, {"evaluations": [], "brain_runs": [], "fields": []})
    for name in names["evaluations"]:  # with their per-sample fields
        dataset.delete_evaluation(name)
    for name in names["brain_runs"]:
        dataset.delete_brain_run(name)
    fields = [name for name in names["fields"] if dataset.has_sample_field(name)]
    if fields:
        dataset.delete_sample_fields(fields)
    return names["evaluations"] + names["brain_runs"] + fields


# --------------------------------------------------------------------------- recovery


def recover(dataset: fo.Dataset, *, other_hosts: bool = False) -> list[str]:
    """Finish or undo the staged writes that dead processes left on ``dataset``.

    Returns one line per staged write handled or left alone (also logged as a warning).
    """
    staged = _staged_names(dataset)  # names first, then the journal: a live writer journals before naming
    journal = _journal(dataset)
    entries = {key: journal.get(key) for key in journal.list_keys()}
    report = []
    for token in sorted(set(staged) | set(entries)):
        entry = entries.get(token)
        who = describe_owner(entry and entry.get("owner"))
        state = owner_state(entry and entry.get("owner")) if entry else "gone"
        if state == "alive" or (state == "unknown" and not other_hosts):
            if state == "unknown":
                report.append(f"staged write {token} of {who} left alone: that process may still run "
                              f"(another host)")
            continue
        # take the leftovers over, so that no other process works on them at the same time
        mine = {**(entry or {"state": "writing"}), "owner": owner()}
        taken = journal.compare_and_set(token, entry, mine) if entry else journal.set_if_absent(token, mine)
        if not taken:
            continue
        if mine.get("state") == "committing":
            _commit(dataset, mine["plan"])
            left = _drop(dataset, token)  # nothing, unless the plan missed a name
            report.append(f"finished the swap of a killed write ({who}): "
                          f"{', '.join(mine['plan']['fields']) or 'runs only'} now hold its new results"
                          + (f"; dropped {', '.join(left)}" if left else ""))
        else:
            dropped = _drop(dataset, token)
            if dropped or entry:
                removed = ", ".join(dropped) or "nothing staged yet"
                report.append(f"removed what a killed write left ({who}): {removed}; "
                              "the previous results are unchanged")
        journal.delete(token)
    for line in report:
        logger.warning("dataset '%s': %s", dataset.name, line)
    return report


class StagedWrite:
    def __init__(self, dataset: fo.Dataset):
        self.dataset = dataset
        self.token = uuid.uuid4().hex[:8]
        self.fields: dict[str, str] = {}  # final name -> staged name
        self.brain_keys: dict[str, str] = {}
        self.evaluations: dict[str, tuple[str, str]] = {}  # final key -> (staged key, final prediction field)
        self.stale_runs: list[str] = []  # evaluations / brain runs the new results no longer include
        self.recovered: list[str] = []  # what recover() did before this write began
        self._journal = None
        self._lease = ExitStack()  # the dataset lease, held from __enter__ to __exit__

    def _staged(self, name: str) -> str:
        return f"staged_{self.token}_{name}"

    def field(self, name: str) -> str:
        """The temporary name under which to write the field ``name`` (which, if it exists, must be
        one a staged write made: see :func:`check_replaceable`)."""
        if name not in self.fields:
            check_replaceable(self.dataset, name)
        return self.fields.setdefault(name, self._staged(name))

    def brain_key(self, key: str) -> str:
        """The temporary key under which to compute the brain run ``key``."""
        return self.brain_keys.setdefault(key, self._staged(key))

    def evaluation(self, key: str, pred_field: str) -> str:
        """The temporary key under which to evaluate the staged field of ``pred_field`` (an existing
        evaluation ``key`` must be of that field)."""
        if key in self.dataset.list_evaluations():
            scored = self.dataset.get_evaluation_info(key).config.pred_field
            if scored != pred_field:
                raise ValueError(f"evaluation '{key}' of dataset '{self.dataset.name}' scores '{scored}', not "
                                 f"'{pred_field}': choose another field name, or delete it first")
        staged = self._staged(key)
        self.evaluations[key] = (staged, pred_field)
        return staged

    def discard(self, key: str) -> None:
        """Delete the evaluation or brain run ``key`` at commit (the new results have none)."""
        self.stale_runs.append(key)

    def plan(self) -> dict:
        return {"fields": dict(self.fields), "brain_keys": dict(self.brain_keys),
                "evaluations": {k: list(v) for k, v in self.evaluations.items()},
                "stale_runs": list(self.stale_runs)}

    def commit(self) -> None:
        if self._journal is not None:  # from here on a killed swap is finished, not undone
            self._journal.set(self.token, {"owner": owner(), "state": "committing", "plan": self.plan()})
        _commit(self.dataset, self.plan())
        if self._journal is not None:
            self._journal.delete(self.token)

    def rollback(self) -> None:
        _drop(self.dataset, self.token)
        if self._journal is not None:
            self._journal.delete(self.token)

    def __enter__(self) -> StagedWrite:
        with ExitStack() as held:
            held.enter_context(dataset_lease(self.dataset))  # one writer of the dataset's fields at a time
            self.recovered = recover(self.dataset)
            self._journal = _journal(self.dataset)
            self._journal.set(self.token, {"owner": owner(), "state": "writing"})
            self._lease = held.pop_all()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self._lease.close()

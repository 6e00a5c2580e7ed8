"""Fault injection: ``kill -9`` the real ``cilp`` command at its worst moments, then check what survived.

Every fault is injected into a ``cilp`` subprocess (the test's private database, small generated
data); the moment is found from the plain progress lines the command prints when its output is not
a terminal, or from what the database shows (a staged field, the staging journal). Kept fast
(2 x 60 pairs, 3 epochs, batch 16): ``pytest -m faults``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest

from cilp_plugin.data import layout, synth
from cilp_plugin.dataset import ingest, owners, splits
from cilp_plugin.writeback import staging

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("cilp")
CILP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cilp_plugin.cli"]


class Command:
    """A ``cilp`` subprocess whose output lines are read as they come."""

    def __init__(self, *args: str, env: dict | None = None):
        self.args = args
        self.lines: list[str] = []
        self._new: queue.Queue = queue.Queue()
        self.process = subprocess.Popen(
            [*CILP, *map(str, args)], cwd=REPO, env={**os.environ, **(env or {})}, text=True, bufsize=1,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        """The first output line matching ``pattern`` (fails if the command ends or times out first)."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if re.search(pattern, line):
                return line
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"`cilp {' '.join(self.args[:1])}` ended before printing {pattern!r}:\n{self.output}")
            if re.search(pattern, line):
                return line
        pytest.fail(f"no {pattern!r} within {timeout:.0f} s:\n{self.output}")

    def kill9(self) -> None:
        assert self.process.poll() is None, f"the command had already ended:\n{self.output}"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        assert self.process.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 240.0) -> str:
        self.process.wait(timeout)
        self._reader.join(10)  # the last lines
        assert self.process.returncode == 0, f"`cilp {' '.join(self.args)}` failed:\n{self.output}"
        return self.output


def cilp(*args: str, env: dict | None = None) -> str:
    return Command(*args, env=env).finish()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("faults") / "data", n_per_class=60, seed=5)


@pytest.fixture(scope="module")
def split_dataset(data):
    dataset = ingest.ingest(data, f"faults-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.25, seed=0)  # 90 train / 30 val
    yield dataset
    dataset.delete()


def whole_groups(dataset) -> dict[str, list]:
    """pair id -> [(group id, slice)] of every sample; asserts every pair is one group with each slice once."""
    flat = dataset.select_group_slices(_allow_mixed=True)
    groups: dict[str, list] = {}
    for gid, pid, slice_name in zip(*flat.values(["group.id", "pair_id", "group.name"])):
        groups.setdefault(pid, []).append((gid, slice_name))
    for pid, members in groups.items():
        assert len({gid for gid, _ in members}) == 1, f"{pid} spans several groups: {members}"
        assert sorted(s for _, s in members) == sorted(ingest.SLICES), f"{pid}: slices {members}"
    assert len(dataset) == len(groups)
    return groups


# --------------------------------------------------------------------------- training


def test_kill_9_mid_epoch_then_resume_finishes_the_run(split_dataset, tmp_path):
    from cilp_plugin.runs.registry import find_run
    from mm_models import load_run
    from mm_models.checkpoint import read_manifest

    train = ["train", split_dataset.name, "--family", "intermediate", "--epochs", "3", "--batch-size", "16",
             "--precision", "fp32", "--runs-dir", tmp_path / "runs", "--run-name", "killed"]
    running = Command(*train)
    running.wait_for(r"killed: epoch 1/3")
    time.sleep(0.1)  # into epoch 2 (an epoch takes ~1 s here)
    running.kill9()
    assert "epoch 2/3" not in running.output, "the kill came after epoch 2: nothing was cut short"

    resumed = cilp(*train, "--resume")
    assert "epoch 1/3" not in resumed, "--resume trained epoch 1 again"
    assert "killed: epoch 2/3" in resumed and "killed: epoch 3/3" in resumed
    run_dir = Path(re.search(r"killed: best epoch \d.* -> (\S+)$", resumed, re.M)[1])
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["epochs_completed"] == 3
    epochs = [int(float(line.split(",")[0])) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]
    loaded = load_run(run_dir)  # the result loads: the checkpoint matches its manifest
    assert loaded is not None
    split_dataset.reload()
    assert find_run(split_dataset, "killed") == run_dir  # recorded on the dataset once finished


# --------------------------------------------------------------------------- apply


FIELD = "pred"


def snapshot(dataset) -> dict:
    """What one apply into FIELD left: per sample, per evaluation and per map (compare two with ``same``)."""
    dataset.reload()
    flat = dataset.select_group_slices(_allow_mixed=True)
    ids, labels, logits, embeddings = flat.values(["id", f"{FIELD}.id", f"{FIELD}.logits", f"{FIELD}_embedding"])
    return {
        "logits": dict(zip(ids, [None if v is None else np.asarray(v) for v in logits])),
        "embeddings": dict(zip(ids, [None if v is None else np.asarray(v) for v in embeddings])),
        "label_ids": dict(zip(ids, labels)),
        "map": (dataset.load_brain_results(f"{FIELD}_map", cache=False).points
                if f"{FIELD}_map" in dataset.list_brain_runs() else None),
    }


def close(a, b) -> bool:
    """The same apply's values (to bf16 autocast, which a CPU probe may or may not pick, per process)."""
    return a is not None and b is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=5e-2, atol=5e-2)


def matches(state: dict, reference: dict) -> dict[str, bool]:
    """Per sample: do its prediction and embedding equal ``reference``'s?"""
    return {sid: close(state["logits"][sid], reference["logits"][sid])
            and close(state["embeddings"][sid], reference["embeddings"][sid]) for sid in reference["logits"]}


def assert_consistent(dataset) -> dict:
    """The field, its embedding, its evaluation and its map are one apply's, and nothing staged is left."""
    state = snapshot(dataset)
    assert all(v is not None for v in state["logits"].values()), "samples without predictions"
    assert all(v is not None for v in state["embeddings"].values()), "samples without embeddings"
    assert not [f for f in dataset.get_field_schema() if f.startswith("staged_")]
    assert not [k for k in dataset.list_evaluations() + dataset.list_brain_runs() if k.startswith("staged_")]
    assert staging._journal(dataset).list_keys() == []
    eval_key = f"eval_{FIELD}"
    assert dataset.list_evaluations() == [eval_key]
    assert dataset.get_evaluation_info(eval_key).config.pred_field == FIELD
    results = dataset.load_evaluation_results(eval_key, cache=False)
    assert set(results.ypred_ids) <= set(state["label_ids"].values()), "the evaluation scored other predictions"
    evaluated = dataset.select_group_slices("rgb").match_tags("val")
    assert len(results.ypred_ids) == len(evaluated) and evaluated.exists(eval_key).count() == len(evaluated)
    return state


def poll(condition, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    pytest.fail(f"{condition.__doc__ or condition} did not happen within {timeout:.0f} s")


def test_kill_9_apply_mid_write_keeps_old_or_new_results_never_a_mix(split_dataset):
    from cilp_plugin.runs.registry import shipped_checkpoint
    from cilp_plugin.writeback import apply_run

    dataset = split_dataset  # A: the shipped lidar checkpoint, B: the late-fusion one, both into FIELD
    apply_a = ["apply", dataset.name, "--checkpoint", "lidar", "--field", FIELD, "--embedding-map", "pca"]
    apply_b = ["apply", dataset.name, "--checkpoint", "late", "--field", FIELD, "--embedding-map", "pca"]
    apply_run(dataset, shipped_checkpoint("lidar"), field=FIELD, embedding_map="pca")  # `cilp apply_a`, in process
    old = assert_consistent(dataset)
    journal = staging._journal(dataset)

    # 1) killed while it writes its staged results: the old results stay, whole
    running = Command(*apply_b)

    def staged_field():
        """a staged field"""
        dataset.reload()
        return [f for f in dataset.get_field_schema() if f.startswith("staged_")]

    poll(staged_field)
    running.kill9()
    keys = journal.list_keys()
    assert len(keys) == 1 and journal.get(keys[0])["state"] == "writing", "the kill came after the writes"
    after = snapshot(dataset)
    assert all(matches(after, old).values()) and close(after["map"], old["map"])

    # the next apply removes those leftovers (their process is gone) and writes its own
    cleaned = cilp(*apply_b)
    assert re.search(rf"removed what a killed write left \(pid {running.process.pid} on .*\): "
                     rf"staged_{keys[0]}_", cleaned), cleaned
    new = assert_consistent(dataset)
    assert not any(matches(new, old).values()), "the two checkpoints predict alike: the test cannot tell them apart"
    assert not close(new["map"], old["map"])

    # 2) killed halfway through the swap (a pause between its steps): the next staged write finishes it
    running = Command(*apply_a, env={staging.STEP_DELAY_ENV: "1.0"})

    def swapping():
        """a swap with its first field renamed"""
        keys = journal.list_keys()
        entry = journal.get(keys[0]) if keys else None
        if not entry or entry["state"] != "committing":
            return None
        dataset.reload()
        return entry if f"staged_{keys[0]}_{FIELD}" not in dataset.get_field_schema() else None

    entry = poll(swapping)
    running.kill9()
    mixed = snapshot(dataset)  # the window this recovery closes: the field is A's, its embedding still B's
    assert all(close(mixed["logits"][sid], old["logits"][sid]) for sid in old["logits"])
    assert all(close(mixed["embeddings"][sid], new["embeddings"][sid]) for sid in old["logits"])
    assert owners.owner_state(entry["owner"]) == "gone"
    report = staging.recover(dataset)  # what the next apply does first
    assert report and report[0].startswith(f"finished the swap of a killed write (pid {running.process.pid}")
    state = assert_consistent(dataset)
    assert all(matches(state, old).values()), "after the swap every sample holds the new (A's) results"
    assert close(state["map"], old["map"])


def test_a_live_writer_is_never_cleaned_up_by_another(split_dataset):
    """Two applies at once: the second one's recovery leaves the first one's staged results alone."""
    dataset = split_dataset
    with staging.StagedWrite(dataset) as first:
        dataset.select_group_slices(_allow_mixed=True).set_values(first.field("concurrent"), [1] * 360)
        with staging.StagedWrite(dataset) as second:
            assert second.recovered == []
            assert dataset.has_sample_field(first.field("concurrent"))
            dataset.select_group_slices(_allow_mixed=True).set_values(second.field("concurrent_2"), [2] * 360)
    assert dataset.distinct("concurrent") == [1] and dataset.distinct("concurrent_2") == [2]
    dataset.delete_sample_fields(["concurrent", "concurrent_2"])

    other = {"host": "another-host", "pid": 1, "started": 0.0}  # may still run there: left alone
    journal = staging._journal(dataset)
    journal.set("0000e1e0", {"owner": other, "state": "writing"})
    dataset.select_group_slices(_allow_mixed=True).set_values("staged_0000e1e0_x", [0] * 360)
    assert staging.recover(dataset) == ["staged write 0000e1e0 of pid 1 on another-host left alone: "
                                        "that process may still run (another host)"]
    assert dataset.has_sample_field("staged_0000e1e0_x")
    assert staging.recover(dataset, other_hosts=True)[0].startswith("removed what a killed write left")
    assert not dataset.has_sample_field("staged_0000e1e0_x") and journal.list_keys() == []


# --------------------------------------------------------------------------- ingest


def sample_count(name: str) -> int:
    """Samples of every slice in the database now (0 while the dataset does not exist)."""
    db = fo.core.odm.get_db_conn()  # not fo.load_dataset: it would keep a half-made dataset in its cache
    document = db.datasets.find_one({"name": name}, {"sample_collection_name": 1})
    return db[document["sample_collection_name"]].estimated_document_count() if document else 0


def test_kill_9_ingest_mid_batch_then_reingest_completes_it(data, tmp_path):
    name = f"faults-ingest-{uuid.uuid4().hex[:8]}"
    args = ["ingest", data, "--name", name, "--cache-dir", tmp_path / "cache"]
    running = Command(*args, env={"CILP_INGEST_BATCH": "60"})  # 2 database writes of 60 groups

    def samples_written():
        """the first samples in the database"""
        return sample_count(name) or running.process.poll() is not None

    poll(samples_written, interval=0.005)
    running.kill9()
    dataset = fo.load_dataset(name)
    dataset.reload()
    partial = len(dataset.select_group_slices(_allow_mixed=True))
    assert 0 < partial < 360, f"{partial} samples: the kill did not land mid-ingest"

    done = cilp(*args)
    dataset.reload()
    groups = whole_groups(dataset)
    assert sorted(groups) == sorted(p.pair_id for p in layout.scan(data).pairs)  # each pair once
    assert re.search(r"\d+ pairs added, \d+ already present, 120 groups in all", done)
    again = ingest.ingest(data, name, cache_dir=tmp_path / "cache")
    assert again.added == again.repaired == again.changed == [] and again.existing == 120
    dataset.delete()


def test_kill_9_rebuild_leaves_the_old_dataset_and_the_next_ingest_removes_the_leftover(data, tmp_path):
    name = f"faults-rebuild-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "cache"
    ingest.ingest(data, name, cache_dir=cache)
    running = Command("ingest", data, "--name", name, "--cache-dir", cache, "--rebuild",
                      env={"CILP_INGEST_BATCH": "10"})
    running.wait_for(r"added 10/120 groups")
    running.kill9()
    leftovers = [n for n in fo.list_datasets() if n.startswith(f"{name}.rebuild-")]
    assert len(leftovers) == 1
    assert len(whole_groups(fo.load_dataset(name))) == 120  # the old dataset, untouched

    done = cilp("ingest", data, "--name", name, "--cache-dir", cache)
    assert f"removed 1 unfinished rebuilds of '{name}' (a killed `--rebuild`): {leftovers[0]} (" in done
    assert f"by pid {running.process.pid} on " in done
    assert not [n for n in fo.list_datasets() if n.startswith(f"{name}.rebuild-")]
    fo.delete_dataset(name)

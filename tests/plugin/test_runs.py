"""Runs a user can trust: a run replaces its namesake only when it finished, each dataset keeps
its own runs, and runs are recorded in FiftyOne's run registry of the dataset."""

import fcntl
import uuid

import pytest

from cilp_plugin.dataset import ingest, splits
from cilp_plugin.runs.registry import find_run, recorded_runs
from cilp_plugin.runs.training import train_on_dataset
from mm_models import ModelConfig, TrainConfig, load_run
from mm_models.engine import is_batch_update

LIDAR = ModelConfig(family="lidar")
FAST = dict(batch_size=8, precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def datasets(tiny_data):
    """Two datasets of the same pairs, split alike."""
    made = [ingest.ingest(tiny_data, f"runs-{uuid.uuid4().hex[:8]}").dataset for _ in range(2)]
    for dataset in made:
        splits.create_splits(dataset, val=0.25, seed=0)
    yield made
    for dataset in made:
        dataset.delete()


def train_lidar(dataset, runs_dir, epochs=1, **options):
    return train_on_dataset(dataset, LIDAR, TrainConfig(epochs=epochs, **FAST), runs_dir=runs_dir, **options)


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_runs_are_recorded_in_the_run_registry_per_dataset(datasets, runs_dir):
    a, b = datasets
    run_a = train_lidar(a, runs_dir).run_dir
    run_b = train_lidar(b, runs_dir, overwrite=True).run_dir  # same name, another dataset: a's run stays
    assert run_a == runs_dir / a.slug / "lidar" and run_b == runs_dir / b.slug / "lidar"
    assert recorded_runs(a) == {"lidar": run_a} and recorded_runs(b) == {"lidar": run_b}
    info = a.get_run_info("lidar")
    assert info.config.method == "cilp_train" and info.config.kind == "classifier"
    assert info.config.best["val/accuracy"] == load_run(run_a).manifest["best"]["val/accuracy"]
    assert find_run(a, "lidar") == run_a and load_run(run_a).manifest["status"] == "finished"


def test_a_run_that_cannot_start_or_fails_leaves_the_previous_one(datasets, runs_dir):
    dataset = datasets[0]
    run = find_run(dataset, "lidar") if recorded_runs(dataset) else train_lidar(dataset, runs_dir).run_dir
    before = files_of(run)
    with pytest.raises(ValueError, match="device"):
        train_on_dataset(dataset, LIDAR, TrainConfig(epochs=1, batch_size=8, device="cuda"), runs_dir=runs_dir,
                         overwrite=True)

    def interrupt_after_epoch_1(fraction, label):
        if "epoch 1/" in label and not is_batch_update(label):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lidar(dataset, runs_dir, epochs=2, overwrite=True, progress=interrupt_after_epoch_1)
    assert files_of(run) == before and find_run(dataset, "lidar") == run
    with pytest.raises(ValueError, match="was interrupted .*--resume"):
        train_lidar(dataset, runs_dir, epochs=2)

    result = train_lidar(dataset, runs_dir, epochs=2, resume=True)  # continues the interrupted one
    assert result.run_dir == run and len(result.history) == 2 and files_of(run) != before
    assert result.manifest["status"] == "finished" and not (run.parent / ".partial" / "lidar").exists()


def test_a_run_stopped_in_its_first_epoch_resumes_from_the_start(datasets, runs_dir):
    dataset = datasets[1]

    def interrupt_at_once(fraction, label):
        if "epoch 1/" in label:  # a batch update or the epoch's end: either way before last.pt exists
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lidar(dataset, runs_dir, name="early", progress=interrupt_at_once)
    partial = runs_dir / dataset.slug / ".partial" / "early"
    (partial / "last.pt").unlink(missing_ok=True)  # as if killed before the first epoch ended
    result = train_lidar(dataset, runs_dir, name="early", resume=True)
    assert result.manifest["status"] == "finished" and len(result.history) == 1


def test_an_existing_run_needs_overwrite_or_resume(datasets, runs_dir):
    dataset = datasets[0]
    if not recorded_runs(dataset):
        train_lidar(dataset, runs_dir)
    with pytest.raises(ValueError, match="run 'lidar' exists .*--overwrite.*--resume"):
        train_lidar(dataset, runs_dir)
    with pytest.raises(ValueError, match="choose one"):
        train_lidar(dataset, runs_dir, overwrite=True, resume=True)


def test_a_run_being_trained_elsewhere_is_refused(datasets, runs_dir):
    dataset = datasets[1]
    lock_path = runs_dir / dataset.slug / ".partial" / "busy.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="'busy' is being trained by another process"):
            train_lidar(dataset, runs_dir, name="busy")
    assert "busy" not in recorded_runs(dataset)


def test_a_run_name_of_another_tool_is_not_taken_over(datasets, runs_dir):
    dataset = datasets[1]
    dataset.register_run("theirs", dataset.init_run(note="another tool's run"))
    with pytest.raises(ValueError, match="'theirs' names a run of another tool"):
        train_lidar(dataset, runs_dir, name="theirs")
    assert dataset.get_run_info("theirs").config.note == "another tool's run"

"""The cilp command under torchrun: two CPU processes (gloo), one run folder, one record per run."""

import json
import os
import subprocess
import sys

import pytest

from cilp_plugin.runs.registry import recorded_runs
from cilp_plugin.runs.training import PARTIAL

pytestmark = pytest.mark.slow


def torchrun_cilp(*args) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m cilp_plugin.cli ARGS``; the processes inherit the test
    database (FIFTYONE_DATABASE_URI, ...)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "cilp_plugin.cli", *map(str, args)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)


def test_train_and_train_cilp_under_torchrun_write_and_record_each_run_once(split_dataset, tmp_path):
    runs = tmp_path / "runs"
    common = ["--device", "cpu", "--precision", "fp32", "--batch-size", "4", "--runs-dir", runs]
    done = torchrun_cilp("train", split_dataset.name, "--family", "lidar", "--epochs", "2", *common)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("lidar: best epoch") == 1, done.stdout  # rank 0 alone reports

    # the cilp stage reads its parent, the lidar run rank 0 wrote, on both processes
    done = torchrun_cilp("train-cilp", split_dataset.name, "--stages", "cilp", "--epochs", "1", *common)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("cilp: best epoch") == 1, done.stdout

    folder = runs / split_dataset.slug
    assert sorted(p.name for p in folder.iterdir()) == [PARTIAL, "cilp", "lidar"]
    assert sorted(p.name for p in (folder / PARTIAL).iterdir()) == ["cilp.lock", "lidar.lock"]
    split_dataset.reload()
    assert recorded_runs(split_dataset) == {"lidar": folder / "lidar", "cilp": folder / "cilp"}
    assert split_dataset.list_runs().count("lidar") == 1
    for run in ("lidar", "cilp"):  # trained by both processes together
        assert json.loads((folder / run / "manifest.json").read_text())["processes"] == 2

"""`make demo`'s script end to end on a few generated pairs: every step runs, every run is written back."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import fiftyone as fo
import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
RUNS = ["late", "intermediate_concat", "intermediate_add", "intermediate_mul", "intermediate_add_strided",
        "cilp", "rgb2lidar"]

pytestmark = pytest.mark.slow  # nine trainings of one epoch, seven applies, each step its own process


def test_the_demo_runs_every_step_and_writes_every_run_back(tmp_path):
    name = f"demo-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATA": str(tmp_path / "data"), "N_PER_CLASS": "24", "SUBSET": "1.0", "DATASET": name,
           "RUNS": str(tmp_path / "runs"), "EPOCHS": "1", "PRESET": "demo", "PY": sys.executable,
           "CILP": str(Path(sys.executable).parent / "cilp")}
    before = set(psutil.pids())
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for step in ("generate 48 pairs", "ingest", "split", "train the fusion suite", "train the CILP stages",
                 "apply 7 runs", "search", "report", "all (after set-up)"):
        assert f"| {step}" in done.stdout, step
    dataset = fo.load_dataset(name)
    fields = dataset.select_group_slices("rgb").get_field_schema()
    assert {f"eval_{run}" for run in RUNS if run != "cilp"} <= set(dataset.list_evaluations())
    assert {run for run in RUNS if run != "cilp"} | {"cilp_embedding", "cilp_pair_similarity"} <= set(fields)
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    # the database client the script holds open for its steps went with it
    left = [p for p in psutil.process_iter(["pid", "cmdline"])
            if p.pid not in before and "database.get_db_conn()" in " ".join(p.info["cmdline"] or [])]
    assert not left, left
    dataset.delete()

"""The benchmark scripts run end to end on tiny inputs and print their numbers.

They are the project's speed checks, so they must not rot; the numbers themselves
are not judged here (a timed unit test on a shared CI machine would be noise).
"""

import csv
import os
import re
import subprocess
import sys

import pytest

from tests.fiftyone_isolation import REPO

pytestmark = pytest.mark.slow  # whole benchmark scripts, each in a process of its own

NUMBER = r"[\d,]+(?:\.\d+)?"


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    """Where the benchmarks write their CSV files in a test: not the repository's benchmarks/results."""
    monkeypatch.setenv("CILP_BENCH_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def run_benchmark(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def results_rows(folder, benchmark: str, precision: str | None = None) -> list[dict]:
    """The rows of the one CSV file a benchmark wrote, named <benchmark>-<machine>[-<precision>]-<date>.csv
    (``precision``: a pattern)."""
    files = sorted(folder.glob(f"{benchmark}-*.csv"))
    assert len(files) == 1, f"{benchmark}: CSV files {files}"
    name = files[0].name
    with_precision = f"-{precision}" if precision else ""
    assert re.fullmatch(rf"{benchmark}-[a-z0-9-]+{with_precision}-\d{{4}}-\d\d-\d\d\.csv", name), name
    with files[0].open() as f:
        return list(csv.DictReader(f))


def test_bench_generate_prints_pairs_per_second(results_dir):
    out = run_benchmark("bench_generate.py", "--n-per-class", "4", "--repeats", "1")
    assert re.search(rf"generate: 8 pairs x 1 runs, 64x64, best {NUMBER} pairs/s", out), out
    [row] = results_rows(results_dir, "bench_generate")
    assert row["pairs"] == "8" and float(row["best_pairs_per_s"]) > 0


def test_bench_ingest_prints_pairs_per_second(results_dir):
    out = run_benchmark("bench_ingest.py", "--n-per-class", "4")
    assert re.search(rf"ingest: 8 pairs \(3 slices each\) in {NUMBER} s = {NUMBER} pairs/s", out), out
    [row] = results_rows(results_dir, "bench_ingest")
    assert row["pairs"] == "8" and float(row["pairs_per_s"]) > 0


def test_bench_train_prints_a_row_per_loop_and_the_ceiling(results_dir):
    out = run_benchmark("bench_train.py", "--pairs-per-class", "8", "--epochs", "1", "--reference-epochs", "1",
                        "--models", "add", "late", "--batch-size", "4")
    for loop, model in (("engine", "add"), ("engine", "late"), ("engine", "lidar"), ("engine", "cilp"),
                        ("engine", "projector"), ("engine", "rgb2lidar"),
                        (r"reference \(DataLoader x2, fp32\)", "add")):
        assert re.search(rf"^\| {loop} \| {model} \| {NUMBER} \| {NUMBER} \|", out, re.MULTILINE), out
    assert re.search(rf"engine / reference on intermediate add: {NUMBER}x", out), out
    assert re.search(rf"ceiling for intermediate add .*: {NUMBER} samples/s = {NUMBER}x the reference", out), out
    assert re.search(rf"^\| engine \| cilp \| .* \| top-1 {NUMBER} % \|$", out, re.MULTILINE), out
    assert re.search(rf"^\| engine \| projector \| .* \| MSE {NUMBER} \|$", out, re.MULTILINE), out
    rows = results_rows(results_dir, "bench_train", "(?:fp32|bf16)")  # precision auto: the machine's choice
    assert [(r["loop"].split()[0], r["model"]) for r in rows] == [
        ("engine", "add"), ("engine", "late"), ("engine", "lidar"), ("engine", "cilp"), ("engine", "projector"),
        ("engine", "rgb2lidar"), ("reference", "add"), ("ceiling", "add")]
    assert all(float(r["samples_per_s"]) > 0 for r in rows)


def test_bench_scale_prints_a_row_per_size(results_dir):
    out = run_benchmark("bench_scale.py", "--quick")
    change = rf"[+-]{NUMBER} % \(cold [+-]{NUMBER} %\)"
    memory = rf"{NUMBER} MB \({NUMBER} MB\)"  # peak RSS (PSS)
    assert re.search(rf"^\| 40 \| {NUMBER} GB \| {NUMBER} GB \| {NUMBER} \| {memory} \| {NUMBER} \| {memory} "
                     rf"\| {NUMBER} \| {memory} \| {NUMBER} \| {memory} \| {NUMBER} \| {change} \|$", out,
                     re.MULTILINE), out
    assert re.search(rf"streamed / resident, median of the paired rounds: 40: {change}", out), out
    [row] = results_rows(results_dir, "bench_scale")
    assert row["pairs"] == "40" and float(row["resident_samples_per_s"]) > 0 and float(row["streamed_vs_resident"]) > 0


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
def test_bench_train_refuses_sizes_below_one(flag):
    done = subprocess.run([sys.executable, "benchmarks/bench_train.py", flag, "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"{flag}: must be >= 1" in done.stderr


def test_bench_lidar_input_prints_a_row_per_input_and_length(results_dir):
    out = run_benchmark("bench_lidar_input.py", "--n-per-class", "10", "--inputs", "isotropic", "metres",
                        "--epochs", "1", "2")
    for lidar_input, epochs in (("isotropic", 1), ("isotropic", 2), ("metres", 1), ("metres", 2)):
        row = rf"^\| {lidar_input} \| {epochs} \| .* \| {NUMBER} % \| {NUMBER} % \|$"
        assert re.search(row, out, re.MULTILINE), out
    rows = results_rows(results_dir, "bench_lidar_input-near", "fp32")
    assert [(r["lidar_input"], r["epochs"]) for r in rows] == [("isotropic", "1"), ("isotropic", "2"),
                                                                ("metres", "1"), ("metres", "2")]
    assert all(0 <= float(r["best_val_accuracy"]) <= 1 for r in rows)


def test_bench_classes_prints_a_row_per_model_of_three_classes(results_dir):
    out = run_benchmark("bench_classes.py", "--classes", "cube,sphere,cylinder", "--n-per-class", "20",
                        "--preset", "demo", "--models", "add", "late", "--image-size", "32", "48",
                        "--beams", "16", "32")
    assert "3 classes (cube, sphere, cylinder): 48 train / 12 val pairs; images (32, 48), beams (16, 32)" in out, out
    for model in ("add", "late", "lidar", r"rgb2lidar \(" + NUMBER + " % before fine-tuning\\)"):
        assert re.search(rf"^\| {model} \| {NUMBER} % \| {NUMBER} \| {NUMBER} \((cube|sphere|cylinder)\) \|", out,
                         re.MULTILINE), (model, out)
    assert re.search(rf"^\| cilp .* \| top-1 {NUMBER} % / top-5 {NUMBER} % \| - \| - \|", out, re.MULTILINE), out
    rows = results_rows(results_dir, "bench_classes", "fp32-32x48-demo")
    assert [r["model"] for r in rows][:3] == ["add", "late", "lidar"] and all(r["classes"] == "3" for r in rows)
    assert {(r["image_size"], r["beams"]) for r in rows} == {("32x48", "16x32")}


def test_bench_train_times_other_input_sizes(results_dir):
    out = run_benchmark("bench_train.py", "--pairs-per-class", "8", "--epochs", "1", "--models", "add",
                        "--stages", "lidar", "--batch-size", "4", "--skip-reference", "--image-size", "32", "48",
                        "--beams", "16", "32")
    assert "images (32, 48), beams (16, 32)" in out, out
    assert re.search(rf"ceiling for intermediate add .*: {NUMBER} samples/s", out), out
    rows = results_rows(results_dir, "bench_train", "(?:fp32|bf16)-32x48")
    assert [(r["loop"].split()[0], r["model"]) for r in rows] == [("engine", "add"), ("engine", "lidar"),
                                                                  ("ceiling", "add")]


def test_bench_import_times_clouds_and_checks_the_range_images(results_dir):
    out = run_benchmark("bench_import.py", "--clouds", "20", "--points", "500", "--format", "bin")
    assert "20 .bin clouds (500 points each on average), 20 PNG images" in out, out
    assert re.search(rf"^\| 1 \| {NUMBER} \| {NUMBER} \|$", out, re.MULTILINE), out
    difference = re.search(r"largest difference (\S+) m", out)
    assert difference and float(difference[1]) < 1e-4, out
    rows = results_rows(results_dir, "bench_import", None)
    assert [r["workers"] for r in rows] == ["1", "1"] and all(r["points_per_cloud"] == "500" for r in rows)

"""The cilp command from folder to report, in process."""

import csv
import uuid

import fiftyone as fo
import pytest
from PIL import Image

from cilp_plugin import cli


def test_ingest_split_train_apply_report(tiny_data, tmp_path, capsys):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    assert cli.main(["ingest", str(tiny_data), "--name", name]) == 0
    assert cli.main(["split", name, "--val", "0.25", "--to-json", str(tmp_path / "split.json")]) == 0
    assert cli.main(["train", name, "--family", "lidar", "--epochs", "2", "--batch-size", "8",
                     "--runs-dir", str(runs)]) == 0
    assert cli.main(["apply", name, "lidar"]) == 0
    assert cli.main(["report", "--dataset", name, "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "16 pairs added" in out and "split: 12 train, 4 val" in out
    assert "wrote 'lidar' and 'lidar_embedding' for 16 pairs" in out and "evaluation 'eval_lidar'" in out
    assert "embedding map 'lidar_map'" in out

    rows = list(csv.DictReader(open(tmp_path / "report" / "report.csv")))
    assert [r["run"] for r in rows] == ["lidar"] and rows[0]["epochs"] == "2"
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000
    assert "wrote report.md, report.csv, curves.png, confusion.png, embedding_maps.png" in out
    for picture in ("confusion.png", "embedding_maps.png"):  # one panel: eval_lidar, lidar_map
        with Image.open(tmp_path / "report" / picture) as image:
            assert 300 <= image.width <= 400 and image.height > 300
            assert len(set(image.convert("RGB").getdata())) > 50, f"{picture} looks blank"
    assert (runs / name / "lidar" / "model.safetensors").exists()  # runs are kept per dataset
    assert "| lidar | lidar, maxpool |" in (tmp_path / "report" / "report.md").read_text()
    fo.delete_dataset(name)


def test_errors_name_the_problem(tiny_data, capsys):
    assert cli.main(["split", "no-such-dataset"]) == 2
    assert "dataset 'no-such-dataset' does not exist" in capsys.readouterr().err
    assert cli.main(["train", "no-such-dataset", "--epochs", "-1"]) == 2
    assert "epochs: expected an integer >= 1" in capsys.readouterr().err
    assert cli.main(["apply", "no-such-dataset", "lidar", "--embedding-map", "mds"]) == 2
    assert "embedding_map: unknown method 'mds'" in capsys.readouterr().err


@pytest.mark.slow  # waits out FiftyOne's database start timeout
def test_a_database_that_cannot_start_gets_advice(tmp_path):
    """Another MongoDB holding FiftyOne's database folder (as another installation's does): FiftyOne's
    own error, after its minute of waiting, becomes one that says what to do."""
    import importlib.util
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    mongod = Path(importlib.util.find_spec("fiftyone").origin).parent / "db" / "bin" / "mongod"
    (tmp_path / "db").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = subprocess.Popen([str(mongod), "--dbpath", str(tmp_path / "db"), "--port", str(port), "--bind_ip",
                              "127.0.0.1", "--nounixsocket", "--quiet", "--logpath", str(tmp_path / "other.log")])
    try:
        env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"}
        env["FIFTYONE_DATABASE_DIR"] = str(tmp_path / "db")
        done = subprocess.run([sys.executable, "-m", "cilp_plugin.cli", "split", "any-dataset"], env=env,
                              capture_output=True, text=True, timeout=240)
    finally:
        other.terminate()
        other.wait(30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cilp split: error: FiftyOne could not start its database" in done.stderr
    assert f"Another MongoDB holds its folder {tmp_path / 'db'}" in done.stderr
    assert "FIFTYONE_DATABASE_URI=mongodb://127.0.0.1:PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_training_progress_is_a_bar_on_a_terminal_and_epoch_lines_in_a_log(capsys):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    updates = [(0.1, "late: epoch 1/2: batch 1/5, loss 0.6931"), (0.5, "late: epoch 1/2: val loss 0.5, accuracy 80%"),
               (0.7, "late: epoch 2/2: batch 2/5, loss 0.4012"), (1.0, "late: epoch 2/2: val loss 0.3, accuracy 90%")]
    terminal = Terminal()
    with cli._Bar("training", file=terminal) as bar:
        for fraction, label in updates:
            bar(fraction, label)
    drawn = terminal.getvalue()
    assert "loss 0.4012" in drawn and "\r" in drawn and "100%|" in drawn  # the bar, with the running loss
    lines = [line for line in drawn.replace("\r", "\n").splitlines() if line.startswith("training: late")]
    assert lines == ["training: late: epoch 1/2: val loss 0.5, accuracy 80%",
                     "training: late: epoch 2/2: val loss 0.3, accuracy 90%"]  # each epoch kept above the bar

    with cli._Bar("training", file=io.StringIO()) as bar:  # not a terminal: one plain line per epoch
        for fraction, label in updates:
            bar(fraction, label)
    assert capsys.readouterr().out.splitlines() == ["training:  50% late: epoch 1/2: val loss 0.5, accuracy 80%",
                                                    "training: 100% late: epoch 2/2: val loss 0.3, accuracy 90%"]


def test_quirks_from_generate_to_split(tmp_path, capsys):
    """`generate --quirks`, then what `validate`, `ingest` and `split --exclude-tags` make of them."""
    root, name = tmp_path / "quirky", f"cli-quirks-{uuid.uuid4().hex[:8]}"
    assert cli.main(["generate", str(root), "--n-per-class", "6", "--seed", "2", "--quirks", "1"]) == 0
    assert cli.main(["validate", str(root)]) == 0
    validated = capsys.readouterr().out
    for line in ("cubes: 6 pairs, 1 unpaired, 0 bad files", "spheres: 6 pairs, 1 unpaired, 0 bad files",
                 "2 pairs with an all-black RGB image (tag blank_rgb): cube_",
                 "2 pairs byte-identical to an earlier pair (tag duplicate): cube_",
                 "2 unpaired copies named 'NNNN (n)', 2 byte-identical to their original"):
        assert line in validated

    assert cli.main(["ingest", str(root), "--name", name]) == 0
    ingested = capsys.readouterr().out
    assert "12 pairs added" in ingested and "2 pairs with an all-black RGB image (tag blank_rgb)" in ingested
    dataset = fo.load_dataset(name)
    rgb = dataset.select_group_slices("rgb")
    tagged = set(rgb.match_tags(["blank_rgb", "duplicate"]).values("pair_id"))
    assert len(tagged) == 4

    assert cli.main(["split", name, "--val", "0.5", "--exclude-tags", "blank_rgb", "duplicate"]) == 0
    assert "split: 4 train, 4 val pairs" in capsys.readouterr().out  # the 8 untagged pairs
    assert set(rgb.match_tags(["train", "val"]).values("pair_id")) == set(rgb.values("pair_id")) - tagged
    fo.delete_dataset(name)

"""Files the run folders get are never writable by others, whatever folder they land in."""

import os
import stat

import pytest

from mm_models.checkpoint import atomic_write, write_json


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def folder(tmp_path):
    def make(mode):
        path = tmp_path / f"folder-{mode:o}"
        path.mkdir()
        path.chmod(mode)
        return path

    return make


def test_a_file_written_into_a_world_writable_folder_is_not_world_writable(folder):
    shared = folder(0o777)  # a shared scratch folder (like /tmp without its sticky bit)
    write_json(shared / "manifest.json", {"a": 1})
    atomic_write(shared / "weights.bin", lambda temp: open(temp, "wb").write(b"x"))
    for name in ("manifest.json", "weights.bin"):
        mode = mode_of(shared / name)
        assert mode & 0o022 == 0, f"{name}: {mode:o} lets others write it"
        assert mode & 0o444 == 0o444, f"{name}: {mode:o}: the App server and executors must read it"


def test_a_file_written_into_a_private_folder_stays_private(folder):
    private = folder(0o700)
    write_json(private / "manifest.json", {"a": 1})
    assert mode_of(private / "manifest.json") & 0o077 == 0

"""Downloads over real HTTP (a loopback server): good archives install, bad ones change nothing.

The server speaks plain http, so every download here opts in with ``allow_http``.
"""

import functools
import http.server
import os
import shutil
import stat
import threading
import zipfile

import pytest

from cilp_plugin import cli
from cilp_plugin.data import layout
from cilp_plugin.data.download import DownloadError, download, safe_extract


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_data):
    """Serves a folder of archives on 127.0.0.1; yields (folder, base URL)."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(site / "good.zip", "w") as zf:  # class folders nested two deep
        for path in tiny_data.rglob("*"):
            zf.write(path, f"data/assessment/{path.relative_to(tiny_data)}")
    good = (site / "good.zip").read_bytes()
    with zipfile.ZipFile(site / "assessment.zip", "w") as zf:  # the assessment's folder: data and lidar_cnn.pt
        for path in tiny_data.rglob("*"):
            zf.write(path, f"data/assessment/{path.relative_to(tiny_data)}")
        zf.writestr("data/assessment/lidar_cnn.pt", b"weights")
    (site / "truncated.zip").write_bytes(good[: len(good) // 2])
    (site / "error.html").write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    with zipfile.ZipFile(site / "traversal.zip", "w") as zf:
        zf.writestr("data/cubes/rgb/0000.png", b"x")
        zf.writestr("../../escaped.txt", b"owned")
    with zipfile.ZipFile(site / "absolute.zip", "w") as zf:
        zf.writestr("/tmp/cilp-escaped.txt", b"owned")
    with zipfile.ZipFile(site / "symlink.zip", "w") as zf:
        link = zipfile.ZipInfo("data/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    with zipfile.ZipFile(site / "nodata.zip", "w") as zf:
        zf.writestr("readme.txt", "no class folders here")
    with zipfile.ZipFile(site / "many.zip", "w") as zf:  # 1,000 entries
        for i in range(1000):
            zf.writestr(f"data/cubes/rgb/{i:04d}.png", b"x")
    with zipfile.ZipFile(site / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:  # 64 MB of zeros in ~64 KB
        zf.writestr("data/cubes/lidar/0000.npy", bytes(64 << 20))

    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str] = []  # the paths asked for, by every test of the module

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requested.append(self.path)
        super().do_GET()


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_good_zip_is_found_validated_and_installed(server, tmp_path, tiny_data):
    _, url = server
    report = download(f"{url}/good.zip", tmp_path / "data", quiet=True, allow_http=True)
    assert report.usable and len(report.pairs) == 16
    assert snapshot(tmp_path / "data") == snapshot(tiny_data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "temporary files left behind"


def test_the_assessments_lidar_cnn_is_kept_beside_the_data_with_how_to_use_it(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "data"
    assert cli.main(["download", f"{url}/assessment.zip", "--dest", str(dest), "--allow-http"]) == 0
    assert (dest / "lidar_cnn.pt").read_bytes() == b"weights"
    assert f"cilp train-cilp DATASET --lidar-from {dest / 'lidar_cnn.pt'}" in capsys.readouterr().err
    assert sorted(p.name for p in dest.iterdir()) == ["cubes", "lidar_cnn.pt", "spheres"]


def test_existing_class_folders_need_force_and_force_replaces_only_them(server, tmp_path, capsys, tiny_data):
    _, url = server
    dest = tmp_path / "data"
    (dest / "cubes" / "rgb").mkdir(parents=True)
    (dest / "cubes" / "rgb" / "stale.png").write_bytes(b"old")
    (dest / "keep.txt").write_text("mine")
    synthetic = shutil.copytree(tiny_data, dest / "synthetic")  # make demo's data, beside the download

    assert cli.main(["download", f"{url}/good.zip", "--dest", str(dest), "--allow-http"]) == 2
    assert "already holds cubes (use --force" in capsys.readouterr().err
    assert (dest / "cubes" / "rgb" / "stale.png").exists()

    assert cli.main(["download", f"{url}/good.zip", "--dest", str(dest), "--force", "--allow-http"]) == 0
    assert (dest / "keep.txt").read_text() == "mine"
    assert snapshot(synthetic) == snapshot(tiny_data) and layout.scan(synthetic).usable
    assert not (dest / "cubes" / "rgb" / "stale.png").exists()
    assert snapshot(dest / "cubes") == snapshot(tiny_data / "cubes") and layout.scan(dest).usable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "temporary files left behind"


def test_data_beside_other_folders_installs_without_force(server, tmp_path, tiny_data):
    _, url = server
    dest = tmp_path / "data"
    synthetic = shutil.copytree(tiny_data, dest / "synthetic")
    report = download(f"{url}/good.zip", dest, quiet=True, allow_http=True)
    assert report.usable and snapshot(synthetic) == snapshot(tiny_data)
    assert sorted(p.name for p in dest.iterdir()) == ["cubes", "spheres", "synthetic"]


@pytest.mark.parametrize("name, message", [
    ("traversal.zip", "unsafe entry '../../escaped.txt'"),
    ("absolute.zip", "unsafe entry '/tmp/cilp-escaped.txt'"),
    ("symlink.zip", "unsafe entry 'data/link' (symbolic link)"),
    ("truncated.zip", "corrupt or truncated zip archive"),
    ("error.html", "HTML page, not a zip archive"),
    ("nodata.zip", "no data found: expected folders cubes and spheres"),
    ("missing.zip", "404"),
])
def test_bad_download_gives_a_clear_error_and_changes_nothing(server, tmp_path, name, message):
    _, url = server
    dest = tmp_path / "dest" / "data"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("previous data")
    before = snapshot(tmp_path)

    with pytest.raises(DownloadError) as error:
        download(f"{url}/{name}", dest, force=True, quiet=True, allow_http=True)

    assert message in str(error.value)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.parent.rglob("escaped.txt")) and not (tmp_path / "escaped.txt").exists()


def test_invalid_data_in_a_good_zip_is_refused(server, tmp_path, tiny_data):
    site, url = server
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    for path in (broken / "spheres" / "lidar").iterdir():
        path.write_bytes(b"not npy")
    with zipfile.ZipFile(site / "broken.zip", "w") as zf:
        for path in broken.rglob("*"):
            zf.write(path, path.relative_to(broken))

    with pytest.raises(DownloadError, match="not usable") as error:
        download(f"{url}/broken.zip", tmp_path / "data", quiet=True, allow_http=True)
    assert "corrupt or truncated .npy" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_non_http_url_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="expected an https URL"):
        download("ftp://example.org/x.zip", tmp_path / "data", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_plain_http_is_refused_unless_allowed(server, tmp_path, capsys):
    _, url = server
    asked = len(QuietHandler.requested)
    with pytest.raises(DownloadError, match="plain http is refused .* --allow-http"):
        download(f"{url}/good.zip", tmp_path / "data", quiet=True)
    assert cli.main(["download", f"{url}/good.zip", "--dest", str(tmp_path / "data")]) == 2
    assert "use an https URL, or allow it with --allow-http" in capsys.readouterr().err
    assert len(QuietHandler.requested) == asked, "the server was contacted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, limit, message", [
    ("many.zip", {"CILP_ZIP_MAX_ENTRIES": "100"}, "1,000 entries, more than the limit of 100"),
    ("bomb.zip", {"CILP_ZIP_MAX_BYTES": str(16 << 20)},
     "67,108,864 bytes uncompressed, more than the limit of 16,777,216"),
])
def test_an_archive_over_the_caps_is_refused_before_extraction(server, tmp_path, monkeypatch, name, limit, message):
    _, url = server
    for key, value in limit.items():
        monkeypatch.setenv(key, value)
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=message) as error:
        download(f"{url}/{name}", dest, quiet=True, allow_http=True)
    assert name in str(error.value) and "CILP_ZIP_MAX" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_the_caps_are_keywords_too(server, tmp_path):
    site, _ = server
    with pytest.raises(DownloadError, match="more than the limit of 100 "):
        safe_extract(site / "many.zip", tmp_path / "out", max_entries=100)
    assert not (tmp_path / "out").exists()
    safe_extract(site / "many.zip", tmp_path / "out", max_entries=1000)
    assert len(list((tmp_path / "out" / "data" / "cubes" / "rgb").iterdir())) == 1000


def test_bytes_are_counted_while_extracting_not_only_declared(server, tmp_path, monkeypatch):
    """Even if the declared sizes passed, extraction stops at the cap."""
    from cilp_plugin.data import download as dl

    site, _ = server
    monkeypatch.setattr(dl, "_check_declared", lambda *args: None)
    with pytest.raises(DownloadError, match="more than 1,048,576 bytes uncompressed"):
        safe_extract(site / "bomb.zip", tmp_path / "out", max_bytes=1 << 20)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 1 << 20


def test_a_download_over_the_cap_is_abandoned(server, tmp_path):
    site, url = server
    size = (site / "good.zip").stat().st_size
    with pytest.raises(DownloadError, match=f"larger than the limit of {size // 2:,} bytes"):
        download(f"{url}/good.zip", tmp_path / "data", quiet=True, allow_http=True, max_bytes=size // 2)
    assert list(tmp_path.iterdir()) == []


def test_each_entry_is_decompressed_once(server, tmp_path, monkeypatch):
    site, _ = server
    opened = []
    original = zipfile.ZipFile.open

    def counting_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counting_open)
    safe_extract(site / "good.zip", tmp_path / "out")
    with zipfile.ZipFile(site / "good.zip") as zf:
        files = [info.filename for info in zf.infolist() if not info.is_dir()]
    assert sorted(opened) == sorted(files)


def test_a_failed_install_puts_the_previous_class_folders_back(tiny_data, tmp_path, monkeypatch):
    from cilp_plugin.data import download as dl

    dest = shutil.copytree(tiny_data, tmp_path / "data")
    (dest / "notes.txt").write_text("mine")
    new = shutil.copytree(tiny_data, tmp_path / "new")
    (new / "cubes" / "rgb" / "0000.png").write_bytes(b"new")
    before = snapshot(dest)
    moves = []

    def failing_move(source, target):
        moves.append(target)
        if len(moves) == 2:
            raise OSError("disk full")
        return shutil.copytree(source, target)  # a copy: the source stays for the assertion below

    monkeypatch.setattr(dl.shutil, "move", failing_move)
    with pytest.raises(OSError, match="disk full"):
        dl.install_class_folders(new, dest, tmp_path / "trash")
    assert snapshot(dest) == before


def test_extracted_files_follow_the_umask_not_the_archive(tmp_path):
    archive = tmp_path / "modes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        entry = zipfile.ZipInfo("data/cubes/rgb/0000.png")
        entry.external_attr = (stat.S_IFREG | 0o777) << 16
        zf.writestr(entry, b"x")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    previous = os.umask(0o022)
    try:
        safe_extract(archive, shared / "out")
    finally:
        os.umask(previous)
    for path in (shared / "out").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0, path

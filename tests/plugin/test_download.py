"""Downloads over real HTTP (a loopback server): good archives install, bad ones change nothing."""

import functools
import http.server
import shutil
import stat
import threading
import zipfile

import pytest

from cilp_plugin import cli
from cilp_plugin import format as fmt
from cilp_plugin.download import DownloadError, download


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_data):
    """Serves a folder of archives on 127.0.0.1; yields (folder, base URL)."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(site / "good.zip", "w") as zf:  # class folders nested two deep
        for path in tiny_data.rglob("*"):
            zf.write(path, f"data/assessment/{path.relative_to(tiny_data)}")
    good = (site / "good.zip").read_bytes()
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

    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_good_zip_is_found_validated_and_installed(server, tmp_path, tiny_data):
    _, url = server
    report = download(f"{url}/good.zip", tmp_path / "data", quiet=True)
    assert report.usable and len(report.pairs) == 16
    assert snapshot(tmp_path / "data") == snapshot(tiny_data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "temporary files left behind"


def test_existing_data_needs_force(server, tmp_path, capsys):
    _, url = server
    dest = tmp_path / "data"
    (dest / "cubes").mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")

    assert cli.main(["download", f"{url}/good.zip", "--dest", str(dest)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert (dest / "keep.txt").exists()

    assert cli.main(["download", f"{url}/good.zip", "--dest", str(dest), "--force"]) == 0
    assert not (dest / "keep.txt").exists() and fmt.scan(dest).usable


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
        download(f"{url}/{name}", dest, force=True, quiet=True)

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
        download(f"{url}/broken.zip", tmp_path / "data", quiet=True)
    assert "corrupt or truncated .npy" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_non_http_url_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="expected an http"):
        download("ftp://example.org/x.zip", tmp_path / "data", quiet=True)

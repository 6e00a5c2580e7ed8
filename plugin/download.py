"""Fetch the original data: download, extract safely, find, validate, move into place.

Nothing reaches ``dest`` until the archive has been extracted and validated in a
temporary folder beside it, so a failed download leaves ``dest`` as it was.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from . import format as fmt


class DownloadError(RuntimeError):
    """The download, the archive or its contents are not usable; the message says why."""


def fetch(url: str, target: Path, quiet: bool = False) -> Path:
    """Download ``url`` (a Google Drive link or any http(s) URL) to ``target``."""
    import gdown  # imported late: it pulls in requests and bs4

    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: expected an http(s) URL or a Google Drive link")
    try:
        if "drive.google.com/drive/folders" in url:
            files = gdown.download_folder(url, output=str(target), quiet=quiet)
            if not files:
                raise DownloadError(f"{url}: the Google Drive folder is empty or not shared")
            return target
        path = gdown.download(url, output=str(target), quiet=quiet)  # Drive ids are parsed from any link form
    except DownloadError:
        raise
    except Exception as exc:  # gdown raises bare Exceptions, requests its own types
        raise DownloadError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    if path is None or not Path(path).is_file():
        raise DownloadError(f"{url}: download failed (nothing was received)")
    return Path(path)


def _describe_non_zip(path: Path) -> str:
    head = path.read_bytes()[:512]
    if head.startswith(b"PK"):
        return "corrupt or truncated zip archive (no central directory)"
    head = head.lstrip().lower()
    if b"<html" in head or head.startswith(b"<!doctype html"):
        return "the server answered with an HTML page, not a zip archive"
    if not head:
        return "the server answered with an empty file"
    return "not a zip archive"


def safe_extract(archive: Path, dest: Path, source: str | None = None) -> None:
    """Extract a zip into ``dest``, refusing any entry that could land outside it.

    Absolute paths, ``..`` components, drive letters and symbolic links are
    refused before anything is written. Errors name ``source`` (default: the file).
    """
    source = source or archive.name
    if not zipfile.is_zipfile(archive):
        raise DownloadError(f"{source}: {_describe_non_zip(archive)}")
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DownloadError(f"{source}: unsafe entry {name!r} (absolute path or '..')")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DownloadError(f"{source}: unsafe entry {name!r} (symbolic link)")
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{source}: corrupt entry {bad!r} (CRC mismatch)")
            zf.extractall(dest)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{source}: corrupt or truncated zip archive ({exc})") from None


def locate_data_root(top: Path) -> Path:
    """The single folder under ``top`` that holds the class folders."""
    roots = fmt.find_data_roots(top)
    if not roots:
        raise DownloadError(
            f"no data found: expected folders {' and '.join(fmt.CLASS_FOLDERS)} "
            f"(each with rgb/ and lidar/) somewhere in the download"
        )
    if len(roots) > 1:
        listed = ", ".join(str(r.relative_to(top)) for r in roots)
        raise DownloadError(f"several data folders in the download ({listed}); expected one")
    return roots[0]


def download(
    url: str,
    dest: Path | str = "data",
    *,
    force: bool = False,
    quiet: bool = False,
    progress: Callable[[str], None] | None = None,
) -> fmt.ScanReport:
    """Download, extract, validate and install the data at ``url`` into ``dest``.

    Returns the scan report of the installed data. Existing data in ``dest`` is
    replaced only with ``force``; on any failure ``dest`` is left unchanged.
    """
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()) and not force:
        raise FileExistsError(f"{dest}: already holds data (use --force to replace it)")
    say = progress or (lambda message: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download.", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        say(f"downloading {url}")
        received = fetch(url, tmp / "download", quiet=quiet)
        if received.is_file():
            say("extracting")
            safe_extract(received, tmp / "extracted", source=url)
            top = tmp / "extracted"
        else:
            top = received
        root = locate_data_root(top)
        say("validating")
        report = fmt.scan(root)
        if not report.usable:
            raise DownloadError(f"the downloaded data is not usable:\n{report.format_text()}")
        say(f"installing into {dest}")
        _replace(root, dest)
    return fmt.scan(dest, validate=False)


def _replace(source: Path, dest: Path) -> None:
    """Move ``source`` to ``dest``; an existing ``dest`` is removed only once the move can happen."""
    if not dest.exists():
        shutil.move(str(source), str(dest))
        return
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    dest.rename(old)
    try:
        shutil.move(str(source), str(dest))
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)

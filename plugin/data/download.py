"""Fetch the original data: download, extract safely, find, validate, move into place.

Nothing reaches ``dest`` until the archive has been extracted and validated in a
temporary folder beside it, so a failed download leaves ``dest`` as it was. Only the
class folders (``cubes/``, ``spheres/``, any other) are installed: anything else in ``dest``
(``data/synthetic``, notes) is never touched, even with ``force``.

An archive is extracted once, entry by entry, within caps on its number of entries and
its uncompressed size (checked against the sizes it declares, then counted while
writing); the caps default to :data:`MAX_BYTES` and :data:`MAX_ENTRIES` and can be
changed with the keywords ``max_bytes`` / ``max_entries`` or the environment variables
``CILP_ZIP_MAX_BYTES`` / ``CILP_ZIP_MAX_ENTRIES``.
"""

from __future__ import annotations

import inspect
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import layout

#: the DLI zip holds 2 x 9,999 pairs (a 64x64 PNG of at most ~17 KB and a 16.5 KB .npy each):
#: about 40,000 entries and well under 1 GB uncompressed; the caps leave 4-5 times that
MAX_BYTES = 4 * 1024**3
MAX_ENTRIES = 200_000
MAX_BYTES_ENV, MAX_ENTRIES_ENV = "CILP_ZIP_MAX_BYTES", "CILP_ZIP_MAX_ENTRIES"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The download, the archive or its contents are not usable; the message says why."""


@dataclass(frozen=True)
class ZipLimits:
    """The most an archive may hold: total uncompressed bytes and entries (files and folders)."""

    max_bytes: int = MAX_BYTES
    max_entries: int = MAX_ENTRIES

    @classmethod
    def resolve(cls, max_bytes: int | None = None, max_entries: int | None = None) -> ZipLimits:
        """The keywords given, else the environment variables, else the defaults."""
        return cls(max_bytes=_limit("max_bytes", max_bytes, MAX_BYTES_ENV, MAX_BYTES),
                   max_entries=_limit("max_entries", max_entries, MAX_ENTRIES_ENV, MAX_ENTRIES))


def _limit(name: str, value: int | None, env: str, default: int) -> int:
    if value is None:
        text = os.environ.get(env, "").replace("_", "").strip()
        if not text:
            return default
        if not text.isdigit():
            raise ValueError(f"{env}: expected a whole number, got {os.environ[env]!r}")
        value, name = int(text), env
    if value < 1:
        raise ValueError(f"{name}: expected a positive number, got {value}")
    return value


def check_url(url: str, allow_http: bool = False) -> None:
    """Refuse anything but https (and plain http only when ``allow_http``)."""
    if url.startswith("https://"):
        return
    if url.startswith("http://"):
        if allow_http:
            return
        raise DownloadError(f"{url}: plain http is refused (anyone on the way can change the data); "
                            f"use an https URL, or allow it with --allow-http (allow_http=True)")
    raise DownloadError(f"{url}: expected an https URL or a Google Drive link")


def fetch(url: str, target: Path, quiet: bool = False, *, allow_http: bool = False,
          max_bytes: int | None = None) -> Path:
    """Download ``url`` (a Google Drive link or any https URL) to ``target``.

    A file larger than ``max_bytes`` (default: the archive cap) is abandoned as it
    arrives, where gdown can report its progress.
    """
    import gdown  # imported late: it pulls in requests and bs4

    check_url(url, allow_http)
    try:
        if "drive.google.com/drive/folders" in url:
            files = gdown.download_folder(url, output=str(target), quiet=quiet)
            if not files:
                raise DownloadError(f"{url}: the Google Drive folder is empty or not shared")
            return target
        options = _size_guard(gdown.download, url, max_bytes or ZipLimits.resolve().max_bytes)
        path = gdown.download(url, output=str(target), quiet=quiet, **options)  # Drive ids parsed from any link
    except DownloadError:
        raise
    except Exception as exc:  # gdown raises bare Exceptions, requests its own types
        raise DownloadError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    if path is None or not Path(path).is_file():
        raise DownloadError(f"{url}: download failed (nothing was received)")
    return Path(path)


def _size_guard(download: Callable, url: str, max_bytes: int) -> dict:
    """``progress=`` for gdown versions that take it: stop a download past ``max_bytes``."""
    if "progress" not in inspect.signature(download).parameters:
        return {}

    def check(received: int, total: int | None) -> None:
        if received > max_bytes or (total or 0) > max_bytes:
            raise DownloadError(f"{url}: the download is larger than the limit of {max_bytes:,} bytes "
                                f"(max_bytes=, or {MAX_BYTES_ENV}, to raise it)")

    return {"progress": check}


def _describe_non_zip(path: Path) -> str:
    with open(path, "rb") as file:
        head = file.read(512)
    if head.startswith(b"PK"):
        return "corrupt or truncated zip archive (no central directory)"
    head = head.lstrip().lower()
    if b"<html" in head or head.startswith(b"<!doctype html"):
        return "the server answered with an HTML page, not a zip archive"
    if not head:
        return "the server answered with an empty file"
    return "not a zip archive"


def safe_extract(archive: Path, dest: Path, source: str | None = None, *,
                 max_bytes: int | None = None, max_entries: int | None = None) -> None:
    """Extract a zip into ``dest``, refusing any entry that could land outside it, and
    any archive larger than the caps (:class:`ZipLimits`).

    Absolute paths, ``..`` components, drive letters and symbolic links are refused,
    and the declared sizes checked, before anything is written; the bytes are counted
    again while writing. Each entry is decompressed once; its CRC is checked as it is
    read. Errors name ``source`` (default: the file). On an error ``dest`` may hold
    part of the archive: extract into a temporary folder.
    """
    source = source or archive.name
    limits = ZipLimits.resolve(max_bytes, max_entries)
    if not zipfile.is_zipfile(archive):
        raise DownloadError(f"{source}: {_describe_non_zip(archive)}")
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [(info, _safe_parts(info, source)) for info in zf.infolist()]
            _check_declared(entries, limits, source, dest)
            written = 0
            for info, parts in entries:
                if not parts:
                    continue
                target = dest.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written = _extract_file(zf, info, target, written, limits.max_bytes, source)
    except DownloadError:
        raise
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{source}: corrupt or truncated zip archive ({exc})") from None
    except (EOFError, OSError, RuntimeError, NotImplementedError) as exc:  # RuntimeError: encrypted entries
        raise DownloadError(f"{source}: the zip archive cannot be extracted ({type(exc).__name__}: {exc})") from None


def _safe_parts(info: zipfile.ZipInfo, source: str) -> tuple[str, ...]:
    """The entry's path components; raises on one that could land outside the folder."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DownloadError(f"{source}: unsafe entry {name!r} (absolute path or '..')")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DownloadError(f"{source}: unsafe entry {name!r} (symbolic link)")
    return parts


def _check_declared(entries: list, limits: ZipLimits, source: str, dest: Path) -> None:
    """What the central directory declares: entry count and total size within the caps, and room on disk."""
    if len(entries) > limits.max_entries:
        raise DownloadError(f"{source}: {len(entries):,} entries, more than the limit of {limits.max_entries:,} "
                            f"(max_entries=, or {MAX_ENTRIES_ENV}, to raise it)")
    declared = sum(info.file_size for info, _ in entries)
    if declared > limits.max_bytes:
        raise DownloadError(f"{source}: {declared:,} bytes uncompressed, more than the limit of "
                            f"{limits.max_bytes:,} (max_bytes=, or {MAX_BYTES_ENV}, to raise it)")
    folder = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if declared > free:
        raise DownloadError(f"{source}: {declared:,} bytes uncompressed, more than the {free:,} bytes free in {folder}")


def _extract_file(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int,
                  max_bytes: int, source: str) -> int:
    """Copy one entry to ``target``, counting its bytes into ``written`` (returned)."""
    try:
        with zf.open(info) as entry, open(target, "wb") as out:
            while chunk := entry.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadError(f"{source}: more than {max_bytes:,} bytes uncompressed (the limit; "
                                        f"the archive declared less); max_bytes=, or {MAX_BYTES_ENV}, to raise it")
                out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{source}: corrupt entry {info.filename!r} ({exc})") from None
    return written


def locate_data_root(top: Path) -> Path:
    """The single folder under ``top`` that holds the class folders."""
    roots = layout.find_data_roots(top)
    if not roots:
        raise DownloadError(
            f"no data found: expected folders {' and '.join(layout.CLASS_FOLDERS)} "
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
    allow_http: bool = False,
    max_bytes: int | None = None,
    max_entries: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> layout.ScanReport:
    """Download, extract, validate and install the data at ``url`` into ``dest``.

    Installs the class folders (``dest/cubes``, ``dest/spheres``, any other the data holds) and
    returns their scan report. Class folders already in ``dest`` are replaced only with ``force``;
    nothing else in ``dest`` is touched. On any failure ``dest`` is left unchanged.
    Plain http needs ``allow_http``; ``max_bytes`` / ``max_entries`` cap the archive.
    """
    check_url(url, allow_http)
    limits = ZipLimits.resolve(max_bytes, max_entries)
    dest = Path(dest).resolve()
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest}: not a folder")
    existing = [name for name in layout.CLASS_FOLDERS if os.path.lexists(dest / name)]
    if existing and not force:
        raise FileExistsError(f"{dest}: already holds {' and '.join(existing)} (use --force to replace them)")
    say = progress or (lambda message: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download.", dir=dest.parent,
                                     ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        say(f"downloading {url}")
        received = fetch(url, tmp / "download", quiet=quiet, allow_http=allow_http, max_bytes=limits.max_bytes)
        if received.is_file():
            say("extracting")
            safe_extract(received, tmp / "extracted", source=url,
                         max_bytes=limits.max_bytes, max_entries=limits.max_entries)
            received.unlink()  # room on disk for the install
            top = tmp / "extracted"
        else:
            top = received
        root = locate_data_root(top)
        say("validating")
        report = layout.scan(root)
        if not report.usable:
            raise DownloadError(f"the downloaded data is not usable:\n{report.format_text()}")
        folders = list(report.classes)
        existing = [name for name in folders if os.path.lexists(dest / name)]
        if existing and not force:
            raise FileExistsError(f"{dest}: already holds {' and '.join(existing)} (use --force to replace them)")
        say(f"installing {' and '.join(folders)} into {dest}")
        install_class_folders(root, dest, tmp / "replaced", folders)
        keep_lidar_cnn(root, dest, say)
    return layout.scan(dest, validate=False)


#: NVIDIA's pretrained LiDAR classifier, which the assessment's folder holds beside the class folders
LIDAR_CNN = "lidar_cnn.pt"


def keep_lidar_cnn(root: Path, dest: Path, say: Callable[[str], None]) -> Path | None:
    """Move the archive's ``lidar_cnn.pt`` (beside the class folders) into ``dest`` and say how to use it."""
    source = root / LIDAR_CNN
    if not source.is_file() or source.is_symlink():
        return None
    target = dest / LIDAR_CNN
    shutil.move(str(source), str(target))
    say(f"kept the assessment's pretrained LiDAR classifier as {target}: use it as the lidar stage with "
        f"`cilp train-cilp DATASET --lidar-from {target}`")
    return target


def install_class_folders(root: Path, dest: Path, trash: Path,
                          folders: tuple[str, ...] | list[str] = tuple(layout.CLASS_FOLDERS)) -> None:
    """Move ``root``'s class ``folders`` into ``dest``, all or none.

    Class folders already in ``dest`` are moved to ``trash`` (a folder on the same disk,
    deleted by the caller) and put back if any move fails; nothing else in ``dest``
    is touched.
    """
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    trash.mkdir(parents=True, exist_ok=True)
    replaced, cleared = [], []  # cleared: names whose dest/name now holds only new files, if any
    try:
        for name in folders:
            target = dest / name
            if os.path.lexists(target):
                target.rename(trash / name)
                replaced.append(name)
            cleared.append(name)
            shutil.move(str(root / name), str(target))
    except BaseException:
        for name in cleared:
            _remove(dest / name)
        for name in replaced:
            (trash / name).rename(dest / name)
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)

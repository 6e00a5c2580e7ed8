"""Where the operators may read and write: the folders a path from the App must lie in.

An operator's path fields (a data folder, a download or generation target, a split
file, a run folder) arrive from whoever can reach the App; once ``cilp app`` listens
beyond 127.0.0.1 that is anyone on the network, and an overwrite is a delete. So
the operators accept only paths strictly inside one of the allowed roots:

- FiftyOne's dataset dir (``fo.config.default_dataset_dir``), where the operators'
  own downloads, generated data and (by default) runs go;
- the runs dir (``CILP_RUNS_DIR``, see :func:`cilp_plugin.runs.registry.default_runs_dir`);
- the ``data/`` folder of this repository, when running from a checkout (``make demo``'s);
- each folder of ``CILP_ALLOWED_ROOTS`` (separated by ``os.pathsep``, ``:`` on Linux).

Paths are compared after resolving symbolic links. The ``cilp`` command and the
Python functions are not confined: their paths are their user's own.
"""

from __future__ import annotations

import os
from pathlib import Path

ALLOWED_ROOTS_ENV = "CILP_ALLOWED_ROOTS"
PROJECT = Path(__file__).resolve().parents[2]


class PathNotAllowed(ValueError):
    """A path outside the allowed roots; the message names the field, the path and the roots."""


def allowed_roots() -> list[Path]:
    """The folders the operators' paths must lie in (resolved; none inside another)."""
    import fiftyone as fo

    from ..runs.registry import default_runs_dir  # imports fiftyone: not at the operators' load

    roots = [Path(fo.config.default_dataset_dir), default_runs_dir()]
    if (PROJECT / "fiftyone.yml").is_file():  # a checkout, not an installed copy
        roots.append(PROJECT / "data")
    roots += [Path(p) for p in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    resolved = list(dict.fromkeys(root.expanduser().resolve() for root in roots))
    return [root for root in resolved if not any(root != other and root.is_relative_to(other) for other in resolved)]


def confine(field: str, value: str | os.PathLike, roots: list[Path] | None = None) -> Path:
    """``value`` resolved, if it lies strictly inside an allowed root; else :class:`PathNotAllowed`.

    A root itself is refused: replacing it would remove everything in it.
    """
    path = Path(value).expanduser().resolve()
    roots = allowed_roots() if roots is None else roots
    if any(path != root and path.is_relative_to(root) for root in roots):
        return path
    given = Path(value).expanduser().absolute()
    shown = f"{value} (that is, {path})" if given != path else f"{value}"
    raise PathNotAllowed(f"{field}: {shown} is outside the folders the operators may use "
                         f"({describe_roots(roots)})")


def describe_roots(roots: list[Path]) -> str:
    listed = ", ".join(str(root) for root in roots) or "none"
    return f"inside {listed}; add folders to {ALLOWED_ROOTS_ENV}, separated by '{os.pathsep}', to allow more"

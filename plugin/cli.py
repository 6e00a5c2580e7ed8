"""The ``cilp`` command: the same functions the FiftyOne operators call.

    cilp generate data/synthetic --n-per-class 1000 --seed 42
    cilp validate data/synthetic --json
    cilp download URL --dest data
    cilp ingest data/synthetic --name cilp-assessment
    cilp split cilp-assessment --val 0.2 --seed 42 --to-json split.json
    cilp app cilp-assessment
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import format as fmt


def _progress_bar(total: int, unit: str, desc: str):
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=None)


# --------------------------------------------------------------------------- data


def cmd_generate(args) -> int:
    from . import synth

    config = synth.SceneConfig(
        distance=tuple(args.distance), size=tuple(args.size), rgb_noise=args.rgb_noise,
        depth_noise=args.depth_noise, ground_plane=args.ground_plane, distractors=args.distractors,
    )
    start = time.perf_counter()
    with _progress_bar(2 * args.n_per_class, "pair", "generating") as bar:
        dest = synth.generate(args.dest, args.n_per_class, args.seed, config,
                              force=args.force, progress=bar.update)
    seconds = time.perf_counter() - start
    print(f"wrote {2 * args.n_per_class} pairs to {dest} in {seconds:.1f} s "
          f"({2 * args.n_per_class / seconds:,.0f} pairs/s)")
    return 0


def cmd_validate(args) -> int:
    with _progress_bar(fmt.count_candidate_pairs(args.root), "pair", "validating") as bar:
        report = fmt.scan(args.root, progress=bar.update)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.usable else 2


def cmd_download(args) -> int:
    from .download import download

    report = download(args.url, args.dest, force=args.force, progress=lambda m: print(m, file=sys.stderr))
    print(report.format_text())
    return 0


# --------------------------------------------------------------------------- FiftyOne


class _Bar:
    """``progress(fraction, label)`` drawn as a tqdm bar."""

    def __init__(self, desc: str):
        self.bar = tqdm(total=100, desc=desc, unit="%", dynamic_ncols=True, disable=None,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, label: str) -> None:
        self.bar.n = round(100 * fraction)
        self.bar.set_postfix_str(label)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def cmd_ingest(args) -> int:
    from .ingest import ingest

    start = time.perf_counter()
    with _Bar("ingesting") as bar:
        result = ingest(args.root, args.name, cache_dir=args.cache_dir, progress=bar)
    seconds = time.perf_counter() - start
    print(result.summary())
    if result.added:
        print(f"{len(result.added)} pairs in {seconds:.1f} s ({len(result.added) / seconds:,.0f} pairs/s)")
    return 0


def _load(name: str):
    import fiftyone as fo

    if not fo.dataset_exists(name):
        raise ValueError(f"dataset '{name}' does not exist (create it with `cilp ingest`)")
    return fo.load_dataset(name)


def cmd_split(args) -> int:
    from .splits import create_splits

    result = create_splits(
        _load(args.name), val=args.val, test=args.test, subset=args.subset, seed=args.seed,
        stratify=args.stratify, from_json=args.from_json, to_json=args.to_json,
    )
    print(result.summary())
    if args.to_json:
        print(f"wrote {args.to_json}")
    return 0


def cmd_app(args) -> int:
    import fiftyone as fo

    session = fo.launch_app(_load(args.name), port=args.port, address=args.address, remote=True)
    print(f"the App shows '{args.name}' at http://{args.address}:{args.port} (Ctrl-C to stop)")
    session.wait(-1)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cilp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("generate", help="render a synthetic data set in the DLI layout")
    p.add_argument("dest", type=Path, help="folder to create")
    p.add_argument("--n-per-class", type=_positive_int, default=1000, help="pairs per class (1000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (42)")
    p.add_argument("--distance", type=float, nargs=2, default=(9.0, 14.0), metavar=("MIN", "MAX"),
                   help="object distance range in metres")
    p.add_argument("--size", type=float, nargs=2, default=(0.7, 1.4), metavar=("MIN", "MAX"),
                   help="object size range in metres (sphere radius)")
    p.add_argument("--rgb-noise", type=float, default=0.004, help="camera noise std in [0, 1]")
    p.add_argument("--depth-noise", type=float, default=0.01, help="range noise std in metres")
    p.add_argument("--ground-plane", action="store_true", help="add a floor under the sensors")
    p.add_argument("--distractors", type=int, default=0, help="grey poles behind the object")
    p.add_argument("--force", action="store_true", help="replace DEST if it holds files")
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("validate", help="check a data folder and report bad or unpaired files")
    p.add_argument("root", type=Path, help="folder holding cubes/ and spheres/")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_validate)

    p = commands.add_parser("download", help="download, validate and install the original data")
    p.add_argument("url", help="Google Drive file/folder link or http(s) URL of a zip")
    p.add_argument("--dest", type=Path, default=Path("data"), help="where the data goes (data/)")
    p.add_argument("--force", action="store_true", help="replace existing data in DEST")
    p.set_defaults(run=cmd_download)

    p = commands.add_parser("ingest", help="build the grouped rgb/depth/lidar FiftyOne dataset")
    p.add_argument("root", type=Path, help="data folder holding cubes/ and spheres/")
    p.add_argument("--name", default="cilp-assessment", help="dataset name (cilp-assessment)")
    p.add_argument("--cache-dir", type=Path, help="where derived files go (default: ROOT.cache beside ROOT)")
    p.set_defaults(run=cmd_ingest)

    p = commands.add_parser("split", help="tag pairs train/val/test on every slice")
    p.add_argument("name", help="dataset name")
    p.add_argument("--val", type=float, default=0.2, help="validation fraction (0.2)")
    p.add_argument("--test", type=float, default=0.0, help="test fraction (0.0)")
    p.add_argument("--subset", type=float, default=1.0, help="fraction of pairs to use (1.0)")
    p.add_argument("--seed", type=int, default=42, help="random seed (42)")
    p.add_argument("--stratify", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the class balance in every split (default: on)")
    p.add_argument("--from-json", type=Path, help="import a reference split file instead")
    p.add_argument("--to-json", type=Path, help="write the split to this JSON file")
    p.set_defaults(run=cmd_split)

    p = commands.add_parser("app", help="open a dataset in the FiftyOne App")
    p.add_argument("name", nargs="?", default="cilp-assessment", help="dataset name (cilp-assessment)")
    p.add_argument("--port", type=int, default=5151)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(run=cmd_app)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"cilp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``cilp`` command: the same functions the FiftyOne operators call.

    cilp generate data/synthetic --n-per-class 1000 --seed 42
    cilp validate data/synthetic --json
    cilp download URL --dest data
    cilp import-pointclouds scans/ data/scans --beams -16 15.5 64 -16 15.5 64
    cilp ingest data/synthetic --name cilp-assessment
    cilp split cilp-assessment --val 0.2 --seed 42 --to-json split.json --exclude-tags blank_rgb duplicate
    cilp train cilp-assessment --family intermediate --fusion add --epochs 10
    cilp train cilp-assessment --suite fusion --epochs 5
    cilp apply cilp-assessment intermediate_add late       # one process for any number of runs
    cilp train-cilp cilp-assessment --stages lidar,cilp,projector,rgb2lidar
    cilp apply cilp-assessment cilp          # embeddings, maps, similarity indexes, pair scores
    cilp apply cilp-assessment rgb2lidar     # RGB -> LiDAR predictions and their evaluation
    cilp apply cilp-assessment --checkpoint intermediate_add   # a shipped checkpoint: no training
    cilp search cilp-assessment cube_0001 --slice rgb --k 5
    cilp report --dataset cilp-assessment --out runs/report
    cilp app cilp-assessment
    cilp worker              # runs what is scheduled, on a machine without the App
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import sys
import time
from pathlib import Path

from tqdm import tqdm

from mm_models.choices import COMPILE_MODES, DEVICES, DOWNSAMPLE_MODES, FAMILIES, FUSION_MODES

from .data import layout, synth
from .runs.request import TRAINING_OPTIONS, CILPRequest, Option, options


def _progress_bar(total: int, unit: str, desc: str):
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=None)


# --------------------------------------------------------------------------- data


def cmd_generate(args) -> int:
    knobs = {"distance": args.distance, "size": args.size, "brightness": args.brightness,
             "camera_fov": args.camera_fov, "no_return": args.no_return, "rgb_noise": args.rgb_noise,
             "depth_noise": args.depth_noise, "distractors": args.distractors}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items() if v is not None}
    config = dataclasses.replace(synth.LOOKS[args.look], ground_plane=args.ground_plane, **given)
    classes = synth.check_classes(args.classes.split(",") if args.classes else [])
    pairs = len(classes) * args.n_per_class
    start = time.perf_counter()
    with _progress_bar(pairs, "pair", "generating") as bar:
        dest = synth.generate(args.dest, args.n_per_class, args.seed, config,
                              force=args.force, progress=bar.update, quirks=args.quirks, classes=classes,
                              image_size=tuple(args.image_size), beams=tuple(args.beams))
    seconds = time.perf_counter() - start
    print(f"wrote {pairs} pairs to {dest} in {seconds:.1f} s ({pairs / seconds:,.0f} pairs/s)")
    return 0


def cmd_validate(args) -> int:
    with _progress_bar(layout.count_candidate_pairs(args.root), "pair", "validating") as bar:
        report = layout.scan(args.root, progress=bar.update)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.usable else 2


def cmd_import_pointclouds(args) -> int:
    from .data import pointclouds

    if args.beams_file:
        beams = pointclouds.Beams.from_preset(args.beams_file)
    else:
        beams = pointclouds.Beams.from_values(args.beams[:3], args.beams[3:])
    classes = args.classes.split(",") if args.classes else None
    with _progress_bar(None, "pair", "importing") as bar:
        report = pointclouds.import_pointclouds(args.src, args.dest, beams, labels=args.labels, classes=classes,
                                                overwrite=args.overwrite, progress=bar.update, workers=args.workers)
    print(report.format_text())
    return 0 if report.pairs else 2


def cmd_download(args) -> int:
    from .data.download import download

    report = download(args.url, args.dest, force=args.force, allow_http=args.allow_http,
                      progress=lambda m: print(m, file=sys.stderr))
    print(report.format_text())
    return 0


# --------------------------------------------------------------------------- FiftyOne


class _Bar:
    """``progress(fraction, label)`` as a tqdm bar on a terminal, each finished epoch printed above
    it; as plain lines elsewhere (a log), one per epoch, without the updates within an epoch."""

    def __init__(self, desc: str, file=None):
        self.desc, self.last, self.file = desc, None, file or sys.stderr
        self.bar = tqdm(total=100, desc=desc, unit="%", dynamic_ncols=True, disable=None, file=self.file,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")

    def __call__(self, fraction: float, label: str) -> None:
        from mm_models.engine import is_batch_update

        if self.bar.disable:
            if label != self.last and not is_batch_update(label):
                print(f"{self.desc}: {100 * fraction:3.0f}% {label}", flush=True)
            self.last = label
            return
        if not is_batch_update(label):
            self.bar.write(f"{self.desc}: {label}", file=self.file)
        self.bar.n = round(100 * fraction, 1)
        self.bar.set_postfix_str(label)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def cmd_ingest(args) -> int:
    from .dataset.ingest import ingest

    start = time.perf_counter()
    with _Bar("ingesting") as bar:
        result = ingest(args.root, args.name, cache_dir=args.cache_dir, rebuild=args.rebuild, progress=bar)
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
    from .dataset.splits import create_splits

    result = create_splits(
        _load(args.name), val=args.val, test=args.test, subset=args.subset, seed=args.seed,
        stratify=args.stratify, from_json=args.from_json, to_json=args.to_json, exclude_tags=args.exclude_tags,
    )
    print(result.summary())
    if args.to_json:
        print(f"wrote {args.to_json}")
    return 0


#: the reference's fusion comparison and downsampling ablation: (family, fusion, downsample)
SUITES = {
    "fusion": [("late", "concat", "maxpool"), ("intermediate", "concat", "maxpool"),
               ("intermediate", "add", "maxpool"), ("intermediate", "mul", "maxpool"),
               ("intermediate", "add", "strided")],
    "single": [("rgb", "concat", "maxpool"), ("lidar", "concat", "maxpool")],
}


def cmd_train(args) -> int:
    from contextlib import nullcontext

    from mm_models import ModelConfig
    from mm_models.choices import DEFAULT_FUSION
    from mm_models.distributed import is_main
    from mm_models.presets import train_config as preset_config

    from .runs.training import train_on_dataset

    train_config = preset_config("fusion", args.preset, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                 device=args.device, precision=args.precision, compile=args.compile,
                                 patience=args.patience, seed=args.seed, wandb=args.wandb, data=args.data)
    fusion = args.fusion or DEFAULT_FUSION.get(args.family, "concat")
    models = SUITES[args.suite] if args.suite else [(args.family, fusion, args.downsample)]
    configs = [ModelConfig(family=f, fusion=m, downsample=d) for f, m, d in models]  # validate all first
    dataset = _load(args.name)
    main = is_main()  # under torchrun rank 0 alone reports
    for config in configs:
        with _Bar("training") if main else nullcontext() as bar:
            result = train_on_dataset(
                dataset, config, train_config, train_tag=args.train_tag, val_tag=args.val_tag,
                runs_dir=args.runs_dir, name=args.run_name if not args.suite else None,
                overwrite=args.overwrite, resume=args.resume, progress=bar)
        best = result.best
        if main:
            macro_f1 = f", macro F1 {100 * best['val/macro_f1']:.2f}%" if "val/macro_f1" in best else ""
            print(f"{result.run_dir.name}: best epoch {best['epoch']}, val loss {best['val/loss']:.5f}, "
                  f"accuracy {100 * best['val/accuracy']:.2f}%{macro_f1}, {best['samples_per_s']:,.0f} samples/s "
                  f"-> {result.run_dir}")
    return 0


def cmd_train_cilp(args) -> int:
    from contextlib import nullcontext

    from mm_models.distributed import is_main

    from .runs.pipeline import train_cilp

    request = CILPRequest.from_values(vars(args))  # checked before the dataset is looked up
    dataset = _load(args.name)
    main = is_main()  # under torchrun rank 0 alone reports
    with _Bar("train-cilp") if main else nullcontext() as bar:
        results = train_cilp(dataset, request, progress=bar)
    if main:
        for result in results.values():
            speed = f", {result.best['samples_per_s']:,.0f} samples/s" if "samples_per_s" in result.best else ""
            print(f"{result.summary()}{speed} -> {result.run_dir}")
    return 0


def cmd_apply(args) -> int:
    from .runs.registry import shipped_checkpoint
    from .writeback.apply import apply_run
    from .writeback.maps import check_embedding_map

    check_embedding_map(args.embedding_map)  # before the dataset is looked up
    if bool(args.runs) == bool(args.checkpoint):
        raise ValueError("apply: give runs or --checkpoint NAME ... (one of them)")
    runs = [shipped_checkpoint(name) for name in args.checkpoint] if args.checkpoint else args.runs
    if args.field and len(runs) > 1:
        raise ValueError("--field: names the prediction field of one run; give one run with it")
    dataset = _load(args.name)
    for run in runs:  # one process for all: FiftyOne and torch start once
        with _Bar("applying") as bar:
            result = apply_run(dataset, run, field=args.field, tags=args.tags, eval_tag=args.eval_tag,
                               embedding_map=args.embedding_map, device=args.device, progress=bar)
        print(result.summary())
    return 0


def cmd_search(args) -> int:
    import fiftyone as fo

    from .writeback.cilp import find_cross_modal_matches

    dataset = _load(args.name)
    query = dataset.select_group_slices(args.slice).match(fo.ViewField("pair_id") == args.pair_id)
    if not len(query):
        raise ValueError(f"pair_id: no pair '{args.pair_id}' on the {args.slice} slice of '{args.name}'")
    matches = find_cross_modal_matches(dataset, query.values("id"), k=args.k, run=args.run)
    print(f"nearest to the {args.slice} of {args.pair_id}:")
    for rank, (pid, label) in enumerate(zip(*matches.values(["pair_id", "ground_truth.label"])), 1):
        print(f"  {rank}. {pid} ({label}){'  <- its own pair' if pid == args.pair_id else ''}")
    return 0


def cmd_report(args) -> int:
    from mm_models.report import write_report

    runs = list(args.runs)
    dataset = _load(args.dataset) if args.dataset else None
    if dataset is not None:
        from .runs.registry import recorded_runs

        runs += list(recorded_runs(dataset).values())
    if not runs:
        raise ValueError("no runs given: pass run folders or --dataset NAME")
    out = args.out or Path(runs[0]).parent / "report"
    markdown, out = write_report(runs, out)
    print(markdown)
    written = ["report.md", "report.csv", "curves.png"]
    if dataset is not None:
        from .writeback.pictures import write_pictures

        written += write_pictures(dataset, out)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def cmd_app(args) -> int:
    from .service.app import run_app

    _load(args.name)  # it exists, before anything starts
    return run_app(args.name, port=args.port, address=args.address, executor=args.executor)


def cmd_worker(args) -> int:
    from .service.app import run_worker
    from .service.executor import Settings, check_worker_environment

    settings = Settings(label="cilp worker", name=args.name, stale_after_s=args.stale_after).resolved()
    print(check_worker_environment(), flush=True)  # the database and the plugin, before anything starts
    return run_worker(settings)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cilp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("generate", help="render a synthetic data set in the DLI layout")
    p.add_argument("dest", type=Path, help="folder to create")
    p.add_argument("--n-per-class", type=_positive_int, default=1000, help="pairs per class (1000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (42)")
    p.add_argument("--classes", default=",".join(synth.DEFAULT_CLASSES), metavar="SHAPE,...",
                   help=f"the shapes, one class folder each, comma-separated: {','.join(synth.FOLDERS)} "
                        f"(default {','.join(synth.DEFAULT_CLASSES)})")
    p.add_argument("--image-size", type=int, nargs=2, default=[layout.SIZE] * 2, metavar=("H", "W"),
                   help="RGB height and width in pixels (64 64); the camera's field of view spans the width")
    p.add_argument("--beams", type=int, nargs=2, default=[layout.SIZE] * 2, metavar=("N_AZ", "N_ZE"),
                   help="azimuth and zenith beams (64 64), over the same -16 to +16 degrees")
    p.add_argument("--look", choices=["default", "legacy"], default="default",
                   help="the scenes: fitted to the original renders (default), or the generator's before that fit")
    p.add_argument("--distance", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="object distance range in metres (default 15.48 19.78)")
    p.add_argument("--size", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="object size range in metres: sphere radius, cube half-edge (default 1.15 1.21)")
    p.add_argument("--brightness", type=float, help="light strength times peak reflectance (default 0.7)")
    p.add_argument("--camera-fov", type=float, help="the camera's field of view in degrees (default 47)")
    p.add_argument("--no-return", type=float, help="the range stored where a beam hits nothing, >= 50 (default 50)")
    p.add_argument("--rgb-noise", type=float, help="camera noise std in [0, 1] (default 0)")
    p.add_argument("--depth-noise", type=float, help="range noise std in metres (default 0.01)")
    p.add_argument("--ground-plane", action="store_true", help="add a floor under the sensors")
    p.add_argument("--distractors", type=int, help="grey poles behind the object (default 0)")
    p.add_argument("--quirks", type=int, default=0, metavar="N",
                   help="per class, N of each quirk of published copies (0): all-black RGB images, "
                        "'NNNN (1)' copies, pairs copied byte for byte onto later stems")
    p.add_argument("--force", action="store_true", help="replace DEST if it holds files")
    p.set_defaults(handler=cmd_generate)

    p = commands.add_parser("validate", help="check a data folder and report bad or unpaired files")
    p.add_argument("root", type=Path, help="folder holding the class folders (cubes/, spheres/, ...)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser("import-pointclouds",
                            help="import RGB images and point clouds (.pcd, .ply, KITTI .bin) paired by stem")
    p.add_argument("src", type=Path, help="folder of class folders (SRC/<class>/...), or of files with --labels")
    p.add_argument("dest", type=Path, help="folder to create in the DLI layout")
    beams = p.add_mutually_exclusive_group(required=True)
    beams.add_argument("--beams", nargs=6, metavar=("AZ_MIN", "AZ_MAX", "N_AZ", "ZE_MIN", "ZE_MAX", "N_ZE"),
                       help="the beams in degrees, first and last centres included: the course's are "
                            "-16 15.5 64 -16 15.5 64")
    beams.add_argument("--beams-file", type=Path, metavar="PRESET.json",
                       help='a sensor preset {"azimuth": [min, max, n], "zenith": [min, max, n]}')
    p.add_argument("--labels", type=Path, metavar="FILE.csv", help="stem,label rows, for files not in class folders")
    p.add_argument("--classes", metavar="LABEL,...", help="import only these labels (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST once the import is complete")
    p.add_argument("--workers", type=_positive_int, help="processes (default: 2 from 200 pairs on)")
    p.set_defaults(handler=cmd_import_pointclouds)

    p = commands.add_parser("download", help="download, validate and install the original data")
    p.add_argument("url", help="Google Drive file/folder link or https URL of a zip")
    p.add_argument("--dest", type=Path, default=Path("data"),
                   help="where cubes/ and spheres/ go (data/); nothing else in it is touched")
    p.add_argument("--force", action="store_true", help="replace DEST/cubes and DEST/spheres if they exist")
    p.add_argument("--allow-http", action="store_true", help="accept a plain http URL (unencrypted, alterable)")
    p.set_defaults(handler=cmd_download)

    p = commands.add_parser("ingest", help="build the grouped rgb/depth/lidar FiftyOne dataset")
    p.add_argument("root", type=Path, help="data folder holding the class folders (cubes/, spheres/, ...)")
    p.add_argument("--name", default="cilp-assessment", help="dataset name (cilp-assessment)")
    p.add_argument("--cache-dir", type=Path, help="where derived files go (default: ROOT.cache beside ROOT)")
    p.add_argument("--rebuild", action="store_true",
                   help="replace a dataset of that name (of any folder) by a new one, swapped in once complete")
    p.set_defaults(handler=cmd_ingest)

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
    p.add_argument("--exclude-tags", nargs="+", default=[], metavar="TAG",
                   help="leave out pairs with any of these tags, e.g. blank_rgb duplicate (ingest's quirk tags)")
    p.set_defaults(handler=cmd_split)

    p = commands.add_parser("train", help="train a model (or a suite) on the dataset's split tags")
    p.add_argument("name", help="dataset name")
    p.add_argument("--family", default="intermediate", choices=FAMILIES,
                   help="three fusions and the two single-modality baselines")
    p.add_argument("--fusion", choices=FUSION_MODES, help="default: the reference's: add for intermediate, "
                                                          "concat for late and early")
    p.add_argument("--downsample", default="maxpool", choices=DOWNSAMPLE_MODES)
    p.add_argument("--suite", choices=sorted(SUITES), help="train a set of models instead: "
                   "fusion = late, intermediate concat/add/mul, add with strided conv; single = rgb, lidar")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="default: the preset's")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--compile", nargs="?", const=True, default=False, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the model (worth it on a GPU); MODE: " + ", ".join(COMPILE_MODES))
    p.add_argument("--patience", type=int, default=0, help="early stopping after N epochs without progress")
    p.add_argument("--run-name", help="default: from the model, e.g. intermediate_add")
    for option in TRAINING_OPTIONS:
        _add_flag(p, option)
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("train-cilp",
                            help="train the CILP stages (lidar, cilp, projector, rgb2lidar) as linked runs")
    p.add_argument("name", help="dataset name")
    for option in options(CILPRequest):
        _add_flag(p, option)
    p.set_defaults(handler=cmd_train_cilp)

    p = commands.add_parser("apply", help="write a run's predictions, embeddings, evaluation and map into the dataset")
    p.add_argument("name", help="dataset name")
    p.add_argument("runs", nargs="*", metavar="run", help="run names recorded on the dataset, or run folders")
    p.add_argument("--checkpoint", nargs="+", metavar="NAME",
                   help="shipped checkpoints instead of runs (checkpoints/: intermediate_add, cilp, rgb2lidar, ...)")
    p.add_argument("--field", help="prediction field (default: the run's name)")
    p.add_argument("--tags", nargs="+", help="only pairs with these tags (default: all)")
    p.add_argument("--eval-tag", default="val", help="evaluate on pairs with this tag (val)")
    p.add_argument("--embedding-map", default="pca", metavar="METHOD",
                   help="2-D map of the embeddings for the App: pca (default) | tsne | umap | none")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(handler=cmd_apply)

    p = commands.add_parser("search", help="cross-modal search: a pair's RGB (or LiDAR) -> the nearest LiDAR (or RGB)")
    p.add_argument("name", help="dataset name")
    p.add_argument("pair_id", help="the query pair, e.g. cube_0001")
    p.add_argument("--slice", default="rgb", choices=["rgb", "depth", "lidar"], help="the query's modality (rgb)")
    p.add_argument("--k", type=_positive_int, default=5, help="matches to list (5)")
    p.add_argument("--run", default="cilp", help="the applied cilp run (cilp)")
    p.set_defaults(handler=cmd_search)

    p = commands.add_parser("report", help="results table (Markdown, CSV) and curves of runs")
    p.add_argument("runs", nargs="*", type=Path, help="run folders")
    p.add_argument("--dataset", help="also every run recorded on this dataset, with its confusion matrices "
                                     "and embedding maps")
    p.add_argument("--out", type=Path, help="output folder (default: report/ beside the first run)")
    p.set_defaults(handler=cmd_report)

    p = commands.add_parser("app", help="open a dataset in the FiftyOne App, with an executor for its "
                                        "scheduled (background) runs; Ctrl-C stops both")
    p.add_argument("name", nargs="?", default="cilp-assessment", help="dataset name (cilp-assessment)")
    p.add_argument("--port", type=int, default=5151)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--no-executor", dest="executor", action="store_false",
                   help="the App alone, FiftyOne's settings as they are: without "
                        "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true and an executor of your own, forms offer only "
                        "'Execute', cut off after FIFTYONE_OPERATOR_TIMEOUT")
    p.set_defaults(handler=cmd_app)

    p = commands.add_parser("worker", help="run what is scheduled in FiftyOne's database (FIFTYONE_DATABASE_URI), "
                                           "beside other workers, on a machine without the App; Ctrl-C stops it")
    p.add_argument("--name", default=socket.gethostname(), help="how runs name this worker (the host name)")
    p.add_argument("--stale-after", type=float, metavar="S",
                   help="mark a running operation failed once its executor's heartbeat is this old "
                        "(default: $CILP_WORKER_STALE_S or 300; at least 3 heartbeats)")
    p.set_defaults(handler=cmd_worker)
    return parser


def _add_flag(p: argparse.ArgumentParser, option: Option) -> None:
    """The flag of a training option (``mm_models``' choices, positive numbers checked by argparse)."""
    if option.kind is bool:
        p.add_argument(option.flag, action="store_true", help=option.help)
    elif option.many:
        p.add_argument(option.flag, default=",".join(option.default), metavar=",".join(option.choices),
                       help=f"{option.help} (comma-separated)")
    else:
        kind = _positive_int if option.minimum == 1 else option.kind
        p.add_argument(option.flag, type=kind, default=option.default, choices=option.choices,
                       metavar="PATH" if option.kind is Path else None, help=option.help)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def database_unavailable(exc: Exception) -> str:
    """What to do when FiftyOne cannot start its database (``DatabaseService failed to bind to port``)."""
    import fiftyone as fo

    return (f"FiftyOne could not start its database ({exc}). Another MongoDB holds its folder "
            f"{fo.config.database_dir}: most often the database of another FiftyOne installation, still "
            f"running (see `pgrep -a mongod`). Stop that process; or use it, or any MongoDB, with "
            f"FIFTYONE_DATABASE_URI=mongodb://127.0.0.1:PORT; or give this installation a folder of its own "
            f"with FIFTYONE_DATABASE_DIR=DIR.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"cilp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from fiftyone.core.service import ServiceListenTimeout

        if not isinstance(exc, ServiceListenTimeout):
            raise
        print(f"cilp {args.command}: error: {database_unavailable(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

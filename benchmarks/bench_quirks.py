"""The cost of finding the original's quirks (all-black RGB images, duplicate pairs) on a large folder.

Validation reads every file anyway; the quirk checks hash the bytes it read and look at the
decoded image. This times ``format.scan`` as it is against the same scan reading and decoding
the files only (what it did before the checks), in alternating rounds on a warm page cache:
wall-clock and CPU time (this process and its worker processes), the latter steadier on a
machine that others share.
With ``--ingest`` it also ingests the folder into a private MongoDB and times a re-ingest of
the unchanged folder, within it the step that brings the quirk tags in line, and the read of
what the dataset holds with, within it, the two reads the quirks added (digests, tagged samples).

    .venv/bin/python benchmarks/bench_quirks.py [--n-per-class 10000] [--root DIR] [--ingest]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fiftyone_isolation
from results_csv import Results  # noqa: E402

from cilp_plugin.data import layout, synth  # noqa: E402
from tests import fiftyone_isolation  # noqa: E402


def decode_only(pair: layout.Pair, size: int):
    """Validation before the quirk checks: decode both files from their paths, nothing else."""
    bad = []
    for path, reader in ((pair.rgb_path, layout.read_rgb), (pair.lidar_path, layout.read_depth)):
        try:
            reader(path, size)
        except layout.FormatError as exc:
            bad.append(layout.BadFile(path, str(exc)))
    return bad, None


def cpu_seconds() -> float:
    """User + system time of this process and of its children that ended (a scan's workers end with it)."""
    return sum(os.times()[:4])


def time_scans(root: Path, rounds: int, workers: int | None) -> dict[str, dict[str, list[float]]]:
    """Variant -> {"wall": seconds of each round, "cpu": CPU seconds of each round}."""
    checked = layout._validate_pair
    times = {variant: {"wall": [], "cpu": []} for variant in ("with the quirk checks", "decoding only")}
    layout.scan(root, workers=workers)  # the page cache warm for both
    for _ in range(rounds):
        for variant, validate_pair in (("with the quirk checks", checked), ("decoding only", decode_only)):
            layout._validate_pair = validate_pair  # the workers are forks: they see it
            start, start_cpu = time.perf_counter(), cpu_seconds()
            report = layout.scan(root, workers=workers)
            if variant == "with the quirk checks":
                report.quirks()
            times[variant]["wall"].append(time.perf_counter() - start)
            times[variant]["cpu"].append(cpu_seconds() - start_cpu)
    layout._validate_pair = checked
    return times


def time_reingest(root: Path, results: Results) -> None:
    fiftyone_isolation.start()
    import fiftyone as fo

    from cilp_plugin.dataset import ingest

    name = f"bench-quirks-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    result = ingest.ingest(root, name)
    print(f"ingest: {len(result.added)} pairs in {time.perf_counter() - start:.1f} s; tagged "
          + ", ".join(f"{tag} {len(ids)}" for tag, ids in result.quirks.items()))
    step = []
    set_tags = ingest._set_quirk_tags
    ingest._set_quirk_tags = lambda *args: step.append(time.perf_counter()) or set_tags(*args) or step.append(
        time.perf_counter())
    again = []
    for _ in range(3):
        start = time.perf_counter()
        ingest.ingest(root, name)
        again.append(time.perf_counter() - start)
    ingest._set_quirk_tags = set_tags
    tag_steps = [b - a for a, b in zip(step[::2], step[1::2])]
    results.add(pairs=len(result.added), measurement="re-ingest, nothing changed", clock="wall",
                median_s=statistics.median(again), runs_s=" ".join(f"{s:.3f}" for s in again))
    results.add(pairs=len(result.added), measurement="re-ingest: the quirk-tag step", clock="wall",
                median_s=statistics.median(tag_steps), runs_s=" ".join(f"{s:.4f}" for s in tag_steps))
    print(f"re-ingest, nothing changed: median {statistics.median(again):.2f} s of 3 "
          f"({', '.join(f'{s:.2f}' for s in again)}); of it the quirk-tag step {statistics.median(tag_steps):.3f} s")
    dataset = fo.load_dataset(name)
    reads = {"all": [], "digests": [], "tagged": []}
    tagged = dataset.select_group_slices(_allow_mixed=True).match(
        fo.ViewField("tags").contains(list(layout.QUIRK_TAGS), all=False))
    for _ in range(3):
        for what, read in (("all", lambda: ingest._pairs_held(dataset)),
                           ("digests", lambda: dataset.select_group_slices("rgb").values(["pair_id", "content_hash"])),
                           ("tagged", lambda: tagged.values(["id", "pair_id", "group.name", "tags"]))):
            start = time.perf_counter()
            read()
            reads[what].append(time.perf_counter() - start)
    print(f"reading what the dataset holds ({len(dataset):,} groups): {statistics.median(reads['all']):.2f} s, "
          f"of it the quirks' reads: the rgb slice's digests {statistics.median(reads['digests']):.2f} s, "
          f"the {len(tagged)} quirk-tagged samples {statistics.median(reads['tagged']):.2f} s (medians of 3)")
    fo.delete_dataset(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-per-class", type=int, default=10000)
    parser.add_argument("--quirks", type=int, default=20, help="of each kind per class in the generated folder")
    parser.add_argument("--root", type=Path, help="an existing data folder instead of a generated one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="validation processes (default: scan's own choice)")
    parser.add_argument("--ingest", action="store_true", help="also time a re-ingest (private MongoDB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or synth.generate(Path(tmp) / "data", args.n_per_class, seed=0, quirks=args.quirks)
        pairs = len(layout.scan(root, validate=False).pairs)
        times = time_scans(root, args.rounds, args.workers)
        results = Results("bench_quirks")
        for clock in ("wall", "cpu"):
            medians = {variant: statistics.median(values[clock]) for variant, values in times.items()}
            for variant, values in times.items():
                results.add(pairs=pairs, measurement=f"scan, {variant}", clock=clock, median_s=medians[variant],
                            runs_s=" ".join(f"{s:.3f}" for s in values[clock]))
                print(f"scan of {pairs:,} pairs, {variant}, {clock}: median {medians[variant]:.2f} s of "
                      f"{len(values[clock])} ({', '.join(f'{s:.2f}' for s in values[clock])})")
            extra = medians["with the quirk checks"] - medians["decoding only"]
            print(f"  the quirk checks add {extra:+.2f} {clock} s ({100 * extra / medians['decoding only']:+.1f} %, "
                  f"{1e6 * extra / pairs:+.1f} us a pair)")
        if args.ingest:
            time_reingest(root, results)
    print(results)


if __name__ == "__main__":
    main()

"""How the cost grows with the number of pairs: ingest, the arrays cache, training resident vs streamed.

For each size, generated pairs (``cilp_plugin.data.synth``, half per class) go through the
phases below, each in a process of its own so that its peak memory is its own:

- ingest: folder -> grouped FiftyOne dataset, derived files included (a private MongoDB,
  as the tests use; the database server's memory is not counted);
- arrays: the pairs decoded into the arrays cache (``cilp_plugin.dataset.arrays.load_pairs``,
  ``CACHE/tensors/<fingerprint>/``: one ``.npy`` per array, written a chunk at a time);
- resident, streamed: the engine's training loop (``mm_models.engine.train_one_epoch``:
  intermediate fusion (add), batch 32, the engine's precision, chosen once for all
  phases) over shuffled epochs of *all* the pairs, ``--warmup`` batches then ``--steps``,
  in a process per placement for its peak memory: resident (the cache read into memory
  first) or streamed (each batch read from the cache's files);
- paired: the training speeds, in one process holding both placements: after a warm-up
  of each, ``--rounds`` cycles of one round of ``--steps`` batches per placement, the
  order rotating each cycle, so that a busy spell of a shared machine hits every
  placement alike: resident, streamed, and streamed cold (the cache's files evicted from
  the page cache before the round, ``posix_fadvise DONTNEED`` on those files only, so its
  batches come from the disk; read back in after it, for the next warm round). Each
  placement's best round is reported, and the median over the cycles of streamed / resident.

Peak RSS is the largest sum, sampled every 0.1 s, of the RSS of the phase's process
and its workers (at least the phase process's own high-water mark); PSS, beside it, the
same sum of proportional set sizes: pages a forked worker shares with its parent counted
once, the memory the phase really takes. Generated data, caches and the database are
deleted after each size unless ``--keep``.

    python benchmarks/bench_scale.py               # 2,000 / 20,000 / 100,000 pairs: ~50 min on 2 cores, 13 GB disk
    python benchmarks/bench_scale.py --sizes 2000,20000 --phases arrays,resident,streamed,paired
    python benchmarks/bench_scale.py --quick       # a smoke run: 40 pairs, rounds of 2 batches
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from results_csv import Results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.fiftyone_isolation

from mm_models.choices import PRECISIONS  # noqa: E402  (no torch: imported before the timing)

PHASES = ("ingest", "arrays", "resident", "streamed", "paired")
MODES = ("resident", "streamed", "cold")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000,100000", help="pairs per run, comma-separated (even numbers)")
    parser.add_argument("--steps", type=int, default=50, help="training batches per timed round (50)")
    parser.add_argument("--rounds", type=int, default=4, help="cycles of timed rounds in the paired phase (4)")
    parser.add_argument("--warmup", type=int, default=20, help="training batches before any timing (20)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"which phases, comma-separated ({','.join(PHASES)}); without ingest, FiftyOne is "
                             f"not needed")
    parser.add_argument("--work", type=Path, help="where the data goes (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each size's data, cache and dataset")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 40 pairs, rounds of 2 batches of 8 after 1, 1 cycle, fp32")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # one phase, in a child process
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.rounds, args.warmup, args.batch_size, args.precision = "40", 2, 1, 1, 8, "fp32"
    args.phases = [phase for phase in PHASES if phase in args.phases.split(",")]  # in order; arrays before training
    if not args.phases or set(args.phases) & {"resident", "streamed", "paired"} and "arrays" not in args.phases:
        parser.error(f"--phases: expected some of {', '.join(PHASES)}, arrays with any training phase")
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated numbers, got {args.sizes!r}")
    if any(size < 4 or size % 2 for size in args.sizes):
        parser.error("--sizes: each size must be an even number >= 4 (half per class)")
    for name in ("steps", "rounds", "warmup", "batch_size"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')}: too small")
    return args


# --------------------------------------------------------------------------- the phases (child processes)


def own_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_parts() -> dict:
    """This process's resident memory now: anonymous and file-backed (memory-mapped) pages, in MB."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return {key: round(int(fields[key].split()[0]) / 1024) for key in ("RssAnon", "RssFile")}
    except (OSError, KeyError, ValueError):
        return {}


def phase_ingest(args) -> dict:
    from tests import fiftyone_isolation

    fiftyone_isolation.start()
    import fiftyone as fo

    from cilp_plugin.dataset import ingest

    fo.Dataset().delete()  # connect to the database outside the timed part
    started = time.perf_counter()
    result = ingest.ingest(args.root, "bench-scale")
    seconds = time.perf_counter() - started
    return {"pairs": len(result.added), "seconds": seconds}


def _selection(root: Path):
    from cilp_plugin.data import layout

    pairs = layout.scan(root, validate=False).require_usable().pairs
    return ([p.pair_id for p in pairs], [p.label for p in pairs], [str(p.rgb_path) for p in pairs],
            [str(p.lidar_path) for p in pairs])


def cache_dir(root: Path) -> Path:
    return root.parent / "cache"


def phase_arrays(args) -> dict:
    import mm_models.data  # noqa: F401  (torch: imported before the timing)
    from cilp_plugin.dataset import arrays

    selection = _selection(args.root)
    started = time.perf_counter()
    loaded = arrays.load_pairs(*selection, cache_dir=cache_dir(args.root))
    seconds = time.perf_counter() - started
    return {"pairs": len(loaded), "seconds": seconds, "bytes": int(loaded.rgb.nbytes + loaded.lidar.nbytes),
            "cache": str(loaded.source)}


class FirstBatches:
    """The first ``count`` batches of ``data``'s epoch: what train_one_epoch sees of it."""

    def __init__(self, data, count: int):
        self.data, self.count, self.labels = data, count, data.labels

    def batch_rows(self, *args, **options):
        from itertools import islice

        rows = self.data.batch_rows(*args, **options)
        yield from islice(rows, self.count)
        rows.close()  # the streamed source's read-ahead thread stops here

    def batch(self, rows):
        return self.data.batch(rows)


def evict(folder: Path) -> None:
    """Drop ``folder``'s files from the page cache (theirs only; needs them written back: they were)."""
    for path in folder.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(folder: Path) -> None:
    """Read ``folder``'s files through, so that the page cache holds them again."""
    for path in folder.glob("*.npy"):
        with open(path, "rb", buffering=0) as file:
            while file.read(64 << 20):
                pass


class PeakParts:
    """The largest anonymous and file-backed RSS of this process, sampled every 0.1 s in a thread."""

    def __init__(self):
        import threading

        self.peak = {}
        self.done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            for key, value in rss_parts().items():
                self.peak[key] = max(self.peak.get(key, 0), value)


class Trainer:
    """The engine's training loop on the pairs of a phase's data folder: ``seconds(data, batches)``."""

    def __init__(self, args):
        import torch

        from cilp_plugin.dataset import arrays
        from mm_models import ModelConfig, build_model
        from mm_models.inference import resolve_device, resolve_precision
        from mm_models.losses import Classification

        self.args, self.torch = args, torch
        self.device = resolve_device("auto")
        self.precision = resolve_precision(args.precision, self.device)
        self.loaded = arrays.load_pairs(*_selection(args.root), cache_dir=cache_dir(args.root))
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(family="intermediate", fusion="add")).to(
            self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)
        self.objective = Classification()
        self.seed = 0

    def seconds(self, data, batches: int) -> float:
        """Seconds for ``batches`` batches of ``data``: the first of an epoch, or of several where one has fewer."""
        from mm_models.engine import lr_at, train_one_epoch

        per_epoch = len(data) // self.args.batch_size
        started = time.perf_counter()
        while batches > 0:
            self.seed += 1
            train_one_epoch(self.model, self.objective, FirstBatches(data, min(batches, per_epoch)), self.optimizer,
                            lambda step: lr_at(step, 10_000, 0, 1e-3, 1e-5), 0, batch_size=self.args.batch_size,
                            seed=self.seed, drop_last=True, device=self.device, precision=self.precision)
            batches -= per_epoch
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def rate(self, data, batches: int) -> float:
        return batches * self.args.batch_size / self.seconds(data, batches)

    def about(self) -> dict:
        return {"precision": self.precision, "device": str(self.device), "threads": self.torch.get_num_threads()}


def phase_train(args) -> dict:
    """One placement, for its peak memory (and a rate, for the record)."""
    parts = PeakParts()
    trainer = Trainer(args)
    started = time.perf_counter()
    data = trainer.loaded.tensors()
    data = data.resident(trainer.device) if args.phase == "resident" else data.streamed(trainer.device)
    load_seconds = time.perf_counter() - started
    if args.warmup:
        trainer.seconds(data, args.warmup)
    rate = trainer.rate(data, args.steps)
    parts.done.set()
    return {"samples_per_s": rate, "load_seconds": load_seconds, "peak_rss_parts_mb": parts.peak, **trainer.about()}


def phase_paired(args) -> dict:
    """Every placement in one process, in rotating rounds: the training speeds."""
    from mm_models.reading import release

    trainer = Trainer(args)
    mapped = trainer.loaded.tensors()
    placed = {"resident": mapped.resident(trainer.device), "streamed": mapped.streamed(trainer.device)}
    if args.warmup:
        for data in placed.values():
            trainer.seconds(data, args.warmup)
    rounds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for cycle in range(args.rounds):
        for mode in MODES[cycle % 3:] + MODES[:cycle % 3]:
            if mode == "cold":
                release(mapped.mapped)  # the pages this process maps, then the page cache's
                evict(trainer.loaded.source)
            rounds[mode].append(trainer.rate(placed["streamed" if mode == "cold" else mode], args.steps))
            if mode == "cold":  # the next streamed round reads from the page cache, as it did before the eviction
                warm(trainer.loaded.source)
    ratios = {mode: statistics.median(s / r for s, r in zip(rounds[mode], rounds["resident"]))
              for mode in ("streamed", "cold")}
    return {"samples_per_s": {mode: max(rates) for mode, rates in rounds.items()}, "rounds": rounds,
            "vs_resident": ratios, **trainer.about()}


def run_phase(phase: str, root: Path, args) -> dict:
    """Run one phase in a child process; its result, with the peak RSS and PSS of the process and its workers."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--out", out.name,
                   "--steps", str(args.steps), "--rounds", str(args.rounds), "--warmup", str(args.warmup),
                   "--batch-size", str(args.batch_size), "--precision", args.precision]
        child = subprocess.Popen(command, cwd=REPO)
        process, peak, peak_pss = psutil.Process(child.pid), 0, 0
        while child.poll() is None:
            try:
                tree = [p for p in (process, *process.children(recursive=True)) if _counted(p)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
                peak_pss = max(peak_pss, sum(p.memory_full_info().pss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.1)
        if child.returncode:
            raise SystemExit(f"phase {phase} on {root} failed (exit status {child.returncode})")
        result = json.loads(Path(out.name).read_text())
    result["peak_rss_mb"] = max(peak / 2**20, result.pop("own_peak_mb"))
    result["peak_pss_mb"] = peak_pss / 2**20
    return result


def _counted(process: psutil.Process) -> bool:
    try:
        return process.name() != "mongod"
    except psutil.Error:
        return False


# --------------------------------------------------------------------------- the table


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.phase:
        phase = {"ingest": phase_ingest, "arrays": phase_arrays, "paired": phase_paired}.get(args.phase, phase_train)
        result = phase(args)
        result["own_peak_mb"] = own_peak_mb()
        result["end_rss_mb"] = rss_parts()
        args.out.write_text(json.dumps(result))
        return

    from cilp_plugin.data import synth
    from mm_models.inference import resolve_device, resolve_precision

    args.precision = resolve_precision(args.precision, resolve_device("auto"))  # once: every phase the same
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale."))
    rows, csv_rows = [], Results("bench_scale", args.precision)
    print(f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM; batch {args.batch_size}, "
          f"{args.precision}; training: {args.rounds} cycles of a round of {args.steps} batches per placement, "
          f"after {args.warmup}", flush=True)
    try:
        for size in args.sizes:
            folder = work / f"pairs-{size}"
            if folder.exists():
                shutil.rmtree(folder)
            started = time.perf_counter()
            root = synth.generate(folder / "data", size // 2, seed=size)
            print(f"{size:,} pairs: generated in {time.perf_counter() - started:.0f} s "
                  f"({_du(root) / 1e9:.2f} GB)", flush=True)
            results = {}
            for phase in args.phases:
                results[phase] = run_phase(phase, root, args)
                print(f"  {phase}: {json.dumps(results[phase])}", flush=True)
            results["disk_gb"] = _du(folder) / 1e9
            rows.append((size, results))
            csv_rows.add(**csv_row(size, results))
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    trained = next((r[phase] for _, r in rows for phase in ("paired", "resident", "streamed") if phase in r), None)
    print("" if trained is None else f"\ndevice {trained['device']}, precision {trained['precision']}, "
          f"{trained['threads']} threads; intermediate add, batch {args.batch_size}")
    print("\n" + table(rows))
    if len(rows) > 1:
        (small, first), (large, last) = rows[0], rows[-1]
        print(f"\n{large:,} vs {small:,} pairs: " + ", ".join(
            f"{what} {change(rate(last, key), rate(first, key))}"
            for what, key in (("ingest", "ingest"), ("arrays", "arrays"), ("resident", "resident"),
                              ("streamed", "streamed"), ("streamed cold", "cold")) if rate(first, key)))
    if "paired" in args.phases:
        print("streamed / resident, median of the paired rounds: " + ", ".join(
            f"{size:,}: {ratio(r)}" for size, r in rows))
    print(csv_rows)


def csv_row(size: int, r: dict) -> dict:
    """One size's numbers, the table's columns unformatted ('' where a phase did not run)."""
    def peak(phase: str, kind: str):
        return r[phase].get(f"peak_{kind}_mb", "") if phase in r else ""

    ratios = r["paired"]["vs_resident"] if "paired" in r else {}
    row = {"pairs": size, "arrays_gb": r["arrays"]["bytes"] / 1e9 if "arrays" in r else "", "disk_gb": r["disk_gb"]}
    for key, unit in (("ingest", "pairs"), ("arrays", "pairs"), ("resident", "samples"), ("streamed", "samples"),
                      ("cold", "samples")):
        value = rate(r, key)
        row[f"{key}_{unit}_per_s"] = "" if value is None else value
        if key != "cold":
            row[f"{key}_peak_rss_mb"], row[f"{key}_peak_pss_mb"] = peak(key, "rss"), peak(key, "pss")
    row["streamed_vs_resident"] = ratios.get("streamed", "")
    row["cold_vs_resident"] = ratios.get("cold", "")
    return row


def rate(results: dict, key: str) -> float | None:
    """pairs/s of ingest and arrays, training samples/s (the paired phase's best round) of a placement."""
    if key in ("ingest", "arrays"):
        return results[key]["pairs"] / results[key]["seconds"] if key in results else None
    return results["paired"]["samples_per_s"][key] if "paired" in results else None


def change(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.0f} %"


def ratio(results: dict) -> str:
    ratios = results["paired"]["vs_resident"]
    return f"{100 * (ratios['streamed'] - 1):+.0f} % (cold {100 * (ratios['cold'] - 1):+.0f} %)"


def table(rows) -> str:
    lines = ["| pairs | arrays | disk | ingest pairs/s | ingest peak RSS (PSS) | arrays cache pairs/s "
             "| arrays peak RSS (PSS) | train resident samples/s | resident peak RSS (PSS) "
             "| train streamed samples/s | streamed peak RSS (PSS) "
             "| streamed cold samples/s | streamed / resident |",
             "| " + " | ".join(["---"] * 13) + " |"]
    def cell(r: dict, key: str, digits: int = 0) -> str:
        value = rate(r, key)
        return "-" if value is None else f"{value:,.{digits}f}"

    def rss(r: dict, phase: str) -> str:
        if phase not in r:
            return "-"
        return f"{r[phase]['peak_rss_mb']:,.0f} MB ({r[phase].get('peak_pss_mb', float('nan')):,.0f} MB)"

    for size, r in rows:
        lines.append("| " + " | ".join([
            f"{size:,}", f"{r['arrays']['bytes'] / 1e9:.2f} GB" if "arrays" in r else "-", f"{r['disk_gb']:.1f} GB",
            cell(r, "ingest"), rss(r, "ingest"), cell(r, "arrays"), rss(r, "arrays"),
            cell(r, "resident", 1), rss(r, "resident"),
            cell(r, "streamed", 1), rss(r, "streamed"), cell(r, "cold", 1), ratio(r) if "paired" in r else "-"]) + " |")
    return "\n".join(lines)


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


if __name__ == "__main__":
    main()

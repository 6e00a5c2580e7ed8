"""Ingest throughput: folder -> grouped dataset, derived files included, in pairs/s.

Runs against a private, throw-away MongoDB (as the tests do).

    .venv/bin/python benchmarks/bench_ingest.py [--n-per-class 1000]
"""

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fiftyone_isolation
from results_csv import Results  # noqa: E402

from tests import fiftyone_isolation  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-per-class", type=int, default=1000)
    args = parser.parse_args()
    fiftyone_isolation.start()
    import fiftyone as fo

    from cilp_plugin.data import synth
    from cilp_plugin.dataset import ingest

    with tempfile.TemporaryDirectory() as tmp:
        root = synth.generate(Path(tmp) / "data", args.n_per_class, seed=0)
        fo.Dataset().delete()  # connect to the database outside the timed part
        name = f"bench-{uuid.uuid4().hex[:6]}"
        start = time.perf_counter()
        result = ingest.ingest(root, name)
        seconds = time.perf_counter() - start
        again = time.perf_counter()
        ingest.ingest(root, name)
        reingest = time.perf_counter() - again
        fo.delete_dataset(name)
    pairs = len(result.added)
    results = Results("bench_ingest")
    results.add(pairs=pairs, seconds=seconds, pairs_per_s=pairs / seconds, reingest_s=reingest)
    print(f"ingest: {pairs} pairs (3 slices each) in {seconds:.2f} s = {pairs / seconds:,.0f} pairs/s; "
          f"re-ingest (nothing new) {reingest:.2f} s\n{results}")


if __name__ == "__main__":
    main()

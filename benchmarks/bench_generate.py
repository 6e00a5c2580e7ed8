"""Generator throughput: pairs/s, PNG and .npy writing included.

    .venv/bin/python benchmarks/bench_generate.py [--n-per-class 2500] [--workers 2]
"""

import argparse
import tempfile
import time
from pathlib import Path

from results_csv import Results

from cilp_plugin.data import synth


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-per-class", type=int, default=2500)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pairs = 2 * args.n_per_class
    with tempfile.TemporaryDirectory() as tmp:
        rates = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            synth.generate(Path(tmp) / f"run{repeat}", args.n_per_class, seed=repeat, workers=args.workers)
            rates.append(pairs / (time.perf_counter() - start))
    best, median = max(rates), sorted(rates)[len(rates) // 2]
    results = Results("bench_generate")
    results.add(pairs=pairs, runs=args.repeats, workers=args.workers or "auto", best_pairs_per_s=best,
                median_pairs_per_s=median)
    print(f"generate: {pairs} pairs x {args.repeats} runs, 64x64, "
          f"best {best:,.0f} pairs/s, median {median:,.0f} pairs/s\n{results}")


if __name__ == "__main__":
    main()

"""Episode store + sampler benchmark (issue 2). `python bench/store.py --out results/bench_store.json`."""

import sys

from learning.benchmarks.store import main

if __name__ == "__main__":
    sys.exit(main())

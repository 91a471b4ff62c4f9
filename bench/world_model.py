"""World-model benchmark (issue 4). Example:
`python bench/world_model.py --family push results/push_train.zarr results/push_test.zarr --out results/bench_world_model.json`."""

import sys

from learning.benchmarks.world_model import main

if __name__ == "__main__":
    sys.exit(main())

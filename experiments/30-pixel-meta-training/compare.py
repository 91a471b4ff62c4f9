"""Paired comparison of two learning-benchmark runs on the units (quality, task, draw) they share:
    python experiments/30-pixel-meta-training/compare.py A/results.json B/results.json \
        merpo:merpo meta_policy:meta_policy bc:bc [--quality medium]
prints, per pair "method_in_A:method_in_B", each run's mean success on the shared units and the
mean of B minus A with its 95 % interval (two-stage bootstrap: tasks, then draws; the
benchmark's own `paired_difference`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import paired_difference  # noqa: E402


def units(path: str, method: str, quality: str) -> dict[tuple[int, int], float]:
    rows = json.loads(Path(path).read_text())["units"]
    vals: dict[tuple[int, int], list[float]] = {}
    for u in rows:  # world-model seeds of one unit are averaged, as the benchmark does
        if u["method"] == method and u["quality"] == quality:
            vals.setdefault((int(u["task"]), int(u["draw"])), []).append(float(u["success_rate"]))
    return {k: sum(v) / len(v) for k, v in vals.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("pairs", nargs="+", help="method_in_A:method_in_B")
    p.add_argument("--quality", default="medium")
    args = p.parse_args()
    print("| A | B | units | A mean | B mean | B minus A [95 % CI] |\n|---|---|---|---|---|---|")
    for pair in args.pairs:
        ma, mb = pair.split(":")
        a, b = units(args.a, ma, args.quality), units(args.b, mb, args.quality)
        shared = sorted(set(a) & set(b))
        if not shared:
            print(f"| {ma} | {mb} | 0 | – | – | – |")
            continue
        d = paired_difference({u: b[u] for u in shared}, {u: a[u] for u in shared})
        am = sum(a[u] for u in shared) / len(shared)
        bm = sum(b[u] for u in shared) / len(shared)
        print(f"| {ma} | {mb} | {len(shared)} | {am:.2f} | {bm:.2f} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |")


if __name__ == "__main__":
    main()

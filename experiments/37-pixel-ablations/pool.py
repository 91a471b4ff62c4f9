"""The adaptation-time uncertainty ablation on two world models: experiments/31 and this study
ran MerPO v2 and `merpo_no_uncertainty` on the same random-heavy held-out logs (the same log
seeds; each study its own world model and meta-training). Each unit's difference is averaged over
the two world models, as the benchmark averages a unit's world-model seeds, then bootstrapped
over tasks and draws:
    python experiments/37-pixel-ablations/pool.py experiments/31-pixel-uncertainty-random-heavy/results.json \
        experiments/37-pixel-ablations/results.json [--json OUT]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference  # noqa: E402

QUALITY = "random_heavy"
METHODS = ("bc", "merpo", "merpo_no_uncertainty")


def units(results: dict, method: str) -> dict[tuple[int, int], float]:
    return {(int(u["task"]), int(u["draw"])): float(u["success_rate"]) for u in results["units"]
            if u["method"] == method and u["quality"] == QUALITY}


def logs(results: dict) -> dict[tuple[int, int], float]:
    return {(int(u["task"]), int(u["draw"])): float(u["success_rate"]) for u in results["behaviour_units"]
            if u["quality"] == QUALITY}


def pool(runs: list[dict]) -> dict:
    """Per-run and pooled means and the paired MerPO minus the ablation; refuses runs whose
    held-out logs differ (their own success per unit is the check)."""
    if any(logs(r) != logs(runs[0]) for r in runs[1:]):
        raise ValueError("the runs' held-out random-heavy logs differ: their units cannot be pooled")
    per = [{m: units(r, m) for m in METHODS} for r in runs]
    shared = sorted(set.intersection(*(set(p[m]) for p in per for m in METHODS)))
    pooled = {m: {u: sum(p[m][u] for p in per) / len(per) for u in shared} for m in METHODS}
    return {"units": len(shared),
            "per_run": [{"merpo - merpo_no_uncertainty": paired_difference(p["merpo"], p["merpo_no_uncertainty"])}
                        for p in per],
            "means": {m: bootstrap_mean(v) for m, v in pooled.items()},
            "paired": {"merpo - merpo_no_uncertainty": paired_difference(pooled["merpo"], pooled["merpo_no_uncertainty"]),
                       "merpo - bc": paired_difference(pooled["merpo"], pooled["bc"])}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="learning-benchmark results.json of each world model's run")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    rep = pool([json.loads(Path(f).read_text()) for f in args.results])
    print(f"{rep['units']} units, {len(args.results)} world models\n| | mean [95 % CI] |\n|---|---|")
    for i, r in enumerate(rep["per_run"]):
        d = r["merpo - merpo_no_uncertainty"]
        print(f"| run {i}: merpo - merpo_no_uncertainty | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |")
    for m, s in rep["means"].items():
        print(f"| pooled {m} | {s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}] |")
    for k, d in rep["paired"].items():
        print(f"| pooled {k} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()

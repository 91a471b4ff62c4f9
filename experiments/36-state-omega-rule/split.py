"""MerPO v2 under the state track's solved-log omega rule, read on two sets of held-out log draws:
    python experiments/36-state-omega-rule/split.py RESULTS.json [--quality medium] [--json OUT]
Draws 0-2 are the held-out logs the rule was scored on before it became the state default (the
sweeps of experiments/22 and /26 run 4; with more draws the units' learner seeds differ); the logs
of draws 3-5 (seeds 200 + quality + 10 d) were never looked at.
Prints, per set of draws, each method's mean success with its 95 % interval and the paired
differences MerPO minus the fixed omega 0.4 (`merpo_omega04`), minus BC and minus the logs
(two-stage bootstrap, tasks then draws: the benchmark's own `paired_difference`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference  # noqa: E402

SETS = {"draws 0-2 (scored before)": (0, 1, 2), "draws 3-5 (new)": (3, 4, 5), "all draws": (0, 1, 2, 3, 4, 5)}
PAIRS = (("merpo", "merpo_omega04"), ("merpo", "bc"), ("merpo", "logs"), ("merpo_omega04", "bc"))


def unit_table(results: dict, quality: str) -> dict[str, dict[tuple[int, int], float]]:
    """method -> {(task, draw): success}; "logs" is the held-out log's own success."""
    out: dict[str, dict[tuple[int, int], float]] = {}
    for u in results["units"]:
        if u["quality"] == quality:
            out.setdefault(u["method"], {})[(int(u["task"]), int(u["draw"]))] = float(u["success_rate"])
    out["logs"] = {(int(u["task"]), int(u["draw"])): float(u["success_rate"])
                   for u in results["behaviour_units"] if u["quality"] == quality}
    return out


def split(results: dict, quality: str) -> dict:
    table = unit_table(results, quality)
    report: dict = {}
    for name, draws in SETS.items():
        sub = {m: {u: v for u, v in vals.items() if u[1] in draws} for m, vals in table.items()}
        sub = {m: v for m, v in sub.items() if v}
        if not sub:
            continue
        report[name] = {"means": {m: bootstrap_mean(v) for m, v in sorted(sub.items())},
                        "paired": {f"{a} - {b}": paired_difference(sub[a], sub[b])
                                   for a, b in PAIRS if a in sub and b in sub}}
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--quality", default="medium")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    report = split(json.loads(Path(args.results).read_text()), args.quality)
    for name, r in report.items():
        print(f"\n{name}\n| method | units | success [95 % CI] |\n|---|---|---|")
        for m, s in r["means"].items():
            print(f"| {m} | {s['n_units']} | {s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}] |")
        print("| paired | units | difference [95 % CI] |\n|---|---|---|")
        for k, d in r["paired"].items():
            print(f"| {k} | {d['n_units']} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

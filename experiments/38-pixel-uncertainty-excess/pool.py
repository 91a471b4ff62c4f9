"""Paired differences pooled over world models: several learning-benchmark runs on the same
held-out logs (the same log seeds; each run its own world model and meta-training). For each pair
A:B, the runs that hold both methods are used; each unit's difference is averaged over them, as
the benchmark averages a unit's world-model seeds, then bootstrapped over tasks and draws. The
interval resamples tasks and draws, not world models.
    python experiments/38-pixel-uncertainty-excess/pool.py RESULTS.json... --pair merpo:merpo_no_uncertainty \
        [--pair A:B ...] [--quality random_heavy] [--json OUT]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import paired_difference  # noqa: E402

Unit = tuple[int, int]


def units(results: dict, method: str, quality: str) -> dict[Unit, float]:
    return {(int(u["task"]), int(u["draw"])): float(u["success_rate"]) for u in results["units"]
            if u["method"] == method and u["quality"] == quality}


def logs(results: dict, quality: str) -> dict[Unit, float]:
    return {(int(u["task"]), int(u["draw"])): float(u["success_rate"]) for u in results["behaviour_units"]
            if u["quality"] == quality}


def pool(runs: list[dict], pairs: list[tuple[str, str]], quality: str = "random_heavy") -> dict:
    """Per pair A:B: A minus B in each run that holds both, and pooled over those runs (their
    shared units). Runs whose held-out logs differ are refused (the logs' own success per unit is
    the check); a pair no run holds is refused."""
    if any(int(u.get("wm_seed", 0)) for r in runs for u in r["units"]):
        raise ValueError("a run with several world-model seeds: pool its seeds with the benchmark's own summary")
    if any(logs(r, quality) != logs(runs[0], quality) for r in runs[1:]):
        raise ValueError(f"the runs' held-out {quality} logs differ: their units cannot be pooled")
    out: dict[str, dict] = {}
    for a, b in pairs:
        per = [(i, units(r, a, quality), units(r, b, quality)) for i, r in enumerate(runs)]
        per = [(i, ua, ub) for i, ua, ub in per if ua and ub]
        if not per:
            raise ValueError(f"no run holds both {a} and {b} on {quality}")
        shared = sorted(set.intersection(*(set(ua) & set(ub) for _, ua, ub in per)))
        pa = {u: sum(ua[u] for _, ua, _ in per) / len(per) for u in shared}
        pb = {u: sum(ub[u] for _, _, ub in per) / len(per) for u in shared}
        out[f"{a} - {b}"] = {"runs": [i for i, _, _ in per], "units": len(shared),
                             "per_run": [paired_difference(ua, ub) for _, ua, ub in per],
                             "pooled": paired_difference(pa, pb)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="learning-benchmark results.json of each world model's run")
    p.add_argument("--pair", action="append", required=True, metavar="A:B", help="report A minus B (repeatable)")
    p.add_argument("--quality", default="random_heavy")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    pairs = []
    for s in args.pair:
        a, sep, b = s.partition(":")
        if not (sep and a and b):
            p.error(f"--pair {s!r}: expected A:B, two method names")
        pairs.append((a, b))
    rep = pool([json.loads(Path(f).read_text()) for f in args.results], pairs, args.quality)
    print(f"{args.quality}; runs: " + ", ".join(f"{i}={f}" for i, f in enumerate(args.results)))
    print("| A - B | runs | units | per run | pooled [95 % CI] |\n|---|---|---|---|---|")
    for k, r in rep.items():
        per = ", ".join(f"{d['mean']:+.2f}" for d in r["per_run"])
        d = r["pooled"]
        print(f"| {k} | {r['runs']} | {r['units']} | {per} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |")
    if args.json:  # with the inputs, so that test_pool.py can check the file against them
        root = Path(__file__).resolve().parents[2]
        files = [str(Path(f).resolve().relative_to(root)) for f in args.results]
        Path(args.json).write_text(json.dumps({"files": files, "quality": args.quality, "pairs": rep}, indent=1) + "\n")


if __name__ == "__main__":
    main()

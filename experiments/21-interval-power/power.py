"""How wide will the learning benchmark's paired interval be, and what design reaches +-0.10?

Reads a `vmerpo bench learning` results.json, and for each method paired against a baseline on
one quality:

1. splits the per-unit differences' variance into between-task and within-task (draw)
   components (one-way random-effects ANOVA over tasks x draws);
2. simulates designs (held-out tasks x draws) from those components (normal units) and from the
   observed units themselves (a task's units resampled as a block: no normality assumed), and
   reports the interval half-width `vmerpo.benchmarks.paired.paired_difference` would give and
   how often it covers the true mean (its coverage).

    python experiments/21-interval-power/power.py experiments/18-merpo-v2/state-full/results.json \
        --quality medium --out experiments/21-interval-power/power.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import bootstrap_mean  # noqa: E402


def components(table: np.ndarray) -> dict[str, float]:
    """One-way random effects over rows (tasks) of a tasks x draws table."""
    a, b = table.shape
    msb = b * table.mean(1).var(ddof=1)
    msw = table.var(1, ddof=1).mean()
    return {"between_task_var": max(0.0, (msb - msw) / b), "within_task_var": float(msw),
            "task_mean_sd": float(table.mean(1).std(ddof=1))}


def simulate(draw_units, tasks: int, draws: int, reps: int, rng: np.random.Generator, truth: float) -> dict:
    widths, cover = [], 0
    for r in range(reps):
        vals = draw_units(tasks, draws, rng)
        ci = bootstrap_mean({(t, d): float(vals[t, d]) for t in range(tasks) for d in range(draws)},
                            n_boot=2000, seed=r)
        widths.append(ci["half_width"])
        cover += ci["low"] <= truth <= ci["high"]
    return {"tasks": tasks, "draws": draws, "half_width_mean": float(np.mean(widths)), "coverage": cover / reps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a learning benchmark results.json")
    p.add_argument("--quality", default="medium")
    p.add_argument("--baseline", default="bc")
    p.add_argument("--methods", default="merpo,meta_policy,rac,iql_finetuned")
    p.add_argument("--reps", type=int, default=300, help="simulated benchmarks per design (default 300)")
    p.add_argument("--designs", default="10x3,10x6,10x8,25x3,30x2",
                   help="comma-separated TASKSxDRAWS to simulate")
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args()
    res = json.loads(Path(args.results).read_text())
    unit: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    for row in res["units"]:
        if row["quality"] == args.quality:
            unit[row["method"]][(row["task"], row["draw"])] = row["success_rate"]
    designs = [tuple(int(x) for x in d.split("x")) for d in args.designs.split(",")]
    out = {"results": args.results, "results_commit": res.get("commit"), "quality": args.quality,
           "baseline": args.baseline, "reps": args.reps, "methods": {}}
    rng = np.random.default_rng(0)
    for m in args.methods.split(","):
        keys = sorted(unit[args.baseline])
        tasks = sorted({t for t, _ in keys})
        draws = sorted({d for _, d in keys})
        table = np.array([[unit[m][(t, d)] - unit[args.baseline][(t, d)] for d in draws] for t in tasks])
        comp = components(table)
        observed = bootstrap_mean({(t, d): float(table[i, j]) for i, t in enumerate(tasks)
                                   for j, d in enumerate(draws)})
        mean = float(table.mean())

        def normal(a, b, g, comp=comp, mean=mean):
            return (mean + g.normal(0, np.sqrt(comp["between_task_var"]), (a, 1))
                    + g.normal(0, np.sqrt(comp["within_task_var"]), (a, b)))

        def blocks(a, b, g, table=table):  # a task's observed draws as a block; more draws: drawn from its own
            rows = table[g.integers(len(table), size=a)]
            return np.take_along_axis(rows, g.integers(rows.shape[1], size=(a, b)), 1)

        sims = {"normal": [simulate(normal, a, b, args.reps, rng, mean) for a, b in designs],
                "observed_blocks": [simulate(blocks, a, b, args.reps, rng, mean) for a, b in designs]}
        out["methods"][m] = {"mean": mean, "observed": observed, **comp, "simulated": sims}
        print(f"{m} - {args.baseline} ({args.quality}): mean {mean:+.3f}, half-width {observed['half_width']:.3f}; "
              f"between-task var {comp['between_task_var']:.4f}, within (draw) var {comp['within_task_var']:.4f}")
        for kind, rows in sims.items():
            print("   " + kind + ": " + "; ".join(f"{r['tasks']}x{r['draws']} +-{r['half_width_mean']:.3f} "
                                              f"(cover {r['coverage']:.2f})" for r in rows))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

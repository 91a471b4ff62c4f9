"""The demo's comparison over several `vmerpo demo --seed S` runs, pooled: each seed collects its
own meta-train and held-out logs, so the (task, seed) units are independent log draws of the
same 4 held-out tasks. Paired MerPO v2 minus BC and minus the logs, two-stage bootstrap (tasks,
then seeds; the benchmark's `paired_difference`):
    python experiments/14-demo/seeds.py OUT_SEED0/report.json OUT_SEED1/report.json ..."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference  # noqa: E402


def per_task(report: dict) -> dict[str, dict[int, float]]:
    """method -> {task: success} from the demo's compare steps; "logs" from the held-out store."""
    out: dict[str, dict[int, float]] = {}
    for s in report["steps"]:
        if s["step"].startswith("compare: ") and s["result"]:
            method, task = s["step"].removeprefix("compare: ").split(" on held-out task ")
            out.setdefault(method, {})[int(task)] = float(s["result"]["success_rate"])
        if s["step"] == "inspect the held-out logs" and s["result"]:
            for t, v in s["result"]["tasks"].items():
                if v["episodes"]:
                    out.setdefault("logs", {})[int(t)] = float(v["success_rate"])
    return out


def main() -> None:
    units: dict[str, dict[tuple[int, int], float]] = {}
    for seed, path in enumerate(sys.argv[1:]):
        for method, vals in per_task(json.loads(Path(path).read_text())).items():
            for task, v in vals.items():
                units.setdefault(method, {})[(task, seed)] = v
    for m in ("logs", "bc", "merpo"):
        s = bootstrap_mean(units[m])
        print(f"{m}: {s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}] over {s['n_units']} units")
    for a, b in (("merpo", "bc"), ("merpo", "logs")):
        d = paired_difference(units[a], units[b])
        print(f"{a} minus {b}: {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]")


if __name__ == "__main__":
    main()

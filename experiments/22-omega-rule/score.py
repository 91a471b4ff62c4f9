"""Score omega rules on the units of omega_probe.py's JSON, or directly on a learning benchmark
results.json of either track that has MerPO at omega 0.4 (`merpo` with the fixed rule, or
`merpo_omega04`), `merpo_omega0` and `merpo_omega1` (the logs' success from its
`behaviour_units`; no evidence rule then), with paired intervals against BC and against fixed
omega 0.4 (`vmerpo.benchmarks.paired`). Units of several world-model seeds are averaged.

    python experiments/22-omega-rule/score.py experiments/22-omega-rule/probe.json --out experiments/22-omega-rule/scores.json
    python experiments/22-omega-rule/score.py RUN/results.json --out scores_pixel.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference  # noqa: E402

RULES = {
    "omega 0.4 (fixed; MerPO's published value)": lambda u: u["merpo"],
    "omega 0 (fixed)": lambda u: u["merpo_omega0"],
    "omega 1 (fixed)": lambda u: u["merpo_omega1"],
    "solved-log: 0 unless every log episode succeeded, then 0.4": lambda u: (
        u["merpo"] if u["log_success"] >= 1.0 else u["merpo_omega0"]),
    "sensitivity: 0 unless >= 80 % succeeded, then 0.4": lambda u: (
        u["merpo"] if u["log_success"] >= 0.8 else u["merpo_omega0"]),
    "sensitivity: 0 unless every log episode succeeded, then 1": lambda u: (
        u["merpo_omega1"] if u["log_success"] >= 1.0 else u["merpo_omega0"]),
    "evidence: 0 if evidence >= its median, else 0.4": None,  # set per quality below
}


def load_units(doc: dict) -> list[dict]:
    """omega_probe.py's units as they are; a benchmark results.json's rows joined per unit."""
    if "behaviour_units" not in doc:
        return doc["units"]
    fixed = doc["settings"].get("omega_rule", "fixed") == "fixed"
    acc: dict[tuple, dict[str, list[float]]] = {}
    for r in doc["units"]:
        acc.setdefault((r["quality"], r["task"], r["draw"]), {}).setdefault(r["method"], []).append(r["success_rate"])
    out = []
    for b in doc["behaviour_units"]:
        got = acc.get((b["quality"], b["task"], b["draw"]), {})
        at04 = got.get("merpo_omega04") or (got.get("merpo") if fixed else None)
        if not (at04 and got.get("merpo_omega0") and got.get("merpo_omega1") and got.get("bc")):
            continue
        out.append({"quality": b["quality"], "task": b["task"], "draw": b["draw"], "log_success": b["success_rate"],
                    "merpo": float(np.mean(at04)), "merpo_omega0": float(np.mean(got["merpo_omega0"])),
                    "merpo_omega1": float(np.mean(got["merpo_omega1"])), "bc": float(np.mean(got["bc"])),
                    "evidence": None})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe")
    p.add_argument("--out")
    a = p.parse_args()
    units = load_units(json.loads(Path(a.probe).read_text()))
    out: dict = {"probe": a.probe, "qualities": {}}
    for q in dict.fromkeys(u["quality"] for u in units):
        us = [u for u in units if u["quality"] == q]
        med = float(np.median([u["evidence"] for u in us])) if us[0].get("evidence") is not None else 0.0
        key = lambda u: (u["task"], u["draw"])  # noqa: E731
        bc = {key(u): u["bc"] for u in us}
        fixed = {key(u): u["merpo"] for u in us}
        rows = {}
        for name, fn in RULES.items():
            if fn is None and us[0].get("evidence") is None:
                continue
            f = fn or (lambda u, med=med: u["merpo_omega0"] if u["evidence"] >= med else u["merpo"])
            vals = {key(u): f(u) for u in us}
            rows[name] = {"success": bootstrap_mean(vals), "minus_bc": paired_difference(vals, bc),
                          "minus_fixed_0.4": paired_difference(vals, fixed)}
        out["qualities"][q] = {"units": len(us), "log_success": float(np.mean([u["log_success"] for u in us])),
                               "bc": float(np.mean(list(bc.values()))), "rules": rows}
    lines = ["| quality | rule | success [95 % CI] | minus BC | minus fixed 0.4 |", "|---|---|---|---|---|"]
    for q, d in out["qualities"].items():
        for name, r in d["rules"].items():
            s, b, f = r["success"], r["minus_bc"], r["minus_fixed_0.4"]
            lines.append(f"| {q} | {name} | {s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}] | "
                         f"{b['mean']:+.2f} [{b['low']:+.2f}, {b['high']:+.2f}] | "
                         f"{f['mean']:+.2f} [{f['low']:+.2f}, {f['high']:+.2f}] |")
    print("\n".join(lines))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

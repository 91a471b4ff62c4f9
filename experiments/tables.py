"""Markdown summary tables regenerated from the study JSONs (so a study README's tables come
from its JSON, never typed by hand).

    python experiments/tables.py experiments/07-adaptation-ablations
    python experiments/tables.py experiments/10-reach-margin/margin experiments/11-rac-ceiling

Each argument is a JSON file or a folder (searched recursively). Known shapes, recognised by
their keys: the outputs of ablation_adapt.py, reach_margin.py (old list form and current
form), rac_ceiling.py, refit_sweep.py, adapt_scope.py, goal_pin.py and goal_probe.py. Other JSON files are listed as
skipped. Paths in the tables are relative to the argument they were found under. Learning
benchmark runs need no help: `vmerpo bench learning` writes its own `results.md`.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _f(x, nd: int = 2) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def ablation(items: list[tuple[str, dict]]) -> list[str]:
    out = ["| JSON | method | quality | RAC settings | start | steps | units | success | mean return | min |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in items:
        r0, s = d["rows"][0], d["summary"]
        rac = dict(r0.get("rac") or {})
        if "omega" in r0:
            rac["omega"] = r0["omega"]
        settings = ", ".join(f"{k}={v}" for k, v in sorted(rac.items())) or "as the run"
        steps = r0.get("steps")
        out.append(f"| {name} | {r0.get('method', 'merpo')} | {r0['quality']} | {settings} | {r0.get('start', 'own')} "
                   f"| {'run default' if steps is None else steps} | {len(d['rows'])} | {_f(s['success_mean'])} "
                   f"| {s['mean_return']:.0f} | {s['seconds'] / 60:.1f} |")
    return out


def margin(items: list[tuple[str, dict]]) -> list[str]:
    out = ["| JSON | episodes | success | closest < 5 cm | 5-7 cm | > 7 cm | median final (cm) |",
           "|---|---|---|---|---|---|---|"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for name, d in items:
        s = d["summary"]
        out.append(f"| {name} | {s['episodes']} | {_f(s['success'])} | {_f(s['closest_within_5cm'])} "
                   f"| {_f(s['closest_5_to_7cm'])} | {_f(s['closest_beyond_7cm'])} | {s['median_final_cm']:.1f} |")
        groups[Path(name).stem.rsplit("_t", 1)[0]] += d["rows"]
    if len(items) > 1:
        out += ["", "| policy (all its JSONs) | episodes | success | failed: median closest (cm) "
                "| failed: share closest <= 6 cm | successful: median final (cm) |", "|---|---|---|---|---|---|"]
        for pol, rows in groups.items():
            fail = [100 * r["closest_tool_centre_to_goal_m"] for r in rows if not r["success"]]
            succ = [100 * r["tool_centre_to_goal_m"] for r in rows if r["success"]]
            out.append(f"| {pol} | {len(rows)} | {_f(len(succ) / len(rows))} "
                       f"| {_f(statistics.median(fail), 1) if fail else ''} "
                       f"| {_f(sum(c <= 6 for c in fail) / len(fail)) if fail else ''} "
                       f"| {_f(statistics.median(succ), 1) if succ else ''} |")
    return out


def margin_list(name: str, rows: list[dict]) -> list[str]:
    out = [f"{name}:", "", "| task | tool centre to goal (cm) | hand to goal (cm) | tool centre - hand, z (cm) |",
           "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['task']} | {100 * r['tool_centre_to_goal_m']:.1f} | {100 * r['hand_to_goal_m']:.1f} "
                   f"| {100 * r['tool_centre_minus_hand_m'][2]:.1f} |")
    return out


def ceiling(items: list[tuple[str, dict]]) -> list[str]:
    out = ["| JSON | features, lambda | tasks | seed | success | mean return | the log's success |",
           "|---|---|---|---|---|---|---|"]
    for name, d in items:
        log = d["summary"].get("log", {}).get("success")
        for key, s in d["summary"].items():
            if key != "log":
                out.append(f"| {name} | {key} | {s['tasks']} | {d.get('args', {}).get('seed', '')} "
                           f"| {_f(s['success'])} | {s['return']:.0f} | {_f(log)} |")
    return out


SWEEP_KEYS = {"gain", "context", "steps", "refit", "seconds", "select", "report", "select_margin"}


def sweep(name: str, d: dict) -> list[str]:
    def margin_of(m: dict) -> float:
        return min(m["uncertainty_error_spearman"] - 0.5, m["ood_action_auroc"] - 0.8)

    best = max(d["rows"], key=lambda r: margin_of(r["select"]))
    out = [f"{name} (chosen on `select`: the row marked *):", "",
           "| gain:context:steps | select Spearman | select AUROC | select margin | report Spearman "
           "| report AUROC | refit KL |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        s, p = r["select"], r["report"]
        mark = " *" if r is best else ""
        extra = {k: v for k, v in r.items() if k not in SWEEP_KEYS}
        mark += "".join(f" ({k} {v})" for k, v in extra.items())
        out.append(f"| {r['gain']:g}:{r['context']:g}:{r['steps']}{mark} | {_f(s['uncertainty_error_spearman'], 3)} "
                   f"| {_f(s['ood_action_auroc'], 3)} | {_f(margin_of(s), 3)} "
                   f"| {_f(p['uncertainty_error_spearman'], 3)} | {_f(p['ood_action_auroc'], 3)} "
                   f"| {_f(r['refit']['kl'])} |")
    return out


def scope(name: str, tasks: list[dict]) -> list[str]:
    variants = list(tasks[0]["test"])
    phi = statistics.mean(t["test"]["phi"] for t in tasks)
    out = [f"{name} ({len(tasks)} tasks; mean reward NLL on the scoring episodes, over phi's):", "",
           "| " + " | ".join(variants) + " |", "|" + "---|" * len(variants),
           "| " + " | ".join(f"{statistics.mean(t['test'][v] for t in tasks) / phi:.3f}" for v in variants) + " |"]
    return out


def goal_pin(items: list[tuple[str, dict]]) -> list[str]:
    out = ["| JSON | family | fit | goal error, train tasks (cm) | held-out tasks (cm) |", "|---|---|---|---|---|"]
    for name, d in items:
        for fit, e in d["fits"].items():
            out.append(f"| {name} | {d['family']} | {fit} | {_f(e['train_cm'])} | {_f(e['heldout_cm'])} |")
    return out


def goal_probe(items: list[tuple[str, dict]]) -> list[str]:
    out = ["| JSON | ridge | goal error, meta-train frames (cm) | held-out tasks, mean (worst) | per held-out task |",
           "|---|---|---|---|---|"]
    for name, d in items:
        for p in d["probes"]:
            e = p["heldout_error_cm"]
            out.append(f"| {name} | {p['ridge']:g} | {_f(p['train_error_cm'], 1)} "
                       f"| {_f(statistics.mean(e.values()), 1)} ({_f(max(e.values()), 1)}) "
                       f"| {' / '.join(f'{t}: {v:.1f}' for t, v in e.items())} |")
    return out


def tables(paths: list[Path]) -> list[str]:
    kinds: dict[str, list] = defaultdict(list)
    for base in paths:
        files = sorted(base.rglob("*.json")) if base.is_dir() else [base]
        for f in files:
            name = str(f.relative_to(base)) if base.is_dir() else f.name
            d = json.loads(f.read_text())
            if isinstance(d, list) and d and "tool_centre_to_goal_m" in d[0]:
                kinds["margin_list"].append((name, d))
            elif isinstance(d, list) and d and "test" in d[0] and "val" in d[0]:
                kinds["scope"].append((name, d))
            elif isinstance(d, dict) and "rows" in d and "summary" in d and "success_mean" in d["summary"]:
                kinds["ablation"].append((name, d))
            elif isinstance(d, dict) and "rows" in d and "closest_within_5cm" in d.get("summary", {}):
                kinds["margin"].append((name, d))
            elif isinstance(d, dict) and "rows" in d and "log" in d.get("summary", {}):
                kinds["ceiling"].append((name, d))
            elif isinstance(d, dict) and "fits" in d:
                kinds["goal_pin"].append((name, d))
            elif isinstance(d, dict) and "probes" in d:
                kinds["goal_probe"].append((name, d))
            elif isinstance(d, dict) and d.get("rows") and "select" in d["rows"][0]:
                kinds["sweep"].append((name, d))
            else:
                kinds["skipped"].append((name, d))
    out: list[str] = []
    for kind, items in kinds.items():
        if kind == "skipped":
            out += ["skipped (no table for this shape): " + ", ".join(n for n, _ in items)]
        elif kind in ("ablation", "margin", "ceiling", "goal_pin", "goal_probe"):
            out += globals()[kind](items)
        else:
            for name, d in items:
                out += globals()[kind](name, d) + [""]
        out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    print("\n".join(tables([Path(a) for a in args])).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

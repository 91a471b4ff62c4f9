"""The `vmerpo demo` report, rebuilt from an output directory alone.

`build(out)` reads `out/report.json` (the steps, their status, seconds, command and parsed
`--json` result) and the artefacts the steps left in `out` (the stores, `run/`, `adapted/`,
`data.png`, `rollout.mp4`), and writes
- `report.html`: one file, every image embedded (base64 data URIs, the rollout as a GIF);
- `report.md`: the same content, its images next to it (`training_curves.png`,
  `uncertainty.png` and `rollout.gif` are written to `out` for it).
Every number in them is read or computed from that directory. A section whose artefact is
missing (a step failed, was not available or did not run) says so in one line; a section that
cannot be built says why, and the others are still written.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

from vmerpo.commands.demo import COMPARE, DIRECT_EVAL, ROS_EVAL, agree_within_binomial_noise

# A report is a list of blocks, rendered to both markdown and HTML:
#   ("h1"|"h2"|"p", text)     text with markdown inline markup: `code`, **bold**, [text](href)
#   ("table", header, rows)   cells are inline text
#   ("pre", text)             verbatim
#   ("img", relpath, caption[, scale]) a PNG or GIF under out: linked in md, embedded in HTML
#                             (shown `scale` times its size)
#   ("video", relpath, caption) an mp4 under out: embedded in HTML when small, else linked
Block = tuple

UNCERTAINTY_HORIZON = 5  # imagined steps (LOMPO H=5, the world-model benchmark's default)
UNCERTAINTY_STRIDE = 2  # a rollout from every 2nd posterior state (the benchmark's default)
UNCERTAINTY_MAX_EPISODES = 10  # keeps the section to a few seconds on a CPU
VIDEO_EMBED_MAX_BYTES = 2 * 2**20


# -- entry points ------------------------------------------------------------------------------
def save_steps(out: Path, steps: list[dict], total_s: float) -> Path:
    """report.json: the record `build` reads."""
    path = Path(out) / "report.json"
    path.write_text(json.dumps({"steps": steps, "total_s": total_s}, indent=2))
    return path


def build(out: str | Path) -> dict[str, Path]:
    """Write report.html and report.md from `out`'s report.json and artefacts."""
    out = Path(out)
    rec = json.loads((out / "report.json").read_text())
    steps, total = rec.get("steps", []), rec.get("total_s")
    blocks: list[Block] = [("h1", "vmerpo demo report")]
    blocks.append(("p", f"Output directory `{out}`; total time "
                        f"{'unknown' if total is None else f'{total / 60:.1f} min'}. Every number "
                        "below is read or computed from this run's files."))
    for title, fn in (("Steps", _steps_section), ("Held-out task success", _success_section),
                      ("MerPO v2 against BC and the logs on the held-out tasks", _compare_section),
                      ("Data", _data_section), ("Training curves", _curves_section),
                      ("World model: reconstruction and open-loop prediction", _grids_section),
                      ("World model: uncertainty vs prediction error", _uncertainty_section),
                      ("Rollout", _rollout_section), ("Redo on your own logs", _redo_section)):
        blocks.append(("h2", title))
        try:
            blocks += fn(out, steps)
        except Exception as e:  # one broken section must not cost the report
            blocks.append(("p", f"This section could not be built: {type(e).__name__}: {e}"))
    paths = {"md": out / "report.md", "html": out / "report.html"}
    paths["md"].write_text(to_markdown(blocks))
    paths["html"].write_text(to_html(blocks, out))
    return paths


# -- the steps in report.json ------------------------------------------------------------------
def _argv(entry: dict) -> list[str]:
    try:
        argv = shlex.split(entry.get("command", ""))
    except ValueError:
        return []
    return argv[1:] if argv[:1] == ["vmerpo"] else argv


def _opt(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _role(entry: dict) -> str:
    """collect/inspect/train/adapt/export/launch, `expert`, `direct` or `compare` (eval), `ros`
    (ros-eval)."""
    if str(entry.get("step", "")).startswith(COMPARE + ":"):
        return "compare"
    if entry.get("step") == DIRECT_EVAL:
        return "direct"
    if entry.get("step") == ROS_EVAL:
        return "ros"
    argv = _argv(entry)
    verb = argv[0] if argv else ""
    if verb == "eval":
        return "expert" if _opt(argv, "--policy") == "expert" else "direct"
    return "ros" if verb == "ros-eval" else verb


def _find(steps: list[dict], role: str, store: str | None = None) -> list[dict]:
    """The steps of a role; with `store`, those that write (collect) or read (inspect) it."""
    found = [e for e in steps if _role(e) == role]
    if store is not None:
        def target(e: dict) -> str:
            argv = _argv(e)
            if role == "collect":
                return _opt(argv, "--out") or ""
            return argv[1] if len(argv) > 1 else ""
        found = [e for e in found if Path(target(e)).name == store]
    return found


def _ok(steps: list[dict], role: str, store: str | None = None) -> bool:
    """Did a step of this role (writing or reading `store`) run in this run and succeed?"""
    return any(e.get("status") == "ok" for e in _find(steps, role, store))


def _made(out: Path, steps: list[dict], rel: str, role: str, store: str | None = None) -> bool:
    """`out/rel` exists and its step succeeded in this run: a file left by an earlier run in the
    same directory is never reported as this run's."""
    return (out / rel).exists() and _ok(steps, role, store)


def _why(steps: list[dict], role: str, what: str, store: str | None = None,
         ran: str = "left none in the output directory", stale: Path | None = None) -> str:
    """One line: why an artefact is missing, from the status of the step that makes it."""
    for e in _find(steps, role, store):
        if e.get("status") != "ok":
            note = (f" ({stale.name} in the output directory is from an earlier run and is not used)"
                    if stale is not None and stale.exists() else "")
            return f"No {what}: the step '{e['step']}' {_status_words(e.get('status', ''))}{note}."
    if _find(steps, role, store):
        return f"No {what}: its step ran but {ran}."
    return f"No {what}: the step that makes it is not in this run's report.json."


def _status_words(status: str) -> str:
    if status.startswith("exit"):
        return f"failed ({status})"
    if status == "not yet available":
        return "is not yet available in this version"
    if status.startswith("not run"):
        return "did " + status
    return status or "has no status"


def _steps_section(out: Path, steps: list[dict]) -> list[Block]:
    if not steps:
        return [("p", "report.json lists no steps.")]
    rows = [[e["step"], e.get("status", ""), _num(e.get("seconds"), ".1f"), f"`{e.get('command', '')}`"]
            for e in steps]
    return [("table", ["step", "status", "seconds", "command"], rows)]


# -- held-out success ------------------------------------------------------------------------------
def _success_section(out: Path, steps: list[dict]) -> list[Block]:
    rows, lines = [], []
    data = _inspect_result(out, steps, "heldout.zarr")
    if data is not None and data.get("success_rate") is not None:
        rows.append(["behaviour data of the held-out logs", f"{data['success_rate']:.2f}", data["episodes"],
                     _num((data.get("return") or {}).get("mean"), ".1f"), ""])
    else:
        lines.append(_why(steps, "collect", "held-out log", "heldout.zarr", stale=out / "heldout.zarr"))
    results = {}
    for role in ("expert", "direct", "ros"):
        found = _find(steps, role)
        res = found[0].get("result") if found else None
        if isinstance(res, dict) and "success_rate" in res and "per_task" in res:
            results[role] = res
            rows.append([found[0]["step"], f"{res['success_rate']:.2f}", res.get("episodes", ""),
                         _num(res.get("mean_return"), ".1f"), _num(res.get("mean_steps_to_success"), ".1f")])
        else:
            what = {"expert": "expert evaluation", "direct": "direct (ONNX in MuJoCo) evaluation",
                    "ros": "ROS 2 evaluation"}[role]
            lines.append(_why(steps, role, f"{what} result", ran="printed no JSON result"))
    blocks: list[Block] = []
    if rows:
        blocks.append(("table", ["what", "success", "episodes", "mean return", "mean steps to success"], rows))
    blocks += [("p", line) for line in lines]
    if "direct" in results and "ros" in results:
        blocks += [("p", line) for line in _direct_vs_ros(results["direct"], results["ros"]) if line]
    return blocks


def _direct_vs_ros(direct: dict, ros: dict) -> list[str]:
    """Report lines: do the direct and the ROS 2 evaluation agree?"""
    n1, n2 = direct["episodes"], ros["episodes"]
    k1, k2 = round(direct["success_rate"] * n1), round(ros["success_rate"] * n2)
    agree = agree_within_binomial_noise(k1, n1, k2, n2)
    pairs = zip(direct.get("episode_results", []), ros.get("episode_results", []), strict=False)
    keys = ("task_id", "seed", "success", "length", "return")  # what both evaluations report
    same = sum(all(a.get(k) == b.get(k) for k in keys) for a, b in pairs)
    return [
        f"Direct vs ROS 2 evaluation: {k1}/{n1} vs {k2}/{n2} successes: "
        f"**{'agree' if agree else 'do not agree'} within binomial noise** (rule: two-sided "
        "two-proportion z-test at the 5 % level, |p1 - p2| <= 1.96 sqrt(p(1-p)(1/n1 + 1/n2)) "
        "with the pooled success rate p; equal rates agree).",
        "",
        f"Episode by episode (task, seed, success, length, return): {same}/{max(n1, n2)} identical; "
        "lockstep makes the ROS 2 path deterministic, so all should be.",
    ]


# -- the held-out comparison ---------------------------------------------------------------------
def compare_units(out: Path, steps: list[dict]) -> tuple[dict[str, dict[int, float]], list[str]]:
    """{method: {task: success}} from the comparison's evaluation steps, with "logs" the
    held-out log's own success per task; and one line per unit that is missing, saying why."""
    units: dict[str, dict[int, float]] = {}
    missing = []
    for e in _find(steps, "compare"):
        method, _, task_s = str(e["step"])[len(COMPARE) + 2:].partition(" on held-out task ")
        task = int(task_s) if task_s.isdigit() else -1
        res = e.get("result")
        if e.get("status") == "ok" and isinstance(res, dict) and "success_rate" in res:
            units.setdefault(method, {})[task] = float(res["success_rate"])
        else:
            why = "printed no JSON result" if e.get("status") == "ok" else _status_words(e.get("status", ""))
            missing.append(f"{method} on task {task}: the step '{e['step']}' {why}.")
    data = _inspect_result(out, steps, "heldout.zarr")
    if data is not None:
        logs = {int(t): v["success_rate"] for t, v in data.get("tasks", {}).items()
                if v.get("episodes") and v.get("success_rate") is not None}
        if logs:
            units["logs"] = logs
    return units, missing


def _compare_section(out: Path, steps: list[dict]) -> list[Block]:
    from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference

    units, missing = compare_units(out, steps)
    methods: list[str] = [m for m in ("logs", "bc", "merpo") if m in units]
    if not any(m in units for m in ("bc", "merpo")):
        return [("p", _why(steps, "compare", "comparison on the held-out tasks", ran="printed no JSON result"))]
    label = {"logs": "the held-out log (behaviour)", "bc": "BC (the log alone)", "merpo": "MerPO v2"}
    tasks = sorted(set().union(*(units[m] for m in methods)))
    rows = [[str(t), *(_num(units[m].get(t), ".2f") or "–" for m in methods)] for t in tasks]
    blocks: list[Block] = [
        ("p", "Each held-out task gets one 5-episode medium log (random hand starts); BC and MerPO v2 are "
              "adapted from that log alone and evaluated on the same episodes (same seeds and hand starts). "
              "Success per task:"),
        ("table", ["held-out task", *(label[m] for m in methods)], rows)]
    summary = []
    for m in methods:
        b = bootstrap_mean({(t, 0): v for t, v in units[m].items()})
        summary.append([label[m], f"{b['mean']:.2f} [{b['low']:.2f}, {b['high']:.2f}]", str(b["n_tasks"])])
    for a, b_ in (("merpo", "bc"), ("merpo", "logs"), ("bc", "logs")):
        if a in units and b_ in units and set(units[a]) & set(units[b_]):
            d = paired_difference({(t, 0): v for t, v in units[a].items()}, {(t, 0): v for t, v in units[b_].items()})
            summary.append([f"{label[a]} minus {label[b_]}", f"**{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]**",
                            str(d["n_tasks"])])
    blocks.append(("table", ["mean over the held-out tasks", "success [95 % CI]", "tasks"], summary))
    if len({tuple(sorted(units[m])) for m in methods}) > 1:
        blocks.append(("p", "The methods cover different tasks (see the table above): each mean is over its own "
                            "tasks, each difference over the tasks both have."))
    blocks.append(("p", "Intervals: percentile bootstrap over the tasks (10,000 resamples, "
                        "`vmerpo.benchmarks.paired`), differences paired by task. With this few tasks and one "
                        "log each they are wide: the demo shows the method at work; `vmerpo bench learning` "
                        "measures it (10 held-out tasks x 3 independent logs, docs/learning-benchmark.md)."))
    blocks += [("p", "Missing: " + line) for line in missing]
    try:
        _compare_plot(out / "compare.png", units, methods, tasks, label)
        blocks.append(("img", "compare.png", "Success per held-out task: the log's own, BC's and MerPO v2's."))
    except Exception as e:  # the table stands without the plot
        blocks.append(("p", f"No plot ({type(e).__name__}: {e})."))
    return blocks


def _compare_plot(path: Path, units: dict[str, dict[int, float]], methods: list[str], tasks: list[int],
                  label: dict[str, str]) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6), dpi=90)
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(tasks) + 1)
    for i, m in enumerate(methods):
        vals = [units[m].get(t, np.nan) for t in tasks]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, [*vals, float(np.nanmean(vals))], width, label=label[m])
    ax.set_xticks(x, [*map(str, tasks), "mean"])
    ax.set_xlabel("held-out task")
    ax.set_ylabel("success")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# -- data --------------------------------------------------------------------------------------
STORES = (("meta-train logs", "logs.zarr"), ("held-out log", "heldout.zarr"))


def _inspect_result(out: Path, steps: list[dict], store: str) -> dict | None:
    """The store's `vmerpo inspect --json` result, else a summary computed from the store."""
    for e in _find(steps, "inspect", store):
        if isinstance(e.get("result"), dict) and "episodes" in e["result"]:
            return e["result"]
    if _made(out, steps, store, "collect", store):
        from learning.inspect_store import summarize
        from learning.store import EpisodeStore

        return summarize(EpisodeStore.open(str(out / store)))
    return None


def _ids(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts: list[list[int]]
    parts, ids = [], sorted(ids)
    for i in ids:
        if parts and i == parts[-1][1] + 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


def _data_section(out: Path, steps: list[dict]) -> list[Block]:
    rows, per, lines = [], [], []
    for name, store in STORES:
        s = _inspect_result(out, steps, store)
        if s is None:
            lines.append(_why(steps, "collect", f"{name} ({store})", store, stale=out / store))
            continue
        tasks = [int(t) for t, v in s.get("tasks", {}).items() if v.get("episodes")]
        r, el = s.get("return") or {}, s.get("episode_length") or {}
        rows.append([f"{name} (`{store}`)", s["episodes"], s["frames"], f"{len(tasks)} (id{'s' if len(tasks) > 1 else ''} {_ids(tasks)})",
                     "x".join(map(str, s.get("image_shape", []))), _num(s.get("success_rate"), ".2f"),
                     f"{_num(r.get('mean'), '.1f')} +- {_num(r.get('std'), '.1f')}",
                     _num(el.get("mean"), ".0f")])
        for key, table in s.items():
            if key.startswith("per_"):
                per += [[store, key[4:], value, v["episodes"], f"{v['success_rate']:.2f}", f"{v['mean_return']:.1f}"]
                        for value, v in table.items()]
    blocks: list[Block] = []
    if rows:
        blocks.append(("table", ["store", "episodes", "frames", "tasks", "image", "success", "return",
                                 "mean length"], rows))
    blocks += [("p", line) for line in lines]
    if per:
        blocks += [("p", "Per behaviour policy / quality (episode provenance recorded in the store):"),
                   ("table", ["store", "by", "value", "episodes", "success", "mean return"], per)]
    if _made(out, steps, "data.png", "inspect", "logs.zarr"):
        blocks.append(("img", "data.png", "Frames and returns of the meta-train logs (`vmerpo inspect --plot`)."))
    else:
        blocks.append(("p", _why(steps, "inspect", "data plot (data.png)", "logs.zarr", stale=out / "data.png")))
    if _made(out, steps, "data.mp4", "inspect", "logs.zarr"):
        blocks.append(("p", "Episodes of the meta-train logs as a video: [data.mp4](data.mp4) (next to the report)."))
    return blocks


# -- training curves ---------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if "step" in r and isinstance(r.get(key), int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _curves_section(out: Path, steps: list[dict]) -> list[Block]:
    wm_path, mp_path = out / "run" / "world_model" / "metrics.jsonl", out / "run" / "metrics.jsonl"
    trained = _ok(steps, "train")
    wm = _jsonl(wm_path) if trained and wm_path.exists() else []
    mp = _jsonl(mp_path) if trained and mp_path.exists() else []
    if not wm and not mp:
        return [("p", _why(steps, "train", "training metrics (run/world_model/metrics.jsonl, run/metrics.jsonl)",
                           stale=out / "run"))]
    from matplotlib.figure import Figure

    v2 = (out / "run" / "metrics.json").exists() and \
        json.loads((out / "run" / "metrics.json").read_text()).get("algorithm") == "merpo_v2"
    fig = Figure(figsize=(11, 7), dpi=90)
    axes = fig.subplots(2, 2)
    panels: list[tuple[Any, list[dict], tuple[str, ...], str, str]] = [
        (axes[0, 0], wm, ("loss", "image_nll", "kl_loss", "reward_nll", "proximal"),
               "world model (log scale)", "training step")]
    if v2:  # one conditioned meta-learner: its RAC updates, and the imagined transitions it learns from
        panels += [(axes[0, 1], mp, ("q", "conservative_gap"), "MerPO v2 meta-critic Q_meta", "RAC update"),
                   (axes[1, 0], mp, ("behaviour_nll", "entropy"), "MerPO v2 meta-policy pi_c", "RAC update"),
                   (axes[1, 1], mp, ("imagined_model_reward",
                                     "imagined_raw_uncertainty" if mp and "imagined_raw_uncertainty" in mp[-1]
                                     else "imagined_uncertainty"),
                    "imagined transitions: reward and ensemble disagreement", "RAC update")]
    else:
        panels += [(axes[0, 1], mp, ("q", "conservative_gap"), "MerPO critic", "meta-step"),
                   (axes[1, 0], mp, ("behaviour_nll", "meta_kl"), "MerPO meta-policy regularizers", "meta-step"),
                   (axes[1, 1], mp, ("eval_success",), "periodic MuJoCo evaluation", "meta-step")]
    for ax, rows, keys, title, xlabel in panels:
        for key in keys:
            x, y = _series(rows, key)
            if x:
                ax.plot(x, y, marker="o" if len(x) < 10 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes)
    if axes[0, 0].lines and all(min(ln.get_ydata()) > 0 for ln in axes[0, 0].lines):
        axes[0, 0].set_yscale("log")
    if not v2:
        axes[1, 1].set_ylim(-0.05, 1.05)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png")
    caption = []
    if wm:
        last = wm[-1]
        caption.append(f"World model: {len(wm)} logged steps up to step {last.get('step')}; last loss "
                       f"{_num(last.get('loss'), '.2f')} (image NLL {_num(last.get('image_nll'), '.2f')}, "
                       f"KL {_num(last.get('kl_loss'), '.2f')}, reward NLL {_num(last.get('reward_nll'), '.3f')}).")
    else:
        caption.append(f"No world-model metrics ({wm_path.relative_to(out)} missing or empty).")
    if mp and v2:
        caption.append(f"MerPO v2: {len(mp)} logged RAC updates of the conditioned meta-policy pi_c and "
                       f"meta-critic Q_meta, up to update {mp[-1].get('step')} (behaviour_nll: the log-likelihood "
                       "term the advantage weights scale; no periodic MuJoCo evaluation in v2: pi_c needs a "
                       "task's inferred embedding, and it is scored on the held-out tasks above).")
    elif mp:
        x, y = _series(mp, "eval_success")
        ev = (", ".join(f"{s:g}@{t}" for t, s in zip(x, y, strict=True)) if x
              else "none logged (no --eval-every, or no evaluation reached)")
        train = _find(steps, "train")
        how = ""
        if train:
            a = _argv(train[0])
            how = (f" (meta-policy pi_c; --eval-tasks {_opt(a, '--eval-tasks') or 'default'}, "
                   f"--eval-episodes {_opt(a, '--eval-episodes') or 'default'})")
        caption.append(f"MerPO: {len(mp)} logged meta-steps up to {mp[-1].get('step')}; eval success "
                       f"(success@meta-step){how}: {ev}.")
    else:
        caption.append(f"No MerPO metrics ({mp_path.relative_to(out)} missing or empty).")
    return [("img", "training_curves.png", " ".join(caption))]


# -- reconstruction and open-loop grids ----------------------------------------------------------
def _grids_section(out: Path, steps: list[dict]) -> list[Block]:
    images = out / "run" / "world_model" / "images"
    blocks: list[Block] = []
    for prefix, what in (("recon", "top: real frames; bottom: posterior reconstruction"),
                         ("openloop", "top: real frames; bottom: the first quarter filtered (posterior), "
                                      "the rest predicted open loop by the prior ensemble mean under the "
                                      "logged actions")):
        pngs = sorted(images.glob(f"{prefix}_*.png")) if images.is_dir() and _ok(steps, "train") else []
        if pngs:
            step = pngs[-1].stem.split("_")[-1].lstrip("0") or "0"
            blocks.append(("img", str(pngs[-1].relative_to(out)),
                           f"{'Reconstruction' if prefix == 'recon' else 'Open-loop prediction'} at "
                           f"world-model step {step} (the latest of {len(pngs)}): {what}."))
        else:
            blocks.append(("p", _why(steps, "train", f"{prefix} grid (run/world_model/images/{prefix}_*.png)",
                                     stale=images)))
    return blocks


# -- uncertainty vs error ----------------------------------------------------------------------
def _uncertainty_section(out: Path, steps: list[dict]) -> list[Block]:
    heldout = out / "heldout.zarr"
    adapted_on = "?"
    if _made(out, steps, "adapted/config.json", "adapt"):
        data = str(json.loads((out / "adapted" / "config.json").read_text()).get("data", "?"))
        adapted_on = "this log" if Path(data).name == heldout.name else f"`{data}`"
    models = [(short, label, out / rel) for short, label, rel, role in (
        ("meta-model", "meta-model (run/world_model)", "run/world_model", "train"),
        ("task model theta_j", f"task model theta_j (adapted/task_model.pt, heads adapted on {adapted_on})",
         "adapted/task_model.pt", "adapt"))
        if _made(out, steps, rel, role)]
    if not _made(out, steps, "heldout.zarr", "collect", "heldout.zarr"):
        return [("p", _why(steps, "collect", "held-out log (heldout.zarr)", "heldout.zarr", stale=heldout))]
    if not models:
        return [("p", _why(steps, "train", "world model (run/world_model, adapted/task_model.pt)",
                           stale=out / "run"))]
    import numpy as np
    import torch

    from learning.store import EpisodeStore
    from learning.world_model_train import load_world_model
    from vmerpo.benchmarks.world_model import spearman, uncertainty_vs_error

    t0 = time.perf_counter()
    store = EpisodeStore.open(str(heldout))
    # the episodes of the task the task model was adapted to (the first task when none was)
    adapted_task = (json.loads((out / "adapted" / "config.json").read_text()).get("task")
                    if _made(out, steps, "adapted/config.json", "adapt") else None)
    task_of = [int(t) for t in store.episode_task]
    keep = adapted_task if adapted_task in task_of else (task_of[0] if task_of else None)
    eps = [e for e in range(store.n_episodes) if task_of[e] == keep][:UNCERTAINTY_MAX_EPISODES]
    episodes = [store.episode(e) for e in eps]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        for short, label, path in models:
            model, meta = load_world_model(path)
            slots = [meta["task_slots"].get(int(store.episode_task[e]), 0) for e in eps]
            if path.name == "world_model":  # phi, unless the task was among its training tasks
                label += (": phi, this task is not in its training data" if not any(slots)
                          else ": the heads of this task's training slot")
            res = uncertainty_vs_error(model, slots, episodes, UNCERTAINTY_HORIZON, seed=0,
                                       stride=UNCERTAINTY_STRIDE)
            results.append((short, label, res, spearman(res["u"], res["err"]), model.cfg.ensemble))
    finally:
        torch.set_num_threads(threads)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(results), 4.2), dpi=90)
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    for ax, (short, _, res, rho, _) in zip(axes, results, strict=True):
        sc = ax.scatter(res["u"], res["err"], c=res["step"], s=5, alpha=0.6, cmap="viridis")
        ax.set_title(f"{short}: Spearman {rho:.2f}", fontsize=10)
        ax.set_xlabel("latent uncertainty u (log_prob)")
        ax.set_ylabel("error ||z_imagined - z_post||")
        fig.colorbar(sc, ax=ax, label="steps ahead", ticks=range(1, UNCERTAINTY_HORIZON + 1))
    fig.tight_layout()
    fig.savefig(out / "uncertainty.png")

    def by_step(r: dict) -> str:
        return ", ".join(f"{spearman(r['u'][r['step'] == t], r['err'][r['step'] == t]):.2f}"
                         for t in range(1, UNCERTAINTY_HORIZON + 1))

    rhos = "; ".join(f"{label}: **{rho:.2f}** (by steps ahead 1-{UNCERTAINTY_HORIZON}: {by_step(r)})"
                     for _, label, r, rho, _ in results)
    tasks = sorted({int(store.episode_task[e]) for e in eps})
    caption = (f"Held-out log (task {_ids(tasks)}, {len(eps)} episodes): {UNCERTAINTY_HORIZON}-step open-loop "
               f"rollouts from posterior states {UNCERTAINTY_STRIDE} frames apart, under the logged actions, one "
               f"of the K={results[0][4]} prior heads sampled per step; {len(results[0][2]['u'])} imagined steps "
               "per model. u: the spread (std over the heads) of log p_k(z'|h'), LOMPO's uncertainty; error: "
               "distance to the posterior mean of the real next frame (`vmerpo.benchmarks.world_model."
               f"uncertainty_vs_error`, seed 0). Spearman(u, error): {rhos}. Computed in "
               f"{time.perf_counter() - t0:.1f} s.")
    blocks: list[Block] = [("img", "uncertainty.png", caption)]
    if not _ok(steps, "adapt"):
        blocks.append(("p", _why(steps, "adapt", "task model (adapted/task_model.pt) to compare",
                                 stale=out / "adapted")))
    return blocks


# -- rollout -----------------------------------------------------------------------------------
def gif_from_video(src: Path, dst: Path, max_frames: int = 400) -> tuple[int, float]:
    """An mp4 -> an endlessly looping GIF (OpenCV reads, Pillow writes); every k-th frame when
    longer than `max_frames`. One palette for all frames, from a sample of them, without
    dithering: a third of the size of per-frame dithered palettes. Returns (frames, fps)."""
    import cv2
    import numpy as np
    from PIL import Image

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(Image.fromarray(frame[..., ::-1].copy()))
    cap.release()
    if not frames:
        raise ValueError(f"{src}: no frames could be read")
    k = -(-len(frames) // max_frames)
    frames, fps = frames[::k], fps / k
    sample = np.concatenate([np.asarray(f) for f in frames[::max(1, len(frames) // 8)]])
    palette = Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    frames[0].save(dst, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return len(frames), fps


def _rollout_section(out: Path, steps: list[dict]) -> list[Block]:
    src = out / "rollout.mp4"
    if not _made(out, steps, "rollout.mp4", "direct"):
        return [("p", _why(steps, "direct", "rollout video (rollout.mp4)", stale=src))]
    direct = _find(steps, "direct")
    where = ""
    if direct:
        a = _argv(direct[0])
        where = f" on task {(_opt(a, '--tasks') or '?').strip(',')} (`{_opt(a, '--policy')}`)"
    what = f"The first episodes of the direct ONNX evaluation{where}, side by side"
    try:
        n, fps = gif_from_video(src, out / "rollout.gif")
    except Exception as e:  # no decoder or writer: the mp4 itself
        return [("video", "rollout.mp4", f"{what} (rollout.mp4; no GIF: {type(e).__name__}: {e}).")]
    return [("img", "rollout.gif", f"{what}: {n} frames at {fps:.0f} fps (rollout.gif, from rollout.mp4).", 3)]


# -- redo on your own logs ---------------------------------------------------------------------
REDO: list[tuple[str, str, list[str]]] = [
    ("1. Logs: record from your robot's topics, import a rosbag2, or collect in MuJoCo", "collect",
     ["vmerpo launch record.launch.yaml store:=logs.zarr task_id:=3   # recorder_node",
      "vmerpo import-bag my_bag/ --out logs.zarr --image-topic /camera/image_raw \\\n"
      "    --command-topic /arm/command --joint-states-topic /joint_states --task-id 3 \\\n"
      "    --reward sparse-success --success 1,0,1",
      "vmerpo collect --env reach-v3 --tasks train --episodes-per-task 5 --quality medium \\\n"
      "    --workers 2 --seed 0 --out logs.zarr   # or in MuJoCo"]),
    ("2. Inspect the logs before training", "inspect",
     ["vmerpo inspect logs.zarr --plot data.png --video data.mp4"]),
    ("3. World model + MerPO on the meta-train tasks (task table split `train`)", "train",
     ["vmerpo train --data logs.zarr --config cpu --out runs/meta   # --resume after a kill"]),
    ("4. A new task from its small log", "adapt",
     ["vmerpo adapt --run runs/meta --data new_task.zarr --out runs/task7"]),
    ("5. Export to ONNX with a parity check", "export",
     ["vmerpo export --run runs/task7 --out policy.onnx --check"]),
    ("6. Validate in MuJoCo", "direct",
     ["vmerpo eval --policy policy.onnx --env reach-v3 --tasks test --episodes 10 --video out.mp4 --json"]),
    ("7. Validate through ROS 2, then run the nodes", "ros",
     ["vmerpo ros-eval --policy policy.onnx --env reach-v3 --tasks test --episodes 10 --json",
      "vmerpo launch sim_policy.launch.yaml policy:=policy.onnx   # sim_node + policy_node",
      "ros2 launch vmerpo robot_policy.launch.yaml policy:=/abs/policy.onnx   # on your robot"]),
]


def _redo_section(out: Path, steps: list[dict]) -> list[Block]:
    blocks: list[Block] = [("p", "Each step below is an ordinary `vmerpo` verb: the generic command for "
                                 "your own logs, then the exact command this run used (every verb has "
                                 "`--help`).")]
    for title, role, generic in REDO:
        used = [e for e in _find(steps, role) if e.get("command")]
        if role == "direct":
            used = [*_find(steps, "expert"), *used]
        blocks.append(("p", f"**{title}**"))
        blocks.append(("pre", "# on your logs\n" + "\n".join(generic)))
        if used:
            blocks.append(("pre", "# this run\n" + "\n".join(
                e["command"] + ("" if e.get("status") == "ok" else f"   # {e.get('status')}") for e in used)))
        else:
            blocks.append(("p", "This run has no such step."))
        if role == "ros":
            export = _find(steps, "export")
            onnx = _opt(_argv(export[0]), "--out") if export else None
            if onnx:
                blocks.append(("pre", "# this run's policy in the nodes (not run by the demo)\n"
                                      f"vmerpo launch sim_policy.launch.yaml policy:={onnx}"))
    return blocks


# -- rendering ---------------------------------------------------------------------------------
def _num(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, int | float) and not isinstance(x, bool) else ""


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            lines += [f"# {b[1]}", ""]
        elif kind == "h2":
            lines += [f"## {b[1]}", ""]
        elif kind == "p":
            lines += [b[1], ""] if b[1] else []
        elif kind == "table":
            lines += ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b[2]]
            lines.append("")
        elif kind == "pre":
            lines += ["```", b[1], "```", ""]
        elif kind == "img":
            lines += [f"![{b[1]}]({b[1]})", "", b[2], ""]
        elif kind == "video":
            lines += [f"[{b[1]}]({b[1]})", "", b[2], ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    """Markdown inline markup (`code`, **bold**, [text](href)) -> HTML, everything escaped."""
    parts = re.split(r"(`[^`]*`)", str(text))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m[2])}">{m[1]}</a>', s)
        out.append(s)
    return "".join(out)


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}.get(path.suffix, "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f2f2f2}code{background:#f5f5f5;padding:0 .2em;
word-break:break-all}pre{background:#f5f5f5;padding:.6em;overflow-x:auto}figure{margin:1em 0}
img,video{max-width:100%}img.px{image-rendering:pixelated}figcaption{font-size:.92em;color:#333}"""


def to_html(blocks: list[Block], out: Path) -> str:
    body: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            if b[1]:
                body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "img":
            size = ""
            if len(b) > 3:  # shown enlarged (small frames)
                from PIL import Image

                with Image.open(out / b[1]) as im:
                    size = f' class="px" width="{im.width * b[3]}"'
            body.append(f'<figure><img alt="{html.escape(b[1])}"{size} src="{_data_uri(out / b[1])}">'
                        f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        elif kind == "video":
            path = out / b[1]
            if path.stat().st_size <= VIDEO_EMBED_MAX_BYTES:
                src = _data_uri(path)
                body.append(f'<figure><video controls loop muted src="{src}"></video>'
                            f"<figcaption>{_inline(b[2])}</figcaption></figure>")
            else:
                body.append(f'<p><a href="{html.escape(b[1])}">{html.escape(b[1])}</a> (next to this '
                            f"report): {_inline(b[2])}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vmerpo demo report"
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


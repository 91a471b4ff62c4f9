"""`vmerpo bench learning`: MerPO against its baselines and a pooled offline-RL peer on held-out tasks.

The design (v2). The unit is one (held-out task, log draw). Per quality, every held-out task
gets `draws` independent 5-episode logs (the collection seed changes with the draw); every
method is adapted to each log and evaluated on the same 20 episode starts of its task
(random hand starts, `--hand-init-noise`, in every log and evaluation), so methods are compared
paired, unit by unit. Intervals are 95 % two-stage bootstrap intervals that resample tasks,
then draws (`vmerpo.benchmarks.paired`): draws are independent, units of one task are not.

Two tracks over the same tasks, seeds and logs:
    state  the learners on the robot's proprioceptive state (no images): minutes
           (`vmerpo.benchmarks.learning_state`)
    pixel  the product: images through the shared world model (`vmerpo.benchmarks.learning_pixel`)

Outputs under --out: results.json (every unit's numbers, per track / quality / method the mean
success with its interval, n_units, return, final and minimum tool-centre-to-goal distance,
paired differences against BC and MerPO with intervals, timings, the commit), results.md
(generated, never edited) and results.png (success with intervals; paired differences). A
killed run continues where it stopped with --resume; an --out made with other settings is
refused.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference
from vmerpo.commands.options import AIMS

QUALITIES = ("expert", "medium", "mixed", "random_heavy")
TRACKS = ("state", "pixel")
RESULTS_VERSION = 2


def log_seeds(quality: str, draws: int) -> dict[str, Any]:
    """Collection seeds of a quality's logs, shared by both tracks: the meta-train logs, and
    one seed per held-out draw (draw 0 is the seed the first benchmark used)."""
    i = QUALITIES.index(quality)
    return {"train": 100 + i, "heldout": [200 + i + 10 * d for d in range(draws)]}


@dataclass(frozen=True)
class Design:
    train_tasks: int  # meta-train tasks: the family's first N train ids
    episodes_per_task: int  # meta-train episodes per task and quality
    heldout_tasks: int  # the family's first K held-out ids
    draws: int  # independent held-out logs per task and quality
    heldout_episodes: int  # episodes in each held-out log
    eval_episodes: int  # per (task, draw, method), the same starts for every method and draw
    qualities: tuple[str, ...]


DESIGNS = {
    "smoke": Design(train_tasks=20, episodes_per_task=8, heldout_tasks=4, draws=1, heldout_episodes=5,
                    eval_episodes=20, qualities=("medium",)),
    "full": Design(train_tasks=20, episodes_per_task=8, heldout_tasks=10, draws=3, heldout_episodes=5,
                   eval_episodes=20, qualities=QUALITIES),
    # the interval claim: MerPO against BC on medium at +-0.10. The paired interval's width is
    # draw-to-draw variance (experiments/21: a 5-episode log decides whether the task is inferred),
    # so the design adds draws, not qualities or methods. 10 x 12 gave +-0.104 (experiments/24);
    # simulated from its units, 10 x 20 = 200 units gives +-0.086 to +-0.099
    "power": Design(train_tasks=20, episodes_per_task=8, heldout_tasks=10, draws=20, heldout_episodes=5,
                    eval_episodes=20, qualities=("medium",)),
}
# a budget's methods when --methods is not given (default: all of the track's)
DESIGN_METHODS = {"power": ("bc", "merpo", "meta_policy")}


def parse_args(argv: list[str]) -> argparse.Namespace:
    from vmerpo.benchmarks.learning_pixel import add_pixel_options
    from vmerpo.benchmarks.learning_state import EXTRA_METHODS, STATE_METHODS

    p = argparse.ArgumentParser(
        prog="vmerpo bench learning",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MerPO vs behaviour cloning, single-task RAC, LOMPO, the meta-policy zero-shot and a pooled "
                    "offline-RL peer (d3rlpy IQL/BC) on held-out tasks. Every method is adapted to the same "
                    "5-episode logs (several independent draws per task) and evaluated on the same starts; "
                    "results.json/.md/.png give mean success with 95 %% intervals and paired differences "
                    "clustered by task.",
        epilog="examples:\n"
               "  vmerpo bench learning --track state --budget full --out results/learning-state   # 25.7 min on 2 cores (experiments/29)\n"
               "  vmerpo bench learning --track state --budget full --out results/learning-state --ablations medium --resume"
               "   # then the mechanism ablations on medium (13.6 min)\n"
               "  vmerpo bench learning --track pixel --budget smoke --out results/learning-pixel\n"
               "  vmerpo bench learning --track state --budget full --out results/learning-state --resume   # after a kill")
    p.add_argument("--track", choices=TRACKS, default="state",
                   help="state: the learners on proprioceptive state (minutes); pixel: images through the world "
                        "model (the product; hours on a CPU). Default state")
    p.add_argument("--family", default="reach", help="task family, e.g. reach or push (default reach)")
    p.add_argument("--budget", choices=sorted(DESIGNS), default="smoke",
                   help="smoke: 4 held-out tasks, 1 draw, medium; full: 10 held-out tasks, 3 draws, expert / "
                        "medium / mixed / random_heavy (pixel track without a GPU: medium on one world model); power: the interval claim, 10 held-out tasks x 20 draws, "
                        "medium, MerPO, BC and the meta-policy (state track: one process; times in experiments/24)")
    p.add_argument("--out", default="results/learning", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (the same settings; finished units are kept)")
    p.add_argument("--qualities", help=f"comma-separated subset of {','.join(QUALITIES)} (default: the budget's)")
    p.add_argument("--methods", help=f"comma-separated subset (state: {','.join(STATE_METHODS)}; opt-in: {','.join(EXTRA_METHODS)}; pixel: see "
                                     "learning_pixel.PIXEL_METHODS, opt-in PIXEL_EXTRA_METHODS: merpo_v1, merpo_adp, meta_policy_v1, merpo_no_embedding, merpo_no_uncertainty_meta, merpo_uncertainty_excess, iql_pooled); default all of the track's (power: bc,merpo,meta_policy)")
    p.add_argument("--ablations", metavar="QUALITIES",
                   help="qualities on which the mechanism ablations run (omega sweep 0 / 0.4 / 1; MerPO without the "
                        "task embedding; state: single-task RAC and d3rlpy IQL given the inferred embedding; pixel: "
                        "without the uncertainty penalty at adaptation; the opt-in ablations run only where --methods names them): comma-separated, all or none (default: state none, "
                        "so that full stays well under 30 min: add them with a second invocation, --ablations "
                        "medium --resume on the same --out; pixel medium,random_heavy). Methods named by --methods "
                        "run on every quality")
    p.add_argument("--heldout-tasks", type=int, metavar="K", help="the family's first K held-out tasks (default: "
                                                                   "the budget's)")
    p.add_argument("--draws", type=int, metavar="D", help="independent held-out logs per task (default: the budget's)")
    p.add_argument("--episodes-per-task", type=int, metavar="N",
                   help="meta-train episodes per task and quality (default: the budget's, 8). Push needs more: "
                        "d3rlpy's IQL given the true goal solves 0.10-0.13 of push medium's held-out episodes "
                        "from 8 at 3k to 30k updates, and from 32 0.24 at 3k, 0.56 at 10k, 0.64 at 30k "
                        "(experiments/26; --learner-steps)")
    p.add_argument("--learner-steps", type=int, metavar="N",
                   help="updates of MerPO v2's meta-training (RAC updates of pi_c and Q_meta; on the pixel track "
                        "its warm start and embedding fit scale with it) and of the pooled d3rlpy learners "
                        "(default: the budget's: state 3000; pixel MerPO v2 the preset's 12000 (smoke 1000, experiments/30), "
                        "the peer 3000; experiments/26 used 10000 on push). A setting of the --out: a run made "
                        "without it is not resumed with it")
    p.add_argument("--hand-init-noise", type=float, default=0.05, metavar="M",
                   help="random hand start of up to +-M metres per axis in every log and evaluation (default 0.05)")
    p.add_argument("--aim", choices=tuple(AIMS), default="tool-centre",
                   help="where the scripted expert (and the medium policy built on it) steers: the tool centre, "
                        "where success is measured (default), or the hand, as Meta-World's expert does (reach "
                        "then ends 4.5 cm from the goal against a 5 cm threshold)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (pixel track: with cuda the full budget uses "
                                                    "the paper's sizes)")
    p.add_argument("--seed", type=int, default=0, help="learners' seed (default 0)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes (default 2: one per core). The state track splits each quality into two "
                        "jobs, MerPO v2's methods and the others, and starts the costliest first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_pixel_options(p)
    return p.parse_args(argv)


def _subset(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ValueError(f"{flag}: unknown {bad or 'empty'}; choose from {','.join(allowed)}")
    return items


# state: none, so that `full` stays well under 30 min on 2 cores (experiments/29); the ablations
# are a second invocation, `--ablations medium --resume` on the same --out
ABLATION_DEFAULT: dict[str, tuple[str, ...]] = {"state": (), "pixel": ("medium", "random_heavy")}


def methods_by_quality(args: argparse.Namespace, methods: list[str], qualities: tuple[str, ...]
                       ) -> dict[str, list[str]]:
    """Each quality's methods: the ablations (learning_state.STATE_ABLATIONS /
    learning_pixel.PIXEL_ABLATIONS) only on the --ablations qualities, unless --methods named them."""
    from vmerpo.benchmarks.learning_pixel import PIXEL_ABLATIONS
    from vmerpo.benchmarks.learning_state import STATE_ABLATIONS

    ablations: tuple[str, ...] = STATE_ABLATIONS if args.track == "state" else PIXEL_ABLATIONS
    text = args.ablations if args.ablations is not None else ",".join(ABLATION_DEFAULT[args.track]) or "none"
    if text.strip() == "all":
        where = set(qualities)
    elif text.strip() == "none":
        where = set()
    else:
        where = set(_subset(text, QUALITIES, "--ablations"))
    return {q: [m for m in methods if args.methods or m not in ablations or q in where] for q in qualities}


def settings_of(args: argparse.Namespace, design: Design, family: str, heldout: list[int],
                train: list[int]) -> dict[str, Any]:
    """What an --out's units depend on: a rerun with any of these changed is refused."""
    from sim.envs import check_hand_init_noise

    s = {"version": RESULTS_VERSION, "track": args.track, "family": family, "budget": args.budget,
         "train_tasks": train, "episodes_per_task": design.episodes_per_task, "heldout_tasks": heldout,
         "draws": design.draws, "heldout_episodes": design.heldout_episodes,
         "eval_episodes": design.eval_episodes, "hand_init_noise": check_hand_init_noise(args.hand_init_noise),
         "aim": args.aim, "seed": args.seed}
    if args.track == "pixel":
        from vmerpo.benchmarks.learning_pixel import pixel_settings

        s.update(pixel_settings(args))
    else:
        from vmerpo.benchmarks.learning_state import (
            OBJECT_FAMILIES,
            STATE_OMEGA_RULE,
            state_budget_dict,
        )

        s["state_budget"] = state_budget_dict(args.budget, args.learner_steps)
        if family in OBJECT_FAMILIES:  # (only there: runs made before it keep their settings)
            s["object_in_state"] = True
        s["omega_rule"] = STATE_OMEGA_RULE  # MerPO's units depend on it (pixel: the run's config)
    return s


def check_out(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Refuse an --out made with other settings (one line naming the first difference), and a
    non-empty --out without --resume."""
    path = out / "settings.json"
    if not path.exists():
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} holds files but no settings.json (not a learning benchmark v2 --out): "
                             "choose another --out")
        return
    old = json.loads(path.read_text())
    first = ("version", "track", "family", "budget")  # the most telling difference is named
    for key in [*first, *sorted((set(old) | set(settings)) - set(first))]:
        if old.get(key) != settings.get(key):
            raise ValueError(f"{out} was made with {key}={json.dumps(old.get(key))}, this run asks for "
                             f"{json.dumps(settings.get(key))}: use another --out (a run never mixes settings)")
    if not resume:
        raise ValueError(f"{out} holds a run with these settings: pass --resume to continue it, or choose another --out")


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    family = args.family if args.family.endswith("-v3") else f"{args.family}-v3"
    from sim.envs import check_family, task_set

    check_family(family)
    design, methods, by_quality = resolve(args)
    ts = task_set(family)
    test_ids = ts.split_ids("test")
    if design.heldout_tasks > len(test_ids):
        raise ValueError(f"--heldout-tasks {design.heldout_tasks}: {family} has {len(test_ids)} held-out tasks")
    heldout = test_ids[: design.heldout_tasks]
    train = ts.split_ids("train")[: design.train_tasks]
    settings = settings_of(args, design, family, heldout, train)
    out = Path(args.out)
    check_out(out, settings, args.resume)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=1))

    commit = git_commit()  # the code this invocation runs (HEAD may move while it runs)
    t0 = time.perf_counter()
    if args.track == "state":
        from vmerpo.benchmarks.learning_state import run_track
    else:
        from vmerpo.benchmarks.learning_pixel import run_track
    rows, behaviour, timings = run_track(out, family, design, heldout, train, by_quality, args)
    timings["total_s"] = time.perf_counter() - t0

    path = out / "results.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}  # what earlier invocations recorded
    rows, behaviour, methods, qualities = merge_earlier(earlier, rows, behaviour, methods, list(design.qualities))
    results = summarize(rows, behaviour, methods, qualities)
    command = "vmerpo bench learning " + " ".join(argv)
    invocations = earlier.get("invocations", []) + [
        {"command": command, "commit": commit, "timings": {k: round(v, 1) for k, v in timings.items()}}]
    total_min = sum(i["timings"]["total_s"] for i in invocations) / 60
    doc = {"version": RESULTS_VERSION, "track": args.track, "family": family, "budget": args.budget,
           "settings": settings, "design": asdict(design), "methods": methods, "results": {args.track: results},
           "units": rows, "behaviour_units": [{"quality": q, "task": t, "draw": d, "success_rate": v}
                                              for (q, t, d), v in sorted(behaviour.items())],
           "timings": invocations[-1]["timings"], "commit": invocations[-1]["commit"], "command": command,
           "invocations": invocations, "total_minutes_all_invocations": round(total_min, 1)}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    text = results_markdown(doc)
    (out / "results.md").write_text(text)
    plot(results, methods, qualities, out / "results.png",
         f"{family} held-out, {args.track} track ({args.budget})")
    print(text)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'} "
          f"({timings['total_s'] / 60:.1f} min)")
    return 0


def resolve(args: argparse.Namespace) -> tuple[Design, list[str], dict[str, list[str]]]:
    """The design, the methods and each quality's methods that `args` ask for (the budget's
    defaults where not given). Refuses, before anything is written, peer methods without d3rlpy.
    A pixel `full` run without a GPU is narrowed to what the CPU can do (and says so)."""
    design = DESIGNS[args.budget]
    if args.heldout_tasks is not None:
        design = _replace(design, heldout_tasks=_positive(args.heldout_tasks, "--heldout-tasks"))
    if args.draws is not None:
        design = _replace(design, draws=_positive(args.draws, "--draws"))
    if args.episodes_per_task is not None:
        design = _replace(design, episodes_per_task=_positive(args.episodes_per_task, "--episodes-per-task"))
    if args.learner_steps is not None:
        _positive(args.learner_steps, "--learner-steps")
    from vmerpo.benchmarks import learning_pixel, learning_state

    track_methods: tuple[str, ...]
    extra: tuple[str, ...]
    peers: tuple[str, ...]
    if args.track == "state":
        track_methods, extra = learning_state.STATE_METHODS, learning_state.EXTRA_METHODS
        peers = learning_state.PEER_METHODS
    else:
        track_methods, extra = learning_pixel.PIXEL_METHODS, learning_pixel.PIXEL_EXTRA_METHODS
        peers = learning_pixel.PEER_METHODS
    if args.qualities:
        design = _replace(design, qualities=tuple(_subset(args.qualities, QUALITIES, "--qualities")))
    elif args.track == "pixel":
        from vmerpo.benchmarks.learning_pixel import CPU_FULL_QUALITIES, cpu_full

        if cpu_full(args):
            design = _replace(design, qualities=CPU_FULL_QUALITIES)
            print(f"pixel full without a GPU: {','.join(CPU_FULL_QUALITIES)} on one world model (about 2 h on 2 "
                  "cores; the four qualities on two world models take about 10 h here: --device cuda, or name "
                  "--qualities and --wm-seeds)", file=sys.stderr)
    methods = _subset(args.methods or ",".join(DESIGN_METHODS.get(args.budget, track_methods)),
                      track_methods + extra, "--methods")
    by_quality = methods_by_quality(args, methods, design.qualities)
    asked = sorted({m for ms in by_quality.values() for m in ms} & set(peers))
    if asked:
        from vmerpo.benchmarks import peer

        why = peer.available()
        if why:
            raise RuntimeError(f"{why}; or leave out --methods {','.join(asked)}")
    return design, methods, by_quality


def _replace(design: Design, **kw: Any) -> Design:
    from dataclasses import replace

    return replace(design, **kw)


def _positive(n: int, flag: str) -> int:
    if n < 1:
        raise ValueError(f"{flag} {n}: must be at least 1")
    return n


def merge_earlier(old: dict[str, Any], rows: list[dict], behaviour: dict[tuple[str, int, int], float],
                  methods: list[str], qualities: list[str]
                  ) -> tuple[list[dict], dict[tuple[str, int, int], float], list[str], list[str]]:
    """This invocation's units plus the earlier invocations' (`old`: results.json on the same
    --out, {} for none) of every (quality, method) this one did not run, so a resume with other
    --qualities or --methods adds to the results and never drops them (a resumed run never loses
    its invocations either); the methods and qualities are the union, earlier ones first
    (qualities in the benchmark's order)."""
    if not old:
        return rows, behaviour, methods, qualities
    ran = {(r["quality"], r["method"]) for r in rows}
    kept = [r for r in old.get("units", []) if (r["quality"], r["method"]) not in ran]
    behaviour = {**{(u["quality"], int(u["task"]), int(u["draw"])): float(u["success_rate"])
                    for u in old.get("behaviour_units", [])}, **behaviour}
    methods = list(dict.fromkeys([*old.get("methods", []), *methods]))
    have = set(qualities) | {r["quality"] for r in kept}
    return kept + rows, behaviour, methods, [q for q in QUALITIES if q in have]


# -- results -----------------------------------------------------------------------------------------
def _mean(xs: list[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def unit_values(rows: list[dict], method: str, quality: str, key: str = "success_rate") -> dict[tuple[int, int], float]:
    """{(task, draw): value} of a method and quality; rows of several world-model seeds of one
    unit are averaged (they share the unit's log)."""
    acc: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if r["method"] == method and r["quality"] == quality and r.get(key) is not None:
            acc.setdefault((int(r["task"]), int(r["draw"])), []).append(float(r[key]))
    return {u: sum(v) / len(v) for u, v in acc.items()}


PAIRED_AGAINST = ("bc", "merpo")


def summarize(rows: list[dict], behaviour: dict[tuple[str, int, int], float], methods: list[str],
              qualities: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{quality: {method: {success_mean, success_ci, success_half_width, n_units, n_tasks, n_episodes,
    return_mean, final_distance_mean, min_distance_mean, paired: {"vs_bc": {...}, "vs_merpo": {...}}}}},
    plus the held-out logs themselves as method "behaviour"."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for q in qualities:
        per: dict[str, dict[str, Any]] = {}
        values = {m: unit_values(rows, m, q) for m in methods}
        values["behaviour"] = {(t, d): v for (qq, t, d), v in behaviour.items() if qq == q}
        for m, v in values.items():
            if not v:
                continue
            ci = bootstrap_mean(v)
            mine = [r for r in rows if r["method"] == m and r["quality"] == q]
            entry: dict[str, Any] = {
                "success_mean": ci["mean"], "success_ci": [ci["low"], ci["high"]],
                "success_half_width": ci["half_width"], "n_units": ci["n_units"], "n_tasks": ci["n_tasks"],
                "n_episodes": sum(int(r.get("episodes", 0)) for r in mine)}
            if m != "behaviour":
                entry.update(return_mean=_mean([r.get("mean_return") for r in mine]),
                             final_distance_mean=_mean([r.get("final_distance") for r in mine]),
                             min_distance_mean=_mean([r.get("min_distance") for r in mine]))
                goal_error = _mean([r.get("inference_goal_error_cm") for r in mine])
                if goal_error is not None:  # MerPO v2's task inference, where the goal is known
                    entry["inference_goal_error_cm_mean"] = goal_error
            paired = {}
            for other in (*PAIRED_AGAINST, "behaviour"):
                if other != m and values.get(other) and set(v) & set(values[other]):
                    d = paired_difference(v, values[other])
                    paired[f"vs_{other}"] = {"mean": d["mean"], "ci": [d["low"], d["high"]],
                                             "half_width": d["half_width"], "n_units": d["n_units"]}
            entry["paired"] = paired
            per[m] = entry
        out[q] = per
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _short_commit(commit: str) -> str:
    """A commit's 7-character abbreviation, keeping the working tree's `+dirty` mark."""
    sha, dirty, _ = str(commit).partition("+dirty")
    return sha[:7] + ("+dirty" if dirty else "")


def results_markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    inv = doc["invocations"]
    minutes = doc["total_minutes_all_invocations"]
    lines = [f"# Learning benchmark: {doc['family']}, {doc['track']} track, budget `{doc['budget']}`", "",
             f"Held-out tasks {s['heldout_tasks']}, {s['draws']} independent log draw(s) of "
             f"{s['heldout_episodes']} episodes per task and quality, {s['eval_episodes']} evaluation episodes per "
             f"(task, draw, method) on shared starts; hand start noise {s['hand_init_noise']} m; expert aimed at the "
             f"{s['aim']}. {minutes:.1f} min in {len(inv)} invocation(s); "
             + (f"commit {doc['commit']}." if len(inv) == 1 else
                "commits " + ", ".join(_short_commit(i.get("commit", "unknown")) for i in inv)
                + " (each invocation's command: results.json `invocations`)."), "",
             "Success: mean over (task, draw) units [95 % interval, two-stage bootstrap over tasks then draws]. "
             "Zero-shot methods do not see the held-out log: one evaluation per task stands for each of its draws.",
             ""]
    for q, per in doc["results"][doc["track"]].items():
        lines += [f"## {q}", "",
                  "| method | success [95 % CI] | minus BC [95 % CI] | return | final dist (cm) | closest (cm) | units |",
                  "|---|---|---|---|---|---|---|"]
        for m, e in per.items():
            vs = e["paired"].get("vs_bc")
            diff = "–" if vs is None else f"{vs['mean']:+.2f} [{vs['ci'][0]:+.2f}, {vs['ci'][1]:+.2f}]"
            cm = lambda x: None if x is None else 100 * x  # noqa: E731
            lines.append(f"| {m} | {e['success_mean']:.2f} [{e['success_ci'][0]:.2f}, {e['success_ci'][1]:.2f}] | "
                         f"{diff} | {_fmt(e.get('return_mean'), 0)} | {_fmt(cm(e.get('final_distance_mean')), 1)} | "
                         f"{_fmt(cm(e.get('min_distance_mean')), 1)} | {e['n_units']} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, methods: list[str], qualities: list[str], path: Path, title: str) -> None:
    """Left: success per method and quality with 95 % intervals (the logs' own success dashed).
    Right: paired difference against BC with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in methods if any(m in results[q] for q in qualities)]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(4 + 2.2 * len(qualities), 3.6))
    width = 0.8 / max(1, len(shown))
    for i, m in enumerate(shown):
        xs, ys, lo, hi = [], [], [], []
        for j, q in enumerate(qualities):
            e = results[q].get(m)
            if e is None:
                continue
            xs.append(j + (i - (len(shown) - 1) / 2) * width)
            ys.append(e["success_mean"])
            lo.append(e["success_mean"] - e["success_ci"][0])
            hi.append(e["success_ci"][1] - e["success_mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=m, color=f"C{i % 10}")  # one colour per method
        dx, dy, dlo, dhi = [], [], [], []
        for j, q in enumerate(qualities):
            vs = (results[q].get(m) or {}).get("paired", {}).get("vs_bc")
            if vs is None:
                continue
            dx.append(j + (i - (len(shown) - 1) / 2) * width)
            dy.append(vs["mean"])
            dlo.append(vs["mean"] - vs["ci"][0])
            dhi.append(vs["ci"][1] - vs["mean"])
        if dx:
            bx.errorbar(dx, dy, yerr=[dlo, dhi], fmt="o", capsize=2, label=m, color=f"C{i % 10}")
    for j, q in enumerate(qualities):
        b = results[q].get("behaviour")
        if b:
            ax.hlines(b["success_mean"], j - 0.4, j + 0.4, colors="k", linestyles="dashed",
                      label="held-out logs" if j == 0 else None)
    for a in (ax, bx):
        a.set_xticks(range(len(qualities)), qualities)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out success")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    bx.axhline(0.0, color="k", lw=0.8)
    bx.set_ylabel("paired difference: method - BC")
    bx.set_title("paired against BC, 95 % CI (tasks, then draws)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

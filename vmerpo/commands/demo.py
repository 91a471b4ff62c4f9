"""`vmerpo demo`: the whole pipeline on an embedded default, CPU only.

Each step is an ordinary `vmerpo` verb, run in this process with the arguments printed, so a
user can redo any step on their own logs. Steps whose verb this version does not have yet
are reported as "not yet available" and skipped; the run stops at the first failing step.
The report (report.html, one file, and report.md) is built by `vmerpo.demo_report` from
OUT/report.json and the artefacts in OUT; `--report-only` rebuilds it without running a step.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

from vmerpo import cli


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run the pipeline end to end on the embedded default (Meta-World reach, CPU): collect "
        "logs in MuJoCo, inspect them, train the world model and MerPO, adapt to a held-out "
        "task, export ONNX, evaluate in MuJoCo directly and through ROS 2, and write a report. "
        "Steps not yet in this version are listed and skipped."
    )
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory's results")
    p.add_argument("--env", default="reach-v3", help="Meta-World family (default reach-v3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="demo",
                   help="`vmerpo train` preset or config file (default demo, ~20 min in all on a 2-core CPU; "
                        "tiny: a minute-scale check that every step runs, its numbers mean nothing)")
    p.add_argument("--report-only", action="store_true",
                   help="run no step: rebuild OUT/report.html and report.md from OUT/report.json")


HELDOUT_TASKS = (40, 41, 42, 43)  # the family's first held-out goals
HELDOUT_TASK = HELDOUT_TASKS[0]  # the one exported, rolled out on video and run through ROS 2
HAND_INIT_NOISE = "0.05"  # random hand starts (m per axis) in every log and evaluation
COMPARE_EPISODES = "20"  # evaluation episodes per (held-out task, method), the learning benchmark's
COMPARE_METHODS = ("merpo", "bc")  # MerPO v2 against behaviour cloning of the same small log
DIRECT_EVAL = "evaluate the ONNX policy in MuJoCo"
ROS_EVAL = "evaluate the ONNX policy through ROS 2 (sim_node + policy_node, lockstep)"
COMPARE = "compare"  # title prefix of the held-out comparison's evaluation steps


def policy_dir(out: Path, method: str, task: int) -> Path:
    """Where the demo adapts `method` to held-out `task`: MerPO on the first held-out task is the
    product path (`adapted/`: exported, evaluated directly and through ROS 2), the rest sit in
    `compare/`."""
    return out / "adapted" if (method, task) == ("merpo", HELDOUT_TASK) else out / "compare" / f"{method}_t{task}"


def steps(out: Path, env: str, seed: int, config: str = "demo") -> list[tuple[str, list[str]]]:
    logs, heldout = str(out / "logs.zarr"), str(out / "heldout.zarr")
    tasks = ",".join(map(str, HELDOUT_TASKS))
    noise = ["--hand-init-noise", HAND_INIT_NOISE]
    # The direct and the ROS 2 evaluation see the same policy, task, episodes and seeds.
    onnx_eval = ["--policy", str(out / "policy.onnx"), "--env", env, "--tasks", f"{HELDOUT_TASK},", "--episodes",
                 "10", "--seed", str(seed), *noise]
    plan = [
        ("collect meta-train logs (20 tasks x 5 episodes, mixed quality)",
         ["collect", "--env", env, "--tasks", "20", "--episodes-per-task", "5", "--quality", "mixed",
          "--aim", "tool-centre", *noise, "--image-size", "64", "--workers", "2", "--seed", str(seed),
          "--out", logs, "--overwrite"]),
        (f"collect a small log of each held-out task {tasks} (5 episodes each, medium quality)",
         ["collect", "--env", env, "--tasks", tasks, "--episodes-per-task", "5", "--quality", "medium",
          "--aim", "tool-centre", *noise, "--image-size", "64", "--workers", "2", "--seed", str(seed + 1),
          "--out", heldout, "--overwrite"]),
        ("inspect the logs", ["inspect", logs, "--plot", str(out / "data.png"),
                              "--video", str(out / "data.mp4"), "--overwrite"]),
        ("inspect the held-out logs", ["inspect", heldout, "--json"]),
        ("evaluate the scripted expert on the held-out tasks",
         ["eval", "--policy", "expert", "--aim", "tool-centre", "--env", env, "--tasks", tasks, "--episodes", "3",
          "--seed", str(seed), *noise, "--json", "--no-progress"]),
        (f"train the world model + MerPO v2 ({config} preset)",
         ["train", "--config", config, "--algorithm", "merpo_v2", "--data", logs, "--out", str(out / "run"), "--overwrite"]),
    ]
    for task in HELDOUT_TASKS:
        for method in COMPARE_METHODS:
            what = ("MerPO v2 (task inferred from the log's rewards)" if method == "merpo"
                    else "behaviour cloning of the log alone")
            plan.append((f"adapt to held-out task {task} from its small log: {what}",
                         ["adapt", "--run", str(out / "run"), "--data", heldout, "--task", str(task),
                          "--method", method, *(["--start", "scratch"] if method == "bc" else []),
                          "--out", str(policy_dir(out, method, task)), "--overwrite", "--no-progress"]))
    # The comparison: every method on every held-out task, the same episodes and seeds for all
    # (before export and ROS 2, so that a failure there does not cost it)
    for task in HELDOUT_TASKS:
        for method in COMPARE_METHODS:
            plan.append((f"{COMPARE}: {method} on held-out task {task}",
                         ["eval", "--policy", str(policy_dir(out, method, task)), "--env", env, "--tasks",
                          f"{task},", "--episodes", COMPARE_EPISODES, "--seed", str(seed + 1000), *noise,
                          "--json", "--no-progress"]))
    plan += [
        ("export ONNX (+ parity check against torch)",
         ["export", "--run", str(out / "adapted"), "--out", str(out / "policy.onnx"), "--check", "--overwrite"]),
        (DIRECT_EVAL,
         ["eval", *onnx_eval, "--video", str(out / "rollout.mp4"), "--json", "--no-progress"]),
        (ROS_EVAL,
         ["ros-eval", *onnx_eval, "--log", str(out / "ros_nodes.log"), "--json", "--no-progress"]),
    ]
    return plan


def run(args: argparse.Namespace) -> int:
    import contextlib
    import io

    out = Path(args.out)
    if args.report_only:
        from vmerpo import demo_report

        if not (out / "report.json").exists():
            raise FileNotFoundError(f"{out / 'report.json'}: no demo results to report (run `vmerpo demo` first)")
        paths = demo_report.build(out)
        print(f"report: {paths['html']} (single file) and {paths['md']}")
        return 0
    from learning.merpo_train import load_config

    load_config(args.config)  # a bad --config is refused before any step runs
    out.mkdir(parents=True, exist_ok=True)
    report: list[dict] = []
    t_all = time.perf_counter()
    plan = steps(out, args.env, args.seed, args.config)
    for i, (title, argv) in enumerate(plan, 1):
        verb = argv[0]
        command = "vmerpo " + shlex.join(argv)
        print(f"\n[{i}/{len(plan)}] {title}\n    $ {command}", flush=True)
        if verb not in cli.VERBS or not cli.available(verb):
            print(f"    not yet available in this version (`{verb}`)", flush=True)
            report.append({"step": title, "command": command, "status": "not yet available"})
            continue
        t0 = time.perf_counter()
        buf = io.StringIO()
        error = None
        try:
            if "--json" in argv:  # keep the machine-readable result for the report
                with contextlib.redirect_stdout(buf):
                    rc = cli.main(argv)
                print(_result_line(buf.getvalue()), flush=True)
            else:
                rc = cli.main(argv)
        except Exception as e:  # e.g. a missing optional dependency: the report is still written
            rc, error = 1, f"{type(e).__name__}: {e}"
            print(f"    {error}", flush=True)
        entry = {"step": title, "command": command, "status": "ok" if rc == 0 else f"exit {rc}",
                 "seconds": round(time.perf_counter() - t0, 1)}
        if error:
            entry["error"] = error
        try:
            entry["result"] = json.loads(buf.getvalue()) if buf.getvalue().strip() else None
        except json.JSONDecodeError:
            entry["result"] = None
        report.append(entry)
        if rc != 0:
            print(f"    step failed with exit code {rc}", flush=True)
            report += [{"step": t, "command": "vmerpo " + shlex.join(a), "status": "not run (an earlier step failed)"}
                       for t, a in plan[i:]]
            break
    total = time.perf_counter() - t_all
    print("\nwriting the report", flush=True)
    try:
        paths = _write_report(out, report, total)
        where = f"{paths['html']} (single file) and {paths['md']}"
    except Exception as e:  # the steps' results stay in report.json; `--report-only` retries
        where = f"not written ({type(e).__name__}: {e}); results in {out / 'report.json'}"
    failed = [r for r in report if r["status"].startswith("exit")]
    print(f"\ndemo: {sum(r['status'] == 'ok' for r in report)} steps ran, "
          f"{sum(r['status'] == 'not yet available' for r in report)} not yet available, "
          f"{len(failed)} failed, {total / 60:.1f} min; report: {where}")
    return 1 if failed else 0


def _result_line(printed: str) -> str:
    """What a step printed as JSON, in one line for the console (the whole JSON goes to the report)."""
    try:
        res = json.loads(printed)
    except json.JSONDecodeError:
        return printed[-2000:]
    if isinstance(res, dict) and "success_rate" in res and "mean_return" in res:
        from vmerpo.commands.eval import summary_line

        return "    " + summary_line(res) + f" ({res.get('episodes', '?')} episodes)"
    return printed[-2000:]


def _write_report(out: Path, report: list[dict], total: float) -> dict[str, Path]:
    """report.json, then report.html + report.md rebuilt from it (vmerpo/demo_report.py)."""
    from vmerpo import demo_report

    demo_report.save_steps(out, report, total)
    return demo_report.build(out)


def agree_within_binomial_noise(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> bool:
    """Two-sided two-proportion z-test at the 5 % level with the pooled rate p:
    |k1/n1 - k2/n2| <= z * sqrt(p (1 - p) (1/n1 + 1/n2)). Equal rates always agree."""
    p1, p2 = k1 / n1, k2 / n2
    if p1 == p2:
        return True
    p = (k1 + k2) / (n1 + n2)
    return abs(p1 - p2) <= z * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))

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
    p.add_argument("--report-only", action="store_true",
                   help="run no step: rebuild OUT/report.html and report.md from OUT/report.json")


HELDOUT_TASK = 40  # the first held-out goal of the family
DIRECT_EVAL = "evaluate the ONNX policy in MuJoCo"
ROS_EVAL = "evaluate the ONNX policy through ROS 2 (sim_node + policy_node, lockstep)"


def steps(out: Path, env: str, seed: int) -> list[tuple[str, list[str]]]:
    logs, heldout = str(out / "logs.zarr"), str(out / "heldout.zarr")
    task = f"{HELDOUT_TASK},"
    # The direct and the ROS 2 evaluation see the same policy, task, episodes and seeds.
    onnx_eval = ["--policy", str(out / "policy.onnx"), "--env", env, "--tasks", task, "--episodes", "10",
                 "--seed", str(seed)]
    return [
        ("collect meta-train logs (20 tasks x 5 episodes, mixed quality)",
         ["collect", "--env", env, "--tasks", "20", "--episodes-per-task", "5", "--quality", "mixed",
          "--image-size", "64", "--workers", "2", "--seed", str(seed), "--out", logs, "--overwrite"]),
        (f"collect a small log of held-out task {HELDOUT_TASK} (5 episodes, medium quality)",
         ["collect", "--env", env, "--tasks", task, "--episodes-per-task", "5", "--quality", "medium",
          "--image-size", "64", "--workers", "2", "--seed", str(seed + 1), "--out", heldout, "--overwrite"]),
        ("inspect the logs", ["inspect", logs, "--plot", str(out / "data.png"),
                              "--video", str(out / "data.mp4"), "--overwrite"]),
        ("inspect the held-out log", ["inspect", heldout, "--json"]),
        ("evaluate the scripted expert on the held-out task",
         ["eval", "--policy", "expert", "--env", env, "--tasks", task, "--episodes", "3",
          "--seed", str(seed), "--json", "--no-progress"]),
        ("train the world model + MerPO (demo preset)",
         ["train", "--config", "demo", "--data", logs, "--out", str(out / "run"), "--overwrite",
          "--eval-every", "25", "--eval-tasks", "2", "--eval-episodes", "1"]),
        (f"adapt to held-out task {HELDOUT_TASK} from its small log",
         ["adapt", "--run", str(out / "run"), "--data", heldout, "--out", str(out / "adapted"), "--overwrite"]),
        ("export ONNX (+ parity check against torch)",
         ["export", "--run", str(out / "adapted"), "--out", str(out / "policy.onnx"), "--check", "--overwrite"]),
        (DIRECT_EVAL,
         ["eval", *onnx_eval, "--video", str(out / "rollout.mp4"), "--json", "--no-progress"]),
        (ROS_EVAL,
         ["ros-eval", *onnx_eval, "--log", str(out / "ros_nodes.log"), "--json", "--no-progress"]),
    ]


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
    out.mkdir(parents=True, exist_ok=True)
    report: list[dict] = []
    t_all = time.perf_counter()
    plan = steps(out, args.env, args.seed)
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
        if "--json" in argv:  # keep the machine-readable result for the report
            with contextlib.redirect_stdout(buf):
                rc = cli.main(argv)
            print(buf.getvalue()[-2000:], flush=True)
        else:
            rc = cli.main(argv)
        entry = {"step": title, "command": command, "status": "ok" if rc == 0 else f"exit {rc}",
                 "seconds": round(time.perf_counter() - t0, 1)}
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

"""`vmerpo demo`: the whole pipeline on an embedded default, CPU only.

Each step is an ordinary `vmerpo` verb, run in this process with the arguments printed, so a
user can redo any step on their own logs. Steps whose verb this version does not have yet
are reported as "not yet available" and skipped; the run stops at the first failing step.
"""

from __future__ import annotations

import argparse
import json
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


def steps(out: Path, env: str, seed: int) -> list[tuple[str, list[str]]]:
    logs = str(out / "logs.zarr")
    heldout = str(out / "heldout.zarr")
    return [
        ("collect meta-train logs", ["collect", "--env", env, "--tasks", "train", "--episodes-per-task", "4",
                                     "--quality", "mixed", "--image-size", "64", "--workers", "2",
                                     "--seed", str(seed), "--out", logs, "--overwrite"]),
        ("collect a small held-out log", ["collect", "--env", env, "--tasks", "test", "--episodes-per-task", "5",
                                          "--quality", "medium", "--image-size", "64", "--workers", "2",
                                          "--seed", str(seed + 1), "--out", heldout, "--overwrite"]),
        ("inspect the logs", ["inspect", logs, "--plot", str(out / "data.png"),
                              "--video", str(out / "data.mp4"), "--overwrite"]),
        ("evaluate the scripted expert", ["eval", "--policy", "expert", "--env", env, "--tasks", "test",
                                          "--episodes", "3", "--seed", str(seed), "--json"]),
        ("train world model + MerPO", ["train", "--config", "cpu", "--data", logs, "--out",
                                       str(out / "run"), "--overwrite"]),
        ("adapt to the held-out task", ["adapt", "--run", str(out / "run"), "--data", heldout,
                                        "--out", str(out / "adapted"), "--overwrite"]),
        ("export ONNX", ["export", "--run", str(out / "adapted"), "--out", str(out / "policy.onnx"),
                         "--check", "--overwrite"]),
        ("evaluate the ONNX policy in MuJoCo", ["eval", "--policy", str(out / "policy.onnx"), "--env", env,
                                                "--tasks", "test", "--episodes", "10", "--seed", str(seed),
                                                "--video", str(out / "rollout.mp4"), "--json"]),
        ("evaluate through ROS 2 (sim_node + policy_node)",
         ["launch", "launch/sim_policy.launch.yaml", f"policy:={out / 'policy.onnx'}", "episodes:=10"]),
    ]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = []
    t_all = time.perf_counter()
    plan = steps(out, args.env, args.seed)
    for i, (title, argv) in enumerate(plan, 1):
        verb = argv[0]
        command = "vmerpo " + shlex.join(argv)
        print(f"\n[{i}/{len(plan)}] {title}\n    $ {command}", flush=True)
        if not cli.available(verb):
            print(f"    not yet available in this version (verb `{verb}`)", flush=True)
            report.append({"step": title, "command": command, "status": "not yet available"})
            continue
        t0 = time.perf_counter()
        rc = cli.main(argv)
        seconds = time.perf_counter() - t0
        report.append({"step": title, "command": command, "status": "ok" if rc == 0 else f"exit {rc}",
                       "seconds": round(seconds, 1)})
        if rc != 0:
            print(f"    step failed with exit code {rc}", flush=True)
            break
    total = time.perf_counter() - t_all
    _write_report(out, report, total)
    failed = [r for r in report if r["status"].startswith("exit")]
    print(f"\ndemo: {sum(r['status'] == 'ok' for r in report)} steps ran, "
          f"{sum(r['status'] == 'not yet available' for r in report)} not yet available, "
          f"{len(failed)} failed, {total / 60:.1f} min; report: {out / 'report.md'}")
    return 1 if failed else 0


def _write_report(out: Path, report: list[dict], total: float) -> None:
    lines = ["# vmerpo demo report", "", f"Total time: {total / 60:.1f} min", "",
             "| step | status | seconds | command |", "|---|---|---|---|"]
    for r in report:
        lines.append(f"| {r['step']} | {r['status']} | {r.get('seconds', '')} | `{r['command']}` |")
    if (out / "data.png").exists():
        lines += ["", "## Data", "", "![contact sheet and returns](data.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"steps": report, "total_s": total}, indent=2))

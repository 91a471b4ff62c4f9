"""Why does every learner fail on push medium (experiments/25)? The oracle probe: d3rlpy IQL and
BC given the true goal (and the puck, as the state track has it) on the push medium meta-train
logs, evaluated on the held-out tasks after more updates than the benchmark gives (3k), and on
4x the episodes per task. If the oracle rises with updates, the benchmark's learner budget is
the cause; if only with data, the logs are; if with neither, the features or the task are.

    python experiments/26-push-oracle-probe/probe.py --out /work/runs/push-oracle   # ~25 min, 1 core

Writes probe.json (every arm's success, return and distances per checkpoint) into --out and
prints one line per checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoints", default="3000,10000,30000")
    p.add_argument("--eval-episodes", type=int, default=20)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from vmerpo.benchmarks import peer
    from vmerpo.benchmarks.learning import log_seeds
    from vmerpo.benchmarks.learning_state import (
        FeaturePolicy,
        Features,
        collect_state_log,
        eval_envs,
        evaluate_policy,
        transitions,
    )

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    family, train, heldout = "push-v3", list(range(20)), list(range(40, 50))
    checkpoints = [int(x) for x in a.checkpoints.split(",")]
    seeds = log_seeds("medium", 1)
    envs = eval_envs(family, 0.05)
    results: list[dict] = []
    t0 = time.perf_counter()

    def log_of(episodes: int) -> dict[str, np.ndarray]:
        return collect_state_log(out / f"medium_train_{episodes}.npz", family, "medium", train, episodes,
                                 seeds["train"], 0.05, True)

    def arm(name: str, kind: str, log: dict[str, np.ndarray], successes_only: bool = False) -> None:
        feats = Features.fit(log)
        r_mean, r_std = float(log["reward"].mean()), float(max(log["reward"].std(), 1e-6))
        if successes_only:  # "filtered BC": the successful episodes only
            keep = np.flatnonzero(log["episode_success"])
            log = _episodes(log, keep)
        data = transitions(log, feats, r_mean, r_std, oracle=True)
        goals = {}
        for t in heldout:  # the true goal of each held-out task, from one evaluation env
            envs[0].set_task(t)
            envs[0].reset(seed=0)
            goals[t] = envs[0].goal_position().astype(np.float32)
        algo = peer.make(kind, data["obs"].shape[1], data["act"].shape[1], peer.PeerConfig(), 0)
        done = 0
        for c in checkpoints:
            peer.fit(algo, data, c - done, seed=c)
            done = c
            per = [evaluate_policy(envs, FeaturePolicy(lambda x, al=algo: peer.act(al, x), feats, goal=goals[t]),
                                   t, a.eval_episodes) for t in heldout]
            row = {"arm": name, "kind": kind, "updates": c, "transitions": len(data["obs"]),
                   "episodes": int(len(log["episode_ends"])),
                   "success": float(np.mean([r["success_rate"] for r in per])),
                   "per_task_success": [r["success_rate"] for r in per],
                   "return": float(np.mean([r["mean_return"] for r in per])),
                   "final_distance": float(np.mean([r["final_distance"] for r in per])),
                   "min_distance": float(np.mean([r["min_distance"] for r in per])),
                   "minutes": round((time.perf_counter() - t0) / 60, 1)}
            results.append(row)
            print(f"{name:28s} {c:6d} updates: success {row['success']:.2f}, final distance "
                  f"{row['final_distance'] * 100:.1f} cm ({row['minutes']} min)", file=sys.stderr, flush=True)
            (out / "probe.json").write_text(json.dumps({"results": results, "checkpoints": checkpoints,
                                                        "eval_episodes": a.eval_episodes}, indent=1))

    small = log_of(8)
    print(f"push medium, 8 episodes per task: logs succeed {small['episode_success'].mean():.2f}", file=sys.stderr)
    arm("iql_oracle (8 eps/task)", "iql", small)
    arm("bc_oracle (8 eps/task)", "bc", small)
    arm("bc_oracle successes (8)", "bc", small, successes_only=True)
    big = log_of(32)
    print(f"push medium, 32 episodes per task: logs succeed {big['episode_success'].mean():.2f}", file=sys.stderr)
    arm("iql_oracle (32 eps/task)", "iql", big)
    for e in envs:
        e.close()


def _episodes(log: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The log restricted to episodes `keep` (row arrays cut, episode arrays indexed)."""
    ends = log["episode_ends"]
    starts = np.concatenate([[0], ends[:-1]])
    rows = np.concatenate([np.arange(starts[e], ends[e]) for e in keep])
    out = {k: log[k][rows] for k in ("state", "action", "reward", "terminal")}
    out["episode_ends"] = np.cumsum(ends[keep] - starts[keep])
    for k in log:
        if k.startswith("episode_") and k != "episode_ends":
            out[k] = log[k][keep]
    return out


if __name__ == "__main__":
    main()

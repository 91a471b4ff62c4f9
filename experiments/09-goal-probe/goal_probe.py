"""How well a world model's latents locate the task's goal: a linear (ridge) probe from the
posterior features to the goal position, fit on a meta-train store and tested on held-out
tasks' logs. Sim families only (the goal comes from the task table, never from the store).

    python experiments/09-goal-probe/goal_probe.py --model RUN/world_model --train DATA/medium.zarr \
        --test DATA/medium_heldout.zarr [--family reach] [--out results/goal_probe.json]

Prints the mean goal error (cm) on the training frames and per held-out task, for two ridge
strengths, and the spread of the training goals (a probe that only learned the mean goal is
off by about that much).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="world-model run directory (or checkpoint)")
    p.add_argument("--train", required=True, help="store whose episodes fit the probe")
    p.add_argument("--test", required=True, help="store of held-out tasks' episodes")
    p.add_argument("--family", default="reach", help="sim family the stores were collected on")
    p.add_argument("--out", default="results/goal_probe.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    from learning.latents import encode_store
    from learning.store import EpisodeStore
    from learning.world_model_train import load_world_model
    from sim.envs import make_env

    model, _ = load_world_model(args.model)
    env = make_env(args.family if args.family.endswith("-v3") else f"{args.family}-v3")
    goals: dict[int, np.ndarray] = {}

    def goal(task: int) -> np.ndarray:
        if task not in goals:
            env.set_task(task)
            env.reset()
            goals[task] = np.array(env._mw._target_pos, dtype=np.float64)
        return goals[task]

    def features(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = encode_store(model, EpisodeStore.open(path, load="lazy"))
        starts = np.r_[0, c.episode_ends[:-1]]
        lengths = c.episode_ends - starts
        tasks = np.repeat(c.episode_task, lengths)
        return c.arrays["feat"], np.stack([goal(int(t)) for t in tasks]), tasks

    x, y, _ = features(args.train)
    xt, yt, tt = features(args.test)
    xa, xta = np.c_[x, np.ones(len(x))], np.c_[xt, np.ones(len(xt))]
    train_goals = sorted(goals)
    result: dict = {"model": args.model, "train": args.train, "test": args.test,
                    "train_goal_std_cm": (np.stack([goals[t] for t in train_goals]).std(0) * 100).round(2).tolist(),
                    "probes": []}
    for lam in (0.1, 10.0):
        w = np.linalg.solve(xa.T @ xa + lam * np.eye(xa.shape[1]), xa.T @ y)
        err = np.linalg.norm(xta @ w - yt, axis=1) * 100
        row = {"ridge": lam, "train_error_cm": float(np.linalg.norm(xa @ w - y, axis=1).mean() * 100),
               "heldout_error_cm": {str(t): float(err[tt == t].mean()) for t in np.unique(tt)}}
        result["probes"].append(row)
        print(f"ridge {lam}: train {row['train_error_cm']:.1f} cm; held-out "
              + ", ".join(f"task {t}: {e:.1f}" for t, e in row["heldout_error_cm"].items()) + " cm")
    print(f"training goals' spread (std per axis, cm): {result['train_goal_std_cm']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

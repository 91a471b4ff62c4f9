"""Probe: how well the task embedding is inferred from a held-out 5-episode log (state track).

    python experiments/18-merpo-v2/probe_embedding.py DATA_DIR [--quality medium]

DATA_DIR: a state-track run's `state/data` folder (the cached logs). Prints and writes JSON:
the goal error (cm) of the inferred embedding through a linear probe fitted on the meta-train
tasks, per held-out (task, draw), against guessing the mean meta-train goal.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from learning.task_embedding import TaskEmbedding, TaskEmbeddingConfig, goal_probe
from vmerpo.benchmarks.learning_state import Features, transitions


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--quality", default="medium")
    p.add_argument("--dim", type=int, default=4)
    p.add_argument("--fit-steps", type=int, default=3000)
    p.add_argument("--input-noise", type=float, default=0.0)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(1)
    d = Path(a.data)
    train = dict(np.load(d / f"{a.quality}_train.npz"))
    held = {int(f.stem.split("_d")[-1]): dict(np.load(f)) for f in sorted(d.glob(f"{a.quality}_heldout_d*.npz"))}
    feats = Features.fit(train)
    rm, rs = float(train["reward"].mean()), float(max(train["reward"].std(), 1e-6))
    tasks = sorted(set(train["episode_task"].tolist()))
    tt = lambda log, t: {k: torch.from_numpy(v) for k, v in transitions(log, feats, rm, rs, task=t).items()}  # noqa
    datas = {t: tt(train, t) for t in tasks}
    cfg = TaskEmbeddingConfig(dim=a.dim, fit_steps=a.fit_steps, input_noise=a.input_noise)
    te = TaskEmbedding(datas[tasks[0]]["obs"].shape[1], datas[tasks[0]]["act"].shape[1], tasks, cfg)
    t0 = time.perf_counter()
    fit = te.fit(datas)
    fit_s = time.perf_counter() - t0
    goal_of = lambda log, t: log["episode_goal"][list(log["episode_task"]).index(t)]  # noqa
    tz = te.train_embeddings()
    Z = np.stack([tz[t] for t in tasks])
    G = np.stack([goal_of(train, t) for t in tasks])
    W, b = goal_probe(Z, G)
    train_err = np.linalg.norm(Z @ W + b - G, axis=1) * 100
    rows = []
    t0 = time.perf_counter()
    for dr, log in held.items():
        for t in sorted(set(log["episode_task"].tolist())):
            data = tt(log, t)
            ep = np.flatnonzero(log["episode_task"] == t)
            lens = np.diff(np.concatenate([[0], log["episode_ends"]]))[ep] - 1
            inf = te.infer(data, np.cumsum(lens), seed=t * 10 + dr)
            g = goal_of(log, t)
            err = float(np.linalg.norm(inf.mean @ W + b - g) * 100)
            spread = float(np.linalg.norm((inf.members @ W + b).std(0)) * 100)
            rows.append({"task": t, "draw": dr, "goal_error_cm": err, "member_spread_cm": spread,
                         "mean_goal_error_cm": float(np.linalg.norm(G.mean(0) - g) * 100),
                         "reward_mse": inf.reward_mse})
            print(f"task {t} draw {dr}: {err:5.1f} cm (spread {spread:4.1f}; mean goal "
                  f"{rows[-1]['mean_goal_error_cm']:4.1f}) mse {inf.reward_mse:.3f}", flush=True)
    infer_s = (time.perf_counter() - t0) / max(1, len(rows))
    out = {"quality": a.quality, "config": cfg.to_dict(), "fit_reward_mse": fit["reward_mse"], "fit_s": fit_s,
           "infer_s_per_log": infer_s, "train_probe_error_cm": float(train_err.mean()),
           "heldout_goal_error_cm_mean": float(np.mean([r["goal_error_cm"] for r in rows])),
           "heldout_goal_error_cm_median": float(np.median([r["goal_error_cm"] for r in rows])),
           "mean_goal_error_cm": float(np.mean([r["mean_goal_error_cm"] for r in rows])), "units": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "units"}, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())

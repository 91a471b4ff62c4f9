"""How far the embedding MerPO v2 infers from a held-out log's rewards places the task's goal, on
the pixel track (the state track reports this itself): a least-squares probe from the meta-train
tasks' own embeddings to their true goals, applied to each held-out log's inferred embedding.

    python experiments/20-pixel-v2-smoke/goal_error.py BENCH_OUT [--out JSON]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def goals_of(family: str, tasks: list[int]) -> dict[int, np.ndarray]:
    from sim.envs import make_env

    env = make_env(family)
    try:
        out = {}
        for t in tasks:
            env.set_task(t)
            env.reset(seed=0)
            out[t] = env.goal_position()
        return out
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_out", help="--out of a pixel-track `vmerpo bench learning` run")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args()
    from learning.merpo_train import RunConfig, load_merpo_v2
    from learning.task_embedding import goal_probe

    pixel = Path(a.bench_out) / "pixel"
    family = json.loads((Path(a.bench_out) / "settings.json").read_text())["family"]
    result = {}
    for run in sorted((pixel / "runs").glob("*_v2")):
        info = json.loads((run / "config.json").read_text())
        cfg = RunConfig.from_dict(info["config"])
        tasks = info["meta_train_tasks"]
        import torch

        sd = torch.load(run / "checkpoints" / "merpo_v2.pt", map_location="cpu", weights_only=True)
        obs_dim = (sd["embedding"]["head.0.weight"].shape[1] - cfg.merpo_v2.embedding.dim - 4) // 2
        m = load_merpo_v2(run, cfg, obs_dim, 4, tasks)
        assert m.embedding is not None
        tz = m.embedding.train_embeddings()
        quality = run.name.split("_s")[0]
        adapted = sorted(pixel.glob(f"adapted/{run.name[:-3]}_d*_t*_merpo"))
        held = sorted({json.loads((d / "config.json").read_text())["task"] for d in adapted})
        goals = goals_of(family, tasks + held)
        W, b = goal_probe(np.stack([tz[n] for n in tasks]), np.stack([goals[n] for n in tasks]))
        mean_goal = np.mean([goals[n] for n in tasks], 0)
        rows = []
        for d in adapted:
            c = json.loads((d / "config.json").read_text())
            z = np.asarray(c["task_inference"]["z"], np.float32)
            goal = goals[c["task"]]
            rows.append({"unit": d.name, "task": c["task"], "goal_error_cm": float(np.linalg.norm(z @ W + b - goal) * 100),
                         "mean_goal_error_cm": float(np.linalg.norm(mean_goal - goal) * 100)})
        fit = [float(np.linalg.norm(tz[n] @ W + b - goals[n]) * 100) for n in tasks]
        result[run.name] = {"quality": quality, "units": rows,
                            "goal_error_cm_mean": float(np.mean([r["goal_error_cm"] for r in rows])),
                            "mean_goal_error_cm_mean": float(np.mean([r["mean_goal_error_cm"] for r in rows])),
                            "probe_fit_error_cm_meta_train": float(np.mean(fit))}
        print(f"{run.name}: inferred goal {result[run.name]['goal_error_cm_mean']:.1f} cm off on average "
              f"(the mean goal: {result[run.name]['mean_goal_error_cm_mean']:.1f} cm; the probe on the "
              f"meta-train tasks' own embeddings: {result[run.name]['probe_fit_error_cm_meta_train']:.1f} cm)")
        for r in rows:
            print(f"  task {r['task']}: {r['goal_error_cm']:.1f} cm (mean goal {r['mean_goal_error_cm']:.1f} cm)")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

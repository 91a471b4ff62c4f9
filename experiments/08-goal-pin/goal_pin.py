"""Can one camera see where the goal is? A least-squares fit of the 3-D goal position from what
the image shows of the goal marker, fit on the meta-train tasks' first frames and tested on the
held-out tasks' (sim families with a goal marker; the goal comes from the task table).

    python experiments/08-goal-pin/goal_pin.py [--family reach-v3] [--out results/goal_pin.json]

Features, per task: the bright marker's pixel centroid; the same plus its pixel count (a size,
i.e. depth, cue); with the goal pin (sim.envs `goal_pin`) the marker's centroid and the pin
foot's (its centroid column and lowest row). Fits are linear and quadratic (ridge 1e-3);
errors are mean Euclidean distances in cm. Reach's success radius is 5 cm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root


def marker_features(image: np.ndarray, pinned: bool) -> list[float]:
    im = image.astype(int)
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    bright = (g > 180) & (r < 120)
    ys, xs = np.nonzero(bright)
    if xs.size == 0:
        raise RuntimeError("the goal marker is not in the image")
    feats = [xs.mean(), ys.mean(), float(bright.sum())]
    if pinned:
        dark = (g > 60) & (g < 150) & (r < 40) & (b < 40)
        ys, xs = np.nonzero(dark)
        # none visible: the goal sits on the table (push), the marker hides the pin's foot
        feats += [xs.mean(), float(ys.max())] if xs.size else [np.nan, np.nan]
    return feats


def fit_error(x: np.ndarray, y: np.ndarray, n_train: int, degree: int) -> tuple[float, float]:
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-9)
    cols = [np.ones(len(x))] + list(x.T)
    if degree == 2:
        cols += [x[:, i] * x[:, j] for i in range(x.shape[1]) for j in range(i, x.shape[1])]
    a = np.stack(cols, 1)
    w = np.linalg.solve(a[:n_train].T @ a[:n_train] + 1e-3 * np.eye(a.shape[1]), a[:n_train].T @ y[:n_train])
    err = np.linalg.norm(a @ w - y, axis=1) * 100
    return float(err[:n_train].mean()), float(err[n_train:].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="reach-v3")
    p.add_argument("--out", default="results/goal_pin.json")
    a = p.parse_args()
    from sim.envs import make_env, task_set

    ts = task_set(a.family)
    train, test = ts.split_ids("train"), ts.split_ids("test")
    envs = {pin: make_env(a.family, goal_pin=pin) for pin in (False, True)}
    goals, feats = [], []
    try:
        for task in list(train) + list(test):
            row = []
            for pin, env in envs.items():
                env.set_task(task)
                obs = env.reset()
                row += marker_features(obs["image"], pin)
            goals.append(np.array(env._mw._target_pos, dtype=np.float64))
            feats.append(row)
    finally:
        for env in envs.values():
            env.close()
    y, x = np.array(goals), np.array(feats)
    sets = {"marker position": [0, 1], "marker position + size": [0, 1, 2],
            "marker position + pin foot (goal pin)": [3, 4, 6, 7]}
    out = {"family": a.family, "n_train_tasks": len(train), "n_test_tasks": len(test),
           "goal_std_cm": (y[: len(train)].std(0) * 100).round(2).tolist(), "fits": {}}
    print(f"{a.family}: training goals spread {out['goal_std_cm']} cm (std per axis)")
    for name, idx in sets.items():
        if np.isnan(x[:, idx]).any():
            print(f"  {name:40s} not visible in every image (goals on the table): skipped")
            continue
        for degree in (1, 2):
            tr, te = fit_error(x[:, idx], y, len(train), degree)
            out["fits"][f"{name}, degree {degree}"] = {"train_cm": round(tr, 2), "heldout_cm": round(te, 2)}
            print(f"  {name:40s} degree {degree}: train {tr:4.1f} cm, held-out {te:4.1f} cm")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

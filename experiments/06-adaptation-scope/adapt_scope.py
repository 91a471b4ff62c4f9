"""Which theta_j parameters should adapt to a held-out task? An ablation on a trained
world-model run and a held-out store (as `vmerpo bench world-model` uses them: per task, the first
5 episodes adapt, the others score).

    python experiments/06-adaptation-scope/adapt_scope.py --run RUN --test TEST15.zarr --out scope.json

Per task, the H-step reward NLL on the scoring episodes of: phi; all heads (reward + prior,
MerPO 2a) at eta 1e-3 / 1 / 10; the reward head at eta 1e-3 / 1; the reward head's last layer
(eta 0 / 1); its output bias alone (`reward_offset_0`). Also each variant's leave-one-
episode-out loss inside the 5 adaptation episodes (`select_eta`), from which the summary scores choosing per
task among sets of variants (the scoring episodes are never seen by a choice). Prints a table
and writes JSON. An ablation says what a setting does on these tasks; it is not a way to pick
one (README, world-model benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402,F401  (mujoco's GL setup before anything imports mujoco)
from learning.latents import encode_store  # noqa: E402
from learning.store import EpisodeStore  # noqa: E402
from learning.world_model_train import load_world_model  # noqa: E402
from vmerpo.benchmarks.world_model import _adapted, _episodes, prediction_losses, select_eta  # noqa: E402

SCOPES = {"all": [1e-3, 1.0, 10.0], "reward": [1e-3, 1.0], "reward_last": [0.0, 1.0],
          "reward_offset": [0.0, float("inf")]}  # adapt's heads -> etas tried (inf: phi itself)
SHORT = {"reward_last": "last"}  # variant names as in the README: all_1e-3, last_0, reward_offset_0, phi
CHOICES = (["phi", "all_0.001", "all_1", "all_10"], ["phi", "reward_offset_0"],
           ["phi", "last_0", "last_1", "reward_offset_0"], None)  # None: every variant


def _name(heads: str, eta: float) -> str:
    return "phi" if eta == float("inf") else f"{SHORT.get(heads, heads)}_{eta:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained world-model run (vmerpo train-model)")
    ap.add_argument("--test", required=True, help="held-out-task store: > N_ADAPT episodes per task")
    ap.add_argument("--adapt-episodes", type=int, default=5)
    ap.add_argument("--adapt-steps", type=int, default=300, help="as vmerpo bench world-model")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON written here (after every task)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_world_model(args.run)
    store = EpisodeStore.open(args.test)
    n, H = args.adapt_episodes, args.horizon
    rows, t0 = [], time.perf_counter()
    for task in sorted(set(store.episode_task.tolist())):
        eps = [int(e) for e in np.flatnonzero(store.episode_task == task)]
        if len(eps) <= n:
            continue
        fit, held_eps = eps[:n], _episodes(store, eps[n:])
        cache = encode_store(model, store, fit)
        row = {"task": task, "test": {}, "val": {}}
        for heads, etas in SCOPES.items():  # validation: leave one adaptation episode out
            _, info = select_eta(model, store, fit, etas, H, args.adapt_steps, args.seed, heads=heads)
            for e in etas:
                row["val"][_name(heads, e)] = info["per_episode"][f"{e:g}"]
                row["test"][_name(heads, e)] = prediction_losses(
                    _adapted(model, cache, args.adapt_steps, e, args.seed, heads), held_eps, H)["reward_nll"]
        rows.append(row)
        print(f"task {task} ({time.perf_counter() - t0:.0f} s): "
              + " ".join(f"{k} {v:.3f}" for k, v in row["test"].items()), flush=True)
        Path(args.out).write_text(json.dumps({"run": args.run, "test": args.test, "tasks": rows}, indent=1))
    names = list(rows[0]["test"]) if rows else []
    phi = np.mean([r["test"]["phi"] for r in rows])
    summary = {"over_phi": {k: float(np.mean([r["test"][k] for r in rows]) / phi) for k in names},
               "tasks_better_than_phi": {k: int(sum(r["test"][k] < r["test"]["phi"] for r in rows)) for k in names},
               "chosen_by_validation": {}}
    for cands in (c or names for c in CHOICES):
        picks = [min(cands, key=lambda k, r=r: np.mean(r["val"][k])) for r in rows]
        summary["chosen_by_validation"][",".join(cands)] = {
            "over_phi": float(np.mean([r["test"][k] for r, k in zip(rows, picks, strict=True)]) / phi), "picks": picks}
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"run": args.run, "test": args.test, "tasks": rows, "summary": summary},
                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

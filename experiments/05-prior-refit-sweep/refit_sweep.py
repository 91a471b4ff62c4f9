"""Choose the prior-heads refit's settings (`vmerpo bench world-model --refit-heads/--refit-context/
--refit-action-gain`) on episodes the benchmark does not score.

    python experiments/05-prior-refit-sweep/refit_sweep.py --run RUN --train TRAIN.zarr --test TEST15.zarr \
        --grid 2:15:3000,2:20:6000,2:30:12000 --out sweep.json

Each grid entry GAIN:CONTEXT:STEPS refits a fresh copy of the run's model
(`vmerpo.benchmarks.prior_refit.refit_prior_heads`) and runs the uncertainty checks twice:
- `select`: on the first 3 episodes of every held-out task of TEST (tasks the model never saw;
  phi's heads, which the refit makes the same for every slot). The choice is made here.
- `report`: on the training tasks' held-out episodes, the windows `vmerpo bench world-model` scores.
The choice rule (`--rule margin`): the entry with the largest smaller margin over the issue's
targets on `select`, min(Spearman - 0.5, AUROC - 0.8). Prints a line per entry, writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import torch  # noqa: E402

import sim  # noqa: E402,F401  (mujoco's GL setup before anything imports mujoco)
from learning.latents import encode_store  # noqa: E402
from learning.store import EpisodeStore  # noqa: E402
from learning.world_model_train import load_world_model  # noqa: E402
from vmerpo.benchmarks.prior_refit import refit_prior_heads  # noqa: E402
from vmerpo.benchmarks.world_model import _episodes, uncertainty_checks  # noqa: E402

KEYS = ("uncertainty_error_spearman", "ood_action_auroc", "ood_action_auroc_paired", "ood_action_auroc_mean_dis")
TARGETS = {"uncertainty_error_spearman": 0.5, "ood_action_auroc": 0.8}


def parse_grid(text: str) -> list[dict]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            gain, ctx, steps = item.split(":")
            out.append({"gain": float(gain), "context": float(ctx), "steps": int(steps)})
        except ValueError:
            raise SystemExit(f"--grid entry {item!r}: expected GAIN:CONTEXT:STEPS, e.g. 2:20:6000") from None
    if not out:
        raise SystemExit("--grid: no entries")
    return out


def margin(res: dict) -> float:
    return min(res[k] - t for k, t in TARGETS.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="trained world-model run (bench preset)")
    ap.add_argument("--train", required=True, help="its training store")
    ap.add_argument("--test", required=True, help="held-out-task store (selection episodes)")
    ap.add_argument("--grid", required=True, help="GAIN:CONTEXT:STEPS,... (random-prior action gain, context weight, steps)")
    ap.add_argument("--select-episodes", type=int, default=3, help="episodes per held-out task to select on")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    grid = parse_grid(args.grid)
    torch.set_num_threads(1)
    model, meta = load_world_model(args.run)
    cfg = json.loads((Path(args.run) / "config.json").read_text())
    train = EpisodeStore.open(args.train)
    cache = encode_store(model, train, cfg["train_episodes"])
    val = cfg["val_episodes"]
    val_slots = [meta["task_slots"].get(int(train.episode_task[e]), 0) for e in val]
    val_eps = _episodes(train, val)
    test = EpisodeStore.open(args.test)
    seen: dict[int, int] = {}
    sel = []
    for e, t in enumerate(test.episode_task.tolist()):
        seen[t] = seen.get(t, 0) + 1
        if seen[t] <= args.select_episodes:
            sel.append(e)
    sel_eps = _episodes(test, sel)
    rows = []
    for g in grid:
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        fit = refit_prior_heads(m, cache, steps=g["steps"], context_scale=g["context"], seed=args.seed,
                                random_action_gain=g["gain"])
        s = uncertainty_checks(m, [0] * len(sel_eps), sel_eps, args.horizon, args.seed)
        r = uncertainty_checks(m, val_slots, val_eps, args.horizon, args.seed)
        row = {**g, "refit": fit, "seconds": time.perf_counter() - t0,
               "select": {k: s[k] for k in KEYS}, "report": {k: r[k] for k in KEYS}}
        row["select_margin"] = margin(row["select"])
        rows.append(row)
        print(f"gain {g['gain']:g} context {g['context']:g} steps {g['steps']}: KL {fit['kl']:.2f}  select "
              f"Spearman {s['uncertainty_error_spearman']:.3f} AUROC {s['ood_action_auroc']:.3f}  report "
              f"Spearman {r['uncertainty_error_spearman']:.3f} AUROC {r['ood_action_auroc']:.3f}", flush=True)
    best = max(rows, key=lambda r: r["select_margin"])
    out = {"run": args.run, "train": args.train, "test": args.test, "select_episodes": sel, "rows": rows,
           "chosen": {k: best[k] for k in ("gain", "context", "steps")}, "rule": "max min(Spearman-0.5, AUROC-0.8) on select"}
    print(f"chosen: {out['chosen']} (select margin {best['select_margin']:.3f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

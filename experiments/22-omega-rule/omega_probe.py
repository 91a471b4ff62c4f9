"""Probe: can the held-out log itself say whether to trust the meta-policy (omega)?

For every (quality, held-out task, draw) of the state track's full design this re-creates the
logs (bit for bit: the benchmark's seeds), fits MerPO v2's task embedding on the meta-train logs
exactly as `vmerpo bench learning --track state` does, re-infers each held-out log's embedding
with the benchmark's seed, and records the inference's out-of-bag **evidence**
(`learning.task_embedding.Inference.evidence`: 1 - the reward error of the inferred embeddings on
the bootstrap members' unseen episodes over that of the mean meta-train task). It then joins each
unit with that run's success at omega 0, 0.4 and 1 (`--results`: a state-track results.json with
the omega sweep) and scores omega rules on the same units.

    python experiments/22-omega-rule/omega_probe.py --results experiments/18-merpo-v2/state-full/results.json \
        --data /tmp/state-data --out experiments/22-omega-rule/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import torch

    from learning.merpo_v2 import MerPOv2
    from sim.envs import task_set
    from vmerpo.benchmarks.learning import DESIGNS, log_seeds
    from vmerpo.benchmarks.learning_state import (
        STATE_BUDGETS,
        Features,
        _torch,
        collect_state_log,
        episode_ends_of,
        state_v2_config,
        transitions,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="a state-track full results.json with merpo_omega0/1")
    p.add_argument("--data", required=True, help="folder for the re-created logs (reused when present)")
    p.add_argument("--qualities", default="expert,medium,mixed,random_heavy")
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(1)
    res = json.loads(Path(a.results).read_text())
    s = res["settings"]
    design = DESIGNS["full"]
    fam = s["family"]
    ts = task_set(fam)
    train_ids, heldout = ts.split_ids("train")[: design.train_tasks], ts.split_ids("test")[: design.heldout_tasks]
    assert heldout == s["heldout_tasks"] and train_ids == s["train_tasks"], "the run's tasks differ"
    succ = {(r["quality"], r["method"], r["task"], r["draw"]): r for r in res["units"]}
    budget = STATE_BUDGETS["full"]
    rows = []
    for q in a.qualities.split(","):
        t0 = time.perf_counter()
        seeds = log_seeds(q, design.draws)
        data = Path(a.data)
        train = collect_state_log(data / f"{q}_train.npz", fam, q, train_ids, design.episodes_per_task, seeds["train"],
                                  s["hand_init_noise"], s["aim"] == "tool-centre")
        held = {d: collect_state_log(data / f"{q}_heldout_d{d}.npz", fam, q, heldout, design.heldout_episodes,
                                     seeds["heldout"][d], s["hand_init_noise"], s["aim"] == "tool-centre")
                for d in range(design.draws)}
        feats = Features.fit(train)
        rm, rs = float(train["reward"].mean()), float(max(train["reward"].std(), 1e-6))
        tasks = sorted(set(train["episode_task"].tolist()))
        datas = {n: _torch(transitions(train, feats, rm, rs, task=n)) for n in tasks}
        m = MerPOv2(11, 4, tasks, state_v2_config(budget, s["seed"]))
        assert m.embedding is not None
        m.embedding.fit(datas)
        units = [(t, d) for t in heldout for d in range(design.draws)]
        for i, (t, d) in enumerate(units):
            inf = m.infer(_torch(transitions(held[d], feats, rm, rs, task=t)), episode_ends_of(held[d], t),
                          seed=s["seed"] * 1000 + i)
            row = {"quality": q, "task": t, "draw": d, "evidence": inf.evidence,
                   "spread": float(np.linalg.norm(inf.std)), "fallback": inf.fallback,
                   "log_success": float(np.mean(held[d]["episode_success"][held[d]["episode_task"] == t]))}
            for meth in ("merpo_omega0", "merpo", "merpo_omega1", "meta_policy", "bc"):
                u = succ[(q, meth, t, d)]
                row[meth] = u["success_rate"]
                if "inference_goal_error_cm" in u:
                    row["run_goal_error_cm"] = u["inference_goal_error_cm"]
            rows.append(row)
        ev = [r["evidence"] for r in rows if r["quality"] == q]
        print(f"{q}: evidence median {np.median(ev):.3f} [{min(ev):.3f}, {max(ev):.3f}] "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"results": a.results, "results_commit": res.get("commit"), "units": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ablation of a finished `vmerpo bench learning` run: one method's meta-test adaptation
(theta_j, its initialization, the same RL steps) with some RAC settings changed, evaluated
like the benchmark on every (held-out task, seed) unit of one quality.

    python experiments/07-adaptation-ablations/ablation_adapt.py --bench results/learning_full --quality expert --omega 1 \\
        --out results/ablation_omega1 --json experiments/07-adaptation-ablations/learning_full/ablation_omega1/expert.json
    python experiments/07-adaptation-ablations/ablation_adapt.py --bench results/learning_full --quality medium --method rac \\
        --rac lam=5 --out results/ablation_rac_lam5

    python experiments/07-adaptation-ablations/ablation_adapt.py --bench results/learning_full_push --quality medium --method merpo \
        --steps 0 --episodes 2 --out results/start_merpo   # the starting point itself (pi_c)

omega = 1 with MerPO removes the KL to the meta-policy pi_c, and only that. `--steps 0`
evaluates where adaptation starts (pi_c for merpo, the pooled pretraining for the baselines). The held-out tasks
are the benchmark's evaluation tasks: an ablation here says what a setting does, it is not a
way to pick one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root


def _job(args: tuple) -> dict:
    bench, family, q, seed, task, method, rac, out, episodes, start, steps, noise, goal_pin = args
    import torch

    torch.set_num_threads(1)
    from learning.merpo_train import adapt
    from vmerpo.benchmarks.learning import _eval_one

    if not (Path(out) / "policy.pt").exists():
        adapt(f"{bench}/runs/{q}_s{seed}", f"{bench}/data/{q}_heldout.zarr", out, overwrite=True, task=task,
              method=method, rac_overrides=rac, progress=False, log=lambda m: None, start=start,
              steps=steps)
    return _eval_one((family, out, task, episodes, 1000 + seed, noise, goal_pin))


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> int:
    from learning.merpo_train import ADAPT_STARTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="output directory of a finished `vmerpo bench learning`")
    p.add_argument("--quality", required=True, choices=["expert", "medium", "mixed"])
    p.add_argument("--method", default="merpo", choices=["merpo", "merpo_adp", "rac", "lompo", "bc"])
    p.add_argument("--omega", type=float, help="behaviour vs meta-policy weight (MerPO: 0.4)")
    p.add_argument("--rac", action="append", default=[], metavar="KEY=VALUE",
                   help="another RAC setting (learning.rac.RACConfig), e.g. lam=5; repeatable")
    p.add_argument("--start", default="own", choices=ADAPT_STARTS,
                   help="merpo/merpo_adp: start from pi_c and Q_meta (own, MerPO) or from single-task "
                        "RAC's pooled pretraining (both, or the actor or critic only); the KL stays to pi_c")
    p.add_argument("--steps", type=int, help="RL/BC steps on the small log (default: the run's; 0: the start)")
    p.add_argument("--episodes", type=int, help="evaluation episodes per (task, seed) (default: the benchmark's)")
    p.add_argument("--out", required=True, help="directory for the adapted policies")
    p.add_argument("--json", help="write the per-(task, seed) results here")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    rac = {}
    for item in a.rac:
        key, sep, val = item.partition("=")
        if not sep:
            p.error(f"--rac {item!r}: expected KEY=VALUE")
        rac[key.strip()] = _value(val.strip())
    if a.omega is not None:
        rac["omega"] = a.omega
    doc = json.loads((Path(a.bench) / "results.json").read_text())
    b = doc["budget_config"]
    tag = "_".join(f"{k}{v}" for k, v in sorted(rac.items())) or "base"
    if a.start != "own":
        tag += f"_start-{a.start}"
    if a.steps is not None:
        tag += f"_steps{a.steps}"
    jobs = [(a.bench, doc["family"], a.quality, s, t, a.method, rac, f"{a.out}/{a.quality}_s{s}_t{t}_{a.method}_{tag}",
             a.episodes or b["eval_episodes"], a.start, a.steps, b.get("hand_init_noise", 0.0),
             b.get("goal_pin", False)) for s in range(b["seeds"]) for t in doc["heldout_tasks"]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
        res = list(pool.map(_job, jobs))
    rows = [{"quality": a.quality, "seed": j[3], "task": j[4], "method": a.method, "rac": rac, "start": a.start, "steps": a.steps,
             "success_rate": r["success_rate"], "mean_return": r["mean_return"]} for j, r in zip(jobs, res, strict=True)]
    summary = {"success_mean": sum(r["success_rate"] for r in rows) / len(rows),
               "mean_return": sum(r["mean_return"] for r in rows) / len(rows), "seconds": time.perf_counter() - t0}
    print(json.dumps(summary))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ablation of a finished `vmerpo bench learning` run: MerPO's meta-test adaptation (theta_j,
init from pi_c and Q_meta, the same RL steps) with another omega, evaluated like the benchmark.
omega = 1 removes the KL to the meta-policy pi_c, and only that.

    python bench/ablation_omega.py --bench results/learning_full --quality expert --omega 1 \
        --out results/ablation_omega1 --json docs/bench/learning_full/ablation_omega1/expert.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/sim.py must not shadow `sim`


def _job(args: tuple) -> dict:
    bench, family, q, seed, task, omega, out, episodes = args
    import dataclasses

    import torch

    torch.set_num_threads(1)
    import learning.merpo_train as mt
    from vmerpo.bench_learning import _eval_one

    base = mt.method_config
    mt.method_config = lambda m, rc: dataclasses.replace(base(m, rc), omega=omega)
    if not (Path(out) / "policy.pt").exists():
        mt.adapt(f"{bench}/runs/{q}_s{seed}", f"{bench}/data/{q}_heldout.zarr", out, overwrite=True, task=task,
                 method="merpo", progress=False, log=lambda m: None)
    return _eval_one((family, out, task, episodes, 1000 + seed))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="output directory of a finished `vmerpo bench learning`")
    p.add_argument("--quality", required=True, choices=["expert", "medium", "mixed"])
    p.add_argument("--omega", type=float, default=1.0, help="behaviour vs meta-policy weight (MerPO: 0.4)")
    p.add_argument("--out", required=True, help="directory for the adapted policies")
    p.add_argument("--json", help="write the per-(task, seed) results here")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    doc = json.loads((Path(a.bench) / "results.json").read_text())
    b = doc["budget_config"]
    jobs = [(a.bench, doc["family"], a.quality, s, t, a.omega, f"{a.out}/{a.quality}_s{s}_t{t}_w{a.omega}", b["eval_episodes"])
            for s in range(b["seeds"]) for t in doc["heldout_tasks"]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
        res = list(pool.map(_job, jobs))
    rows = [{"quality": a.quality, "seed": j[3], "task": j[4], "omega": a.omega, "success_rate": r["success_rate"],
             "mean_return": r["mean_return"]} for j, r in zip(jobs, res, strict=True)]
    summary = {"success_mean": sum(r["success_rate"] for r in rows) / len(rows),
               "mean_return": sum(r["mean_return"] for r in rows) / len(rows), "seconds": time.perf_counter() - t0}
    print(json.dumps(summary))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

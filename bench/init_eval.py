"""The adaptation *starting points* of a finished `vmerpo bench learning` run, evaluated in
MuJoCo with no RL step: MerPO's meta-policy pi_c (with theta_j adapted, as MerPO starts) against
the pooled-pretrained baselines that single-task RAC and BC start from.

    python bench/init_eval.py --bench results/learning_full_push --quality medium \\
        --out results/init_eval_push --json docs/bench/learning_full_push_bench/init_eval_cpu_model.json

Episodes of one task are deterministic, so 2 per (task, seed) unit are enough.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/sim.py must not shadow `sim`

METHODS = ("merpo", "rac", "bc")  # merpo: pi_c; rac, bc: their pooled pretraining


def _job(args: tuple) -> dict:
    bench, family, q, seed, task, method, out, episodes = args
    import torch

    torch.set_num_threads(1)
    from learning.merpo_train import adapt
    from vmerpo.bench_learning import _eval_one

    if not (Path(out) / "policy.pt").exists():
        adapt(f"{bench}/runs/{q}_s{seed}", f"{bench}/data/{q}_heldout.zarr", out, overwrite=True, task=task,
              method=method, steps=0, progress=False, log=lambda m: None)
    result = _eval_one((family, out, task, episodes, 1000 + seed))
    result.update(seed=seed, method=method, start="pi_c" if method == "merpo" else "pooled pretraining")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="output directory of a finished `vmerpo bench learning`")
    p.add_argument("--quality", required=True, choices=["expert", "medium", "mixed"])
    p.add_argument("--episodes", type=int, default=2, help="evaluation episodes per (task, seed) (default 2)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True, help="directory for the 0-step policies")
    p.add_argument("--json", help="write the per-(task, seed) results here")
    args = p.parse_args()
    doc = json.loads((Path(args.bench) / "results.json").read_text())
    family, seeds, tasks = doc["family"], doc["budget_config"]["seeds"], doc["heldout_tasks"]
    out = Path(args.out)
    jobs = [(args.bench, family, args.quality, s, t, m, str(out / f"{m}_s{s}_t{t}"), args.episodes)
            for s in range(seeds) for t in tasks for m in METHODS]
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_job, jobs))
    for m in METHODS:
        rs = [r for r in results if r["method"] == m]
        print(f"{m:6s} success {[r['success_rate'] for r in rs]} return {[round(r['mean_return']) for r in rs]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

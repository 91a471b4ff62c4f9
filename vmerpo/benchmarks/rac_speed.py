"""RAC update cost on one CPU thread (or a GPU) at MerPO's sizes and at the CPU preset's sizes.

    vmerpo bench rac-speed [--device cpu|cuda] [--out results/rac_speed.json]

Prints ms per update (critic + actor + temperature + dual step) for each configuration and
the ratio to the paper's sizes, measured in one run (the machine is noisy: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from learning.merpo_train import preset
from learning.rac import RAC, RACConfig


def time_update(cfg: RACConfig, obs_dim: int = 160, act_dim: int = 4, n: int = 30, device: str = "cpu") -> float:
    rac = RAC(obs_dim, act_dim, cfg, device=device)
    m = 2048
    rac.model_buffer.add({k: v.to(device) for k, v in {
        "obs": torch.randn(m, obs_dim), "act": torch.rand(m, act_dim) * 2 - 1, "rew": torch.randn(m),
        "next_obs": torch.randn(m, obs_dim), "done": torch.zeros(m)}.items()})
    b = cfg.batch_real
    batch = {"obs": torch.randn(b, obs_dim), "act": torch.rand(b, act_dim) * 2 - 1, "rew": torch.randn(b),
             "next_obs": torch.randn(b, obs_dim), "done": torch.zeros(b)}
    batch = {k: v.to(device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        rac.update(batch)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        rac.update(batch)
    sync()
    return (time.perf_counter() - t) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vmerpo bench rac-speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/rac_speed.json", help="JSON output path")
    p.add_argument("--device", default="cpu", help="cpu (one thread) or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    configs = {"paper": preset("paper").merpo.rac, "cpu": preset("cpu").merpo.rac}
    res = {name: time_update(cfg, device=args.device) for name, cfg in configs.items()}
    out = {"device": args.device, "ms_per_update": res, "paper_over_cpu": res["paper"] / res["cpu"]}
    for name, ms in res.items():
        c = configs[name]
        print(f"{name:6s} hidden {c.hidden} batch {c.batch_real}+{c.batch_model} cql actions {c.cql_n_actions}: "
              f"{ms:.1f} ms/update")
    print(f"paper / cpu: {out['paper_over_cpu']:.1f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""RAC update cost: one learner at MerPO's and the `cpu` preset's sizes, and K task learners
updated one after another (the per-task loop) vs together (`learning.batched_rac.BatchedRAC`).

    vmerpo bench rac-speed [--device cpu|cuda] [--out results/rac_speed.json]
    vmerpo bench rac-speed --ks 1,4 --paper-ks 1 --quick        # a minute

Sections, measured in one run (the machine is noisy: compare ratios):

  single    ms per update (critic + actor + temperature + dual step) of one learner on one
            CPU thread (or the GPU), at the paper's and the cpu preset's sizes.
  batched   task-updates per second for K tasks (--ks at the cpu preset's sizes, --paper-ks
            at the paper's), with the default thread count (all cores): the per-task loop
            (K RAC.update calls, as meta-training ran them) vs the batched learner as
            meta-training runs it (one BatchedRAC.update per group of `task_groups`: on a CPU
            as many tasks as keep a layer's critic activations in cache), and the speed-up;
            each pair is measured interleaved, round by round.
  flops     the matmul FLOPs of one update (torch.utils.flop_counter) over its time: effective
            GFLOP/s of both learners, against the matmul peak measured in the same run (a
            [K*256, 128] x [128, 128] product on all threads).
  check     a batched update of 4 tasks equals 4 separate updates (same seeds, same batches):
            the largest parameter difference after 3 updates (must be < 1e-4 at these sizes:
            summation order differs between one long and K short matmuls; the unit test holds
            tiny sizes to 1e-5).

The JSON holds every number, the thread count and the torch version.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from learning.batched_rac import BatchedRAC, stack_batches, task_groups
from learning.merpo_train import preset
from learning.rac import RAC, RACConfig

OBS_DIM, ACT_DIM = 160, 4  # the cpu preset's latent feature size and a 4-channel action
BUFFER = 2048


def _data(k: int, n: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + k)
    d = {"obs": torch.randn(n, OBS_DIM, generator=g), "act": torch.rand(n, ACT_DIM, generator=g) * 2 - 1,
         "rew": torch.randn(n, generator=g), "next_obs": torch.randn(n, OBS_DIM, generator=g),
         "done": torch.zeros(n)}
    return {n_: v.to(device) for n_, v in d.items()}


def _learners(cfg: RACConfig, k: int, device: str) -> list[RAC]:
    racs = [RAC(OBS_DIM, ACT_DIM, cfg, device=device, seed=i) for i in range(k)]
    for i, r in enumerate(racs):
        r.model_buffer.add(_data(500 + i, BUFFER, device))
    return racs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_update(cfg: RACConfig, n: int = 30, device: str = "cpu") -> float:
    """ms per update of one learner."""
    rac = _learners(cfg, 1, device)[0]
    batch = _data(0, cfg.batch_real, device)
    for _ in range(3):
        rac.update(batch)
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        rac.update(batch)
    _sync(device)
    return (time.perf_counter() - t) / n * 1e3


def loop_vs_batched(cfg: RACConfig, k: int, rounds: int, device: str) -> dict[str, Any]:
    """Task-updates per second of the per-task loop and of the batched learner, interleaved."""
    racs = _learners(cfg, k, device)
    twins = _learners(cfg, k, device)
    groups = task_groups(k, cfg, device)  # as meta-training batches them
    batches = [BatchedRAC.from_racs([twins[i] for i in g]) for g in groups]
    reals = [_data(i, cfg.batch_real, device) for i in range(k)]
    stacked = [stack_batches([reals[i] for i in g]) for g in groups]

    def batched_update() -> None:
        for b, x in zip(batches, stacked, strict=True):
            b.update(x)

    for _ in range(2):  # warm-up
        for r, b in zip(racs, reals, strict=True):
            r.update(b)
        batched_update()
    t_loop = t_batched = 0.0
    for _ in range(rounds):
        _sync(device)
        t = time.perf_counter()
        for r, b in zip(racs, reals, strict=True):
            r.update(b)
        _sync(device)
        t_loop += time.perf_counter() - t
        t = time.perf_counter()
        batched_update()
        _sync(device)
        t_batched += time.perf_counter() - t
    loop = k * rounds / t_loop
    fast = k * rounds / t_batched
    return {"loop_task_updates_per_s": loop, "batched_task_updates_per_s": fast, "speedup": fast / loop,
            "groups": [len(g) for g in groups],
            "loop_ms_per_round": t_loop / rounds * 1e3, "batched_ms_per_round": t_batched / rounds * 1e3}


def update_flops(cfg: RACConfig, k: int, device: str) -> tuple[float, float]:
    """Matmul FLOPs of one update of K tasks: (per-task loop, batched)."""
    from torch.utils.flop_counter import FlopCounterMode

    racs = _learners(cfg, k, device)
    batched = BatchedRAC.from_racs(_learners(cfg, k, device))
    reals = [_data(i, cfg.batch_real, device) for i in range(k)]
    with FlopCounterMode(display=False) as fc:
        for r, b in zip(racs, reals, strict=True):
            r.update(b)
    loop = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        batched.update(stack_batches(reals))
    return float(loop), float(fc.get_total_flops())


def matmul_peak(rows: int, device: str, seconds: float = 1.0) -> float:
    """GFLOP/s of a [rows, 128] x [128, 128] matmul on all threads."""
    a, b = torch.randn(rows, 128, device=device), torch.randn(128, 128, device=device)
    for _ in range(5):
        a @ b
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        n += 10
    _sync(device)
    return 2 * rows * 128 * 128 * n / (time.perf_counter() - t0) / 1e9


def equivalence(cfg: RACConfig, k: int, device: str) -> float:
    racs = _learners(cfg, k, device)
    twins = _learners(cfg, k, device)
    batched = BatchedRAC.from_racs(twins)
    for step in range(3):
        reals = [_data(100 * step + i, cfg.batch_real, device) for i in range(k)]
        for r, b in zip(racs, reals, strict=True):
            r.update(b)
        batched.update(stack_batches(reals))
    batched.write_back(twins)
    diff = 0.0
    for ra, rb in zip(racs, twins, strict=True):
        for m1, m2 in ((ra.actor, rb.actor), (ra.critic, rb.critic)):
            for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
                diff = max(diff, float((p - q).detach().abs().max()))
    return diff


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vmerpo bench rac-speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/rac_speed.json", help="JSON output path")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--ks", default="1,4,16,40", help="task counts at the cpu preset's sizes")
    p.add_argument("--paper-ks", default="1,4,16", help="task counts at the paper's sizes ('' skips them)")
    p.add_argument("--rounds", type=int, default=0, help="timed rounds per K (0: 8 cpu sizes, 3 paper)")
    p.add_argument("--quick", action="store_true", help="fewer rounds and no single-thread section")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("vmerpo bench rac-speed: --device cuda but torch sees no CUDA device")
    threads = torch.get_num_threads()
    configs = {"paper": preset("paper").merpo.rac, "cpu": preset("cpu").merpo.rac}
    out: dict[str, Any] = {"device": args.device, "threads": threads, "torch": torch.__version__,
                           "machine": platform.machine(), "processor": platform.processor()}

    if not args.quick:
        torch.set_num_threads(1)
        res = {name: time_update(cfg, device=args.device) for name, cfg in configs.items()}
        torch.set_num_threads(threads)
        out["ms_per_update"] = res  # one thread (the name kept from the first version of this benchmark)
        out["paper_over_cpu"] = res["paper"] / res["cpu"]
        for name, ms in res.items():
            c = configs[name]
            print(f"single {name:5s} hidden {c.hidden} batch {c.batch_real}+{c.batch_model} "
                  f"cql actions {c.cql_n_actions}: {ms:.1f} ms/update (1 thread)")
        print(f"paper / cpu: {out['paper_over_cpu']:.1f}x")

    out["batched"] = {}
    print(f"\nper-task loop vs batched learner, {threads} threads, task-updates/s:")
    print(f"{'size':6s} {'K':>3s} {'loop':>8s} {'batched':>8s} {'speed-up':>8s}")
    for name, ks in (("cpu", _ints(args.ks)), ("paper", _ints(args.paper_ks))):
        rounds = args.rounds or ((8 if name == "cpu" else 3) if not args.quick else 2)
        for k in ks:
            r = loop_vs_batched(configs[name], k, rounds, args.device)
            out["batched"][f"{name}/K={k}"] = {"size": name, "K": k, "rounds": rounds, **r}
            print(f"{name:6s} {k:3d} {r['loop_task_updates_per_s']:8.1f} {r['batched_task_updates_per_s']:8.1f} "
                  f"{r['speedup']:7.2f}x  groups {r['groups']}", flush=True)

    peak = matmul_peak(4 * 256, args.device)
    out["flops"] = {"matmul_peak_gflops": peak, "by_k": {}}
    for k in [k for k in _ints(args.ks) if k in (4, 16)] or _ints(args.ks)[:1]:
        f_loop, f_batched = update_flops(configs["cpu"], k, args.device)
        r = out["batched"][f"cpu/K={k}"]
        g_loop = f_loop * r["loop_task_updates_per_s"] / k / 1e9
        g_batched = f_batched * r["batched_task_updates_per_s"] / k / 1e9
        out["flops"]["by_k"][str(k)] = {"gflop_per_update_loop": f_loop / k / 1e9,
                                        "gflop_per_update_batched": f_batched / k / 1e9,
                                        "loop_gflops": g_loop, "batched_gflops": g_batched}
        print(f"cpu sizes K={k}: {f_batched / k / 1e9:.2f} GFLOP per task-update; loop {g_loop:.1f} GFLOP/s, "
              f"batched {g_batched:.1f} GFLOP/s; matmul peak {peak:.1f} GFLOP/s")

    out["check_max_abs_diff"] = diff = equivalence(configs["cpu"], 4, args.device)
    ok = diff < 1e-4
    print(f"batched update of 4 tasks vs 4 separate updates, 3 steps: max |diff| {diff:.2e} "
          f"({'ok' if ok else 'FAILED: > 1e-4'})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

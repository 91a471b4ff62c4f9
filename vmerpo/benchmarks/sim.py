"""Collection throughput benchmark: MuJoCo frames/s with 1 and 2 workers, same run, same settings.

    vmerpo bench sim [--env push-v3] [--episodes 16] [--image-size 64] --out results/bench_sim.json

Targets (2-core CPU): at least 60 frames/s per worker, and 2 workers at least 1.7x one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from typing import Any


def bench_collect(
    family: str = "push-v3",
    workers: tuple[int, ...] = (1, 2),
    episodes: int = 8,
    image_size: int = 64,
    quality: str = "medium",
    seed: int = 0,
) -> dict[str, Any]:
    """Collect `episodes` episodes (150 frames each) per worker count into a temporary store.

    `frames_per_s` counts the whole call (worker start-up included); `frames_per_s_steady`
    starts when every worker has built its environment, which is what a long collection
    sees.
    """
    from sim.collect import CollectConfig, collect
    from sim.envs import task_set

    tasks = task_set(family).select("train")[: max(1, episodes // 2)]
    per_task = max(1, episodes // len(tasks))
    runs = []
    load_before = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="vmerpo-bench-sim-")
    try:
        for n in workers:
            path = os.path.join(tmp, f"w{n}.zarr")
            cfg = CollectConfig(family=family, out=path, tasks=tasks, episodes_per_task=per_task,
                                quality=quality, image_size=image_size, seed=seed, workers=n)
            s = collect(cfg, progress=False, log=lambda msg: None)
            runs.append({"workers": n, "frames": s["frames_written"], "wall_s": s["wall_s"],
                         "startup_s": s["startup_s"], "frames_per_s": s["frames_per_s"],
                         "frames_per_s_steady": s["frames_per_s_steady"],
                         "frames_per_s_per_worker": round(s["frames_per_s_steady"] / n, 2),
                         "worker_cpu_ms_per_frame": s["worker_cpu_ms_per_frame"],
                         "writer_cpu_ms_per_frame": s["writer_cpu_ms_per_frame"],
                         "load_avg_1m_after": s["load_avg_1m"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by = {r["workers"]: r for r in runs}
    out: dict[str, Any] = {
        "benchmark": "sim.collect", "family": family, "image_size": image_size,
        "quality": quality, "episodes": len(tasks) * per_task, "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "mujoco_gl": os.environ.get("MUJOCO_GL")},
        "targets": {"frames_per_s_per_worker": 60, "speedup_2_vs_1": 1.7},
    }
    # Other processes share these cores: the load average says how much of them we had.
    out["load_avg_1m_before"] = round(load_before, 2)
    if 1 in by and 2 in by:
        out["speedup_2_vs_1"] = round(by[2]["frames_per_s_steady"] / by[1]["frames_per_s_steady"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vmerpo bench sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench_sim.json", help="JSON output path")
    p.add_argument("--env", default="push-v3", help="task family collected")
    p.add_argument("--episodes", type=int, default=16, help="episodes per worker count")
    p.add_argument("--image-size", type=int, default=64, help="rendered image side in pixels")
    args = p.parse_args(argv)
    result = bench_collect(args.env, (1, 2), args.episodes, args.image_size)
    for r in result["runs"]:
        print(f"{r['workers']} worker(s): {r['frames_per_s_steady']:.1f} frames/s steady "
              f"({r['frames_per_s_per_worker']:.1f} per worker; {r['frames_per_s']:.1f} "
              f"including {r['startup_s']:.1f} s start-up; worker CPU {r['worker_cpu_ms_per_frame']} "
              f"ms/frame, writer CPU {r['writer_cpu_ms_per_frame']} ms/frame, load "
              f"{r['load_avg_1m_after']})")
    if "speedup_2_vs_1" in result:
        print(f"2 vs 1 workers: {result['speedup_2_vs_1']:.2f}x (target 1.7x)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0

"""Collection frames/s with 1 and 2 workers at 64x64: `python bench/sim.py --out results/bench_sim.json`."""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/bench_sim.json")
    p.add_argument("--env", default="push-v3")
    p.add_argument("--episodes", type=int, default=16, help="episodes per worker count")
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    from sim.benchmarks import bench_collect

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


if __name__ == "__main__":
    sys.exit(main())
